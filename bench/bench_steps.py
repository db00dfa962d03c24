#!/usr/bin/env python
"""Benchmark django-durable's step hot path: throughput, SQL per step, wake-up latency.

Run from the repository root:

    python bench/bench_steps.py [--executions N] [--steps K] [--workers W]
                                [--concurrency C] [--mode inprocess|workers|both]

DATABASE_URL picks the database server: unset, a fresh SQLite file under /tmp; a
postgres:// URL, a `durable_bench` database created (and dropped) on that server. See
bench/README.md for what each figure means.
"""

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/; import `bench` and `example_project` from the root.
sys.path[0] = str(ROOT)

from bench.sqlcount import SQLCounter, Tally  # noqa: E402

SETTINGS = "bench.bench_settings"
BENCH_DB = "durable_bench"
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "psql"}
THROUGHPUT_POLL_SECONDS = 0.01
LATENCY_POLL_SECONDS = 0.001


def keep_or_remove(logdir: Path, keep: bool) -> None:
    """The worker logs: shown with --keep, else removed."""
    if keep:
        print(f"Worker logs: {logdir}")
    else:
        shutil.rmtree(logdir)


def poll_until_completed(execution_id, began: float, workers) -> int:
    """Poll an execution's status every LATENCY_POLL_SECONDS until it is completed;
    returns the number of polls. A failure or 30 s without completing is a BenchError."""
    from django_durable.models import WorkflowExecution

    polls = 0
    while True:
        status = WorkflowExecution.objects.values_list("status", flat=True).get(id=execution_id)
        polls += 1
        if status == "completed":
            return polls
        if status not in ("pending", "running"):
            raise BenchError(f"Execution {execution_id} is {status}.{workers.logs()}")
        if time.perf_counter() - began > 30:
            workers.check_alive()
            raise BenchError(f"Execution {execution_id} took over 30 s.{workers.logs()}")
        time.sleep(LATENCY_POLL_SECONDS)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", "-n", type=int, default=200, metavar="N")
    parser.add_argument("--steps", "-k", type=int, default=5, metavar="K")
    parser.add_argument(
        "--workers",
        "-w",
        type=int,
        metavar="W",
        help="worker processes (default 2 on PostgreSQL; SQLite allows only 1)",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=4,
        metavar="C",
        help="threads per worker (durable_worker --concurrency; default 4)",
    )
    parser.add_argument("--mode", choices=("inprocess", "workers", "both"), default="both")
    parser.add_argument("--latency-samples", type=int, default=20, metavar="S")
    parser.add_argument(
        "--sqlite-wal",
        action="store_true",
        help="put the SQLite file in WAL mode (default: rollback journal)",
    )
    parser.add_argument(
        "--conn-max-age",
        metavar="SECONDS|none",
        help="set DATABASES CONN_MAX_AGE (default: Django's 0)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the bench database and the worker logs afterwards"
    )
    args = parser.parse_args()
    if min(args.executions, args.steps, args.concurrency, args.latency_samples) < 1:
        parser.error("--executions, --steps, --concurrency and --latency-samples must be >= 1")
    return args


# -- the database ----------------------------------------------------------------------


class BenchDatabase:
    """A database of the bench's own: a fresh SQLite file, or `durable_bench` on PG."""

    def __init__(self, url: str | None, keep: bool):
        self.keep = keep
        self.admin = None  # PostgreSQL: a connection to the server's given database
        self.backend_pid = None
        url = url or f"sqlite:////tmp/durable_bench_{os.getpid()}.sqlite3"
        parts = urlsplit(url)
        if parts.scheme in POSTGRES_SCHEMES:
            self.vendor = "postgresql"
            self.admin_url = url
            self.url = parts._replace(path=f"/{BENCH_DB}").geturl()
        elif parts.scheme == "sqlite":
            self.vendor = "sqlite"
            path = parts.path[1:]  # sqlite:////abs/path or sqlite:///relative/path
            if not path or ":memory:" in url:
                sys.exit("The bench needs a SQLite file (worker processes share it).")
            self.path = Path(path).resolve()
            if self.path.exists():
                sys.exit(f"{self.path} exists; the bench creates (and deletes) its own file.")
            self.url = f"sqlite:///{self.path}"
        else:
            sys.exit(f"Unsupported DATABASE_URL scheme {parts.scheme!r}: use sqlite or postgres.")

    def create(self) -> None:
        if self.vendor == "postgresql":
            import psycopg

            self.admin = psycopg.connect(self.admin_url, autocommit=True)
            self.admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            self.admin.execute(f"CREATE DATABASE {BENCH_DB}")

    def describe(self) -> str:
        if self.vendor == "postgresql":
            version = self.admin.execute("SHOW server_version").fetchone()[0]
            where = urlsplit(self.admin_url)
            return f"PostgreSQL {version.split()[0]} ({BENCH_DB} on {where.hostname}:{where.port})"
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} ({self.path})"

    # PostgreSQL's count of committed transactions, the authoritative commit count.

    @property
    def counts_server_transactions(self) -> bool:
        return self.vendor == "postgresql" and self.admin.info.server_version >= 150000

    def server_transactions(self) -> int | None:
        """pg_stat_database.xact_commit of the bench database, after flushing this
        process's pending statistics (which costs one transaction, included)."""
        if not self.counts_server_transactions:
            return None
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
        row = self.admin.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [BENCH_DB]
        ).fetchone()
        return row[0]

    def wait_for_other_backends_to_exit(self, timeout: float = 10.0) -> None:
        """Worker backends flush their statistics when they exit; wait for that."""
        if self.vendor != "postgresql":
            return
        if self.backend_pid is None:
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.backend_pid = cursor.fetchone()[0]
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            others = self.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                [BENCH_DB, self.backend_pid],
            ).fetchone()[0]
            if not others:
                return
            time.sleep(0.02)

    def drop(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.keep:
            print(f"Kept the bench database: {self.url}")
            return
        if self.vendor == "postgresql":
            if self.admin is not None:
                self.admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
                self.admin.close()
        else:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def setup_django(database: BenchDatabase, args: argparse.Namespace) -> None:
    os.environ["DATABASE_URL"] = database.url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["DURABLE_BENCH_STEPS"] = str(args.steps)
    os.environ.pop("DURABLE_BENCH_COUNT_FILE", None)
    if args.sqlite_wal:
        os.environ["DURABLE_BENCH_SQLITE_WAL"] = "1"
    if args.conn_max_age is not None:
        os.environ["DURABLE_BENCH_CONN_MAX_AGE"] = args.conn_max_age
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# -- in-process: the engine via testing.run_until_idle, every statement counted --------


@dataclass
class Run:
    """N executions of one workflow, started then run to completion in this process."""

    steps: int
    executions: int
    start_seconds: float
    run_seconds: float
    start: Tally
    run: Tally
    server_transactions: int | None = None  # PG xact_commit during the run

    @property
    def attempts(self) -> int:
        return self.steps * self.executions


def run_inprocess(database: BenchDatabase, n: int, k: int) -> dict[int, Run]:
    from django.db import connection

    from django_durable import starting, testing

    runs = {}
    for name, steps in (("bench.one", 1), ("bench.chain", k)):
        if steps in runs:
            continue
        start_counter = SQLCounter()
        began = time.perf_counter()
        with start_counter.counting(connection):
            for _ in range(n):
                starting.start(name, {})
        start_seconds = time.perf_counter() - began

        before = database.server_transactions()
        run_counter = SQLCounter()
        began = time.perf_counter()
        with run_counter.counting(connection):
            attempts = testing.run_until_idle(max_steps=2 * n * steps + 10)
        run_seconds = time.perf_counter() - began
        after = database.server_transactions()

        check_completed(name, n, steps)
        if attempts != n * steps:
            raise BenchError(f"{name}: ran {attempts} attempts, expected {n * steps}.")
        runs[steps] = Run(
            steps=steps,
            executions=n,
            start_seconds=start_seconds,
            run_seconds=run_seconds,
            start=start_counter.tally,
            run=run_counter.tally,
            server_transactions=None if before is None else after - before - 1,
        )
    return runs


class BenchError(Exception):
    pass


def check_completed(name: str, n: int, steps: int, since=None) -> None:
    """Every execution completed, and each ran each of its steps exactly once."""
    from django_durable.models import StepExecution, WorkflowExecution

    executions = WorkflowExecution.objects.filter(workflow_name=name)
    attempts = StepExecution.objects.filter(execution__workflow_name=name)
    if since is not None:
        executions = executions.filter(created_at__gte=since)
        attempts = attempts.filter(execution__created_at__gte=since)
    statuses = status_counts(executions)
    if statuses != {"completed": n}:
        raise BenchError(f"{name}: expected {n} completed executions, found {statuses}.")
    counts = {ctx.get("n") for ctx in executions.values_list("context", flat=True)}
    if counts != {steps}:
        raise BenchError(f"{name}: step counts in the contexts are {counts}, not {{{steps}}}.")
    step_statuses = status_counts(attempts)
    if step_statuses != {"completed": n * steps}:
        raise BenchError(f"{name}: step attempts are {step_statuses}, not {n * steps} completed.")


def status_counts(queryset) -> dict[str, int]:
    from django.db.models import Count

    rows = queryset.order_by().values_list("status").annotate(count=Count("id"))
    return dict(rows)


# -- workers: durable_worker processes ----------------------------------------------------


@dataclass
class WorkerRun:
    workers: int
    concurrency: int
    executions: int
    steps: int
    seconds: float = 0.0  # commit of the N starts -> the bench sees all completed
    busy_seconds: float = 0.0  # first claim -> last completion, from the rows' timestamps
    polls: int = 0
    tally: Tally | None = None  # all SQL of the worker processes, start to exit
    server_transactions: int | None = None  # PG xact_commit of those processes
    latencies: list[float] = field(default_factory=list)
    pickups: list[float] = field(default_factory=list)
    in_runs: list[float] = field(default_factory=list)
    latency_poll_seconds: float = 0.0

    @property
    def attempts(self) -> int:
        return self.executions * self.steps


class Workers:
    """W `manage.py durable_worker` processes, stopped with SIGTERM."""

    def __init__(self, tag: str, count: int, concurrency: int, logdir: Path, counts=None):
        self.tag = tag
        self.logdir = logdir
        self.processes = []
        for index in range(count):
            env = dict(os.environ)
            if counts is not None:
                env["DURABLE_BENCH_COUNT_FILE"] = str(counts / f"{tag}-{index}-{{pid}}.json")
            log = open(logdir / f"worker-{tag}-{index}.log", "w")
            command = [
                sys.executable,
                "manage.py",
                "durable_worker",
                "--settings",
                SETTINGS,
                "--concurrency",
                str(concurrency),
                "--grace",
                "10",
                "--name",
                f"bench-{tag}-{index}",
            ]
            self.processes.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the bench only; it stops them
                )
            )
            log.close()

    def wait_until_registered(self, timeout: float = 60.0) -> None:
        from django_durable.models import Worker

        give_up = time.monotonic() + timeout
        while Worker.objects.filter(name__startswith=f"bench-{self.tag}-").count() < len(
            self.processes
        ):
            self.check_alive()
            if time.monotonic() > give_up:
                raise BenchError(f"Workers did not start within {timeout:.0f} s.{self.logs()}")
            time.sleep(0.02)

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise BenchError(f"A worker exited with {process.returncode}.{self.logs()}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        text = []
        for path in sorted(self.logdir.glob(f"worker-{self.tag}-*.log")):
            text.append(f"\n--- {path}\n{path.read_text()[-3000:]}")
        return "".join(text)


def run_workers(database, args, logdir: Path) -> WorkerRun:
    result = WorkerRun(args.workers, args.concurrency, args.executions, args.steps)
    measure_throughput(database, args, logdir, result)
    measure_latency(args, logdir, result)
    return result


def measure_throughput(database, args, logdir: Path, result: WorkerRun) -> None:
    """N executions made runnable at once (one commit), W fresh workers running them.

    The worker processes count their own SQL (bench/sqlcount.py) from start to exit; on
    PostgreSQL the server's transaction count is taken over the same span.
    """
    from django.db import connection, transaction
    from django.db.models import Max, Min

    from django_durable import clock, executions, starting
    from django_durable.models import WorkflowExecution

    counts = logdir / "counts"
    counts.mkdir()
    database.wait_for_other_backends_to_exit()  # also learns this process's backend pid
    before = database.server_transactions()
    own = SQLCounter()  # this process's transactions inside the server-side window
    with own.counting(connection):
        workers = Workers("tp", args.workers, args.concurrency, logdir, counts=counts)
        try:
            workers.wait_until_registered()
            since = clock.now()
            with transaction.atomic():
                for _ in range(args.executions):
                    starting.start("bench.chain", {})
            began = time.perf_counter()
            executions = WorkflowExecution.objects.filter(
                workflow_name="bench.chain", created_at__gte=since
            )
            while True:
                statuses = status_counts(executions)
                result.polls += 1
                if statuses.get("completed", 0) == args.executions:
                    break
                if set(statuses) - {"pending", "running", "completed"}:
                    raise BenchError(f"Executions ended badly: {statuses}.{workers.logs()}")
                workers.check_alive()
                if time.perf_counter() - began > 60 + args.executions * args.steps / 10:
                    raise BenchError(f"Timed out; executions are {statuses}.{workers.logs()}")
                time.sleep(THROUGHPUT_POLL_SECONDS)
            result.seconds = time.perf_counter() - began
            window = executions.aggregate(first=Min("started_at"), last=Max("completed_at"))
            result.busy_seconds = (window["last"] - window["first"]).total_seconds()
        finally:
            workers.stop()
    database.wait_for_other_backends_to_exit()
    after = database.server_transactions()
    check_completed("bench.chain", args.executions, args.steps, since=since)
    if before is not None:
        result.server_transactions = after - before - 1 - own.tally.transactions
    tallies = [Tally.from_json(json.loads(p.read_text())) for p in counts.glob("*.json")]
    if len(tallies) == args.workers:
        result.tally = sum(tallies, Tally())


def measure_latency(args, logdir: Path, result: WorkerRun) -> None:
    """Start->complete of single executions started while W fresh workers are idle."""
    from django_durable import conf, starting
    from django_durable.models import WorkflowExecution

    workers = Workers("lat", args.workers, args.concurrency, logdir)
    try:
        workers.wait_until_registered()
        time.sleep(1.0)  # let them settle: listener connected, dispatcher waiting
        # A worker's poll cycle restarts when it finishes an execution; a pause drawn
        # uniformly over one poll interval makes each start arrive at a random phase.
        poll_interval = conf.queue_options("default")["poll_interval"]
        polls, polling = 0, 0.0
        for _ in range(args.latency_samples):
            time.sleep(random.uniform(0.05, 0.05 + poll_interval))
            began = time.perf_counter()
            execution_id = starting.start("bench.chain", {})
            polls += poll_until_completed(execution_id, began, workers)
            ended = time.perf_counter()
            result.latencies.append(ended - began)
            polling += ended - began
            execution = WorkflowExecution.objects.get(id=execution_id)
            result.pickups.append((execution.started_at - execution.created_at).total_seconds())
            result.in_runs.append((execution.completed_at - execution.started_at).total_seconds())
        result.latency_poll_seconds = polling / polls
    finally:
        workers.stop()


# -- report ------------------------------------------------------------------------------


def per(value: float, count: int) -> float:
    return value / count if count else math.nan


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"\n{title}")
    for label, value, note in rows:
        print(f"  {label:<{widths[0]}}  {value:>{widths[1]}}  {note}".rstrip())


def report_inprocess(runs: dict[int, Run], k: int) -> None:
    n = runs[1].executions
    chain, one = runs[k], runs[1]
    stmts = chain.run.statement_count
    rows = [
        (
            "steps/s",
            f"{chain.attempts / chain.run_seconds:,.0f}",
            f"{chain.attempts} attempts in {chain.run_seconds:.2f} s, 1 thread, start() excluded",
        ),
        (
            "start(): statements / execution",
            f"{per(chain.start.statement_count, n):.2f}",
            f"{1000 * chain.start_seconds / n:.2f} ms each",
        ),
        (
            "SQL statements / step, overall",
            f"{per(stmts, chain.attempts):.2f}",
            "run only: claims, timers, steps",
        ),
        (
            "SQL statements / step, with start()",
            f"{per(stmts + chain.start.statement_count, chain.attempts):.2f}",
            "",
        ),
        (
            "commits / step, overall",
            f"{per(chain.run.writing_transactions, chain.attempts):.2f}",
            "transactions that wrote",
        ),
        (
            "transactions / step, overall",
            f"{per(chain.run.transactions, chain.attempts):.2f}",
            "read-only autocommit SELECTs included",
        ),
    ]
    if chain.server_transactions is not None:
        rows.append(
            (
                "PG xact_commit / step, overall",
                f"{per(chain.server_transactions, chain.attempts):.2f}",
                "server-side count of the same",
            )
        )
    if k > 1:
        extra = n * (k - 1)
        rows += [
            (
                "SQL statements / chained step",
                f"{(stmts - one.run.statement_count) / extra:.2f}",
                f"marginal: ({k}-step run - 1-step run) / (N*{k - 1})",
            ),
            (
                "commits / chained step",
                f"{(chain.run.writing_transactions - one.run.writing_transactions) / extra:.2f}",
                "marginal",
            ),
            (
                "transactions / chained step",
                f"{(chain.run.transactions - one.run.transactions) / extra:.2f}",
                "marginal",
            ),
        ]
        if chain.server_transactions is not None:
            rows.append(
                (
                    "PG xact_commit / chained step",
                    f"{(chain.server_transactions - one.server_transactions) / extra:.2f}",
                    "marginal, server-side",
                )
            )
    print_table(f"In-process (engine via testing.run_until_idle), N={n}, K={k}", rows)


def report_kinds(runs: dict[int, Run] | None, workers: WorkerRun | None, k: int) -> None:
    """Statements per execution by kind: where the statements go."""
    columns, tallies = [], []
    if runs is not None:
        columns.append("1-step")
        tallies.append((runs[1].run + runs[1].start, runs[1].executions))
        if k > 1:
            columns.append(f"{k}-step")
            tallies.append((runs[k].run + runs[k].start, runs[k].executions))
    if workers is not None and workers.tally is not None:
        columns.append("workers")
        tallies.append((workers.tally, workers.executions))
    if not columns:
        return
    kinds = [tally.by_kind() for tally, _ in tallies]
    names = sorted(set().union(*kinds), key=lambda name: -max(c[name] for c in kinds))
    width = max(len(name) for name in names + ["total"])
    header = "".join(f"{column:>10}" for column in columns)
    if runs is not None and k > 1:
        header += f"{'marginal':>10}"
    print("\nSQL statements per execution, by kind (in-process counts include start())")
    print(f"  {'statement':<{width}}{header}")
    for name in [*names, "total"]:
        values = [
            (sum(c.values()) if name == "total" else c[name]) / count
            for c, (_, count) in zip(kinds, tallies, strict=True)
        ]
        line = "".join(f"{value:>10.2f}" for value in values)
        if runs is not None and k > 1:
            line += f"{(values[1] - values[0]) / (k - 1):>10.2f}"
        print(f"  {name:<{width}}{line}")


def report_workers(result: WorkerRun, vendor: str) -> None:
    from django.conf import settings

    rows = [
        (
            "steps/s",
            f"{result.attempts / result.busy_seconds:,.0f}",
            f"{result.attempts} attempts in {result.busy_seconds:.2f} s, first claim -> last "
            "completion (rows' timestamps)",
        ),
        (
            "steps/s, from start",
            f"{result.attempts / result.seconds:,.0f}",
            f"{result.seconds:.2f} s from committing the N starts (one transaction) until the "
            f"bench saw all completed (checked every {THROUGHPUT_POLL_SECONDS * 1000:.0f} ms): "
            "adds the idle workers' wake-up",
        ),
    ]
    if result.tally is not None:
        tally = result.tally
        rows += [
            (
                "SQL statements / step, overall",
                f"{per(tally.statement_count, result.attempts):.2f}",
                "whole worker lifetime: start-up, claims, timers, idle polls, shutdown",
            ),
            (
                "commits / step, overall",
                f"{per(tally.writing_transactions, result.attempts):.2f}",
                "transactions that wrote",
            ),
            (
                "transactions / step, overall",
                f"{per(tally.transactions, result.attempts):.2f}",
                "read-only autocommit SELECTs included",
            ),
        ]
        rows.append(
            (
                "connections opened / execution",
                f"{per(tally.connections, result.executions):.2f}",
                f"CONN_MAX_AGE={settings.DATABASES['default']['CONN_MAX_AGE']}",
            )
        )
        if tally.rollbacks:
            rows.append(("rollbacks", f"{tally.rollbacks}", "(lost leases or errors)"))
    if result.server_transactions is not None:
        rows.append(
            (
                "PG xact_commit / step, overall",
                f"{per(result.server_transactions, result.attempts):.2f}",
                "server-side count for the worker processes",
            )
        )
    if result.latencies:
        ms = [1000 * value for value in result.latencies]
        wake = "LISTEN/NOTIFY wake-up" if vendor == "postgresql" else "poll_interval wake-up"
        rows += [
            (
                "latency start->complete, median",
                f"{statistics.median(ms):.1f} ms",
                f"{len(ms)} single executions, workers idle; {wake}",
            ),
            (
                "latency start->complete, p95",
                f"{p95(ms):.1f} ms",
                f"includes the bench's poll granularity "
                f"(~{1000 * result.latency_poll_seconds:.2f} ms per poll)",
            ),
            (
                "  of which pickup, median",
                f"{1000 * statistics.median(result.pickups):.1f} ms",
                "created_at -> started_at",
            ),
            (
                "  of which run, median",
                f"{1000 * statistics.median(result.in_runs):.1f} ms",
                f"started_at -> completed_at ({result.steps} steps)",
            ),
        ]
    print_table(
        f"Workers: {result.workers} x durable_worker --concurrency {result.concurrency}, "
        f"N={result.executions}, K={result.steps}",
        rows,
    )


def main() -> int:
    args = parse_args()
    # Stopped with SIGTERM, still stop the workers and drop the database (finally blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    database = BenchDatabase(os.environ.get("DATABASE_URL"), args.keep)
    if args.workers is None:
        args.workers = 1 if database.vendor == "sqlite" else 2
    if database.vendor == "sqlite" and args.workers != 1 and args.mode != "inprocess":
        sys.exit("SQLite supports one worker process: use --workers 1 (or PostgreSQL).")
    if args.workers < 1:
        sys.exit("--workers must be at least 1.")
    logdir = Path(tempfile.mkdtemp(prefix="durable_bench_"))
    database.create()
    runs = workers = None
    try:
        setup_django(database, args)
        print(
            f"django-durable step benchmark, {date.today()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {database.describe()}"
            + (", WAL" if args.sqlite_wal and database.vendor == "sqlite" else "")
        )
        if args.mode in ("inprocess", "both"):
            runs = run_inprocess(database, args.executions, args.steps)
            report_inprocess(runs, args.steps)
        if args.mode in ("workers", "both"):
            workers = run_workers(database, args, logdir)
            report_workers(workers, database.vendor)
        report_kinds(runs, workers, args.steps)
    except BenchError as exc:
        print(f"\nBench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        database.drop()
        keep_or_remove(logdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
