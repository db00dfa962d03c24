#!/usr/bin/env python
"""Benchmark django-durable's control flow: a parallel block's latency and throughput,
and what a 10,000-item foreach costs (time, rows, bytes, WAL).

Run from the repository root, PostgreSQL only:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/bench_control.py

DATABASE_URL names the server; its database is used only to create (and drop) a
database of the bench's own, `durable_control`. Every figure is taken with real
`durable_worker` processes. See bench/README.md ("Control-flow benchmark").
"""

import argparse
import json
import os
import platform
import random
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/; import `bench` and `example_project` from the root.
sys.path[0] = str(ROOT)

from bench.bench_steps import (  # noqa: E402
    POSTGRES_SCHEMES,
    SETTINGS,
    BenchError,
    Workers,
    keep_or_remove,
    p95,
    print_table,
    status_counts,
)
from bench.sqlcount import Tally  # noqa: E402

CONTROL_DB = "durable_control"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PARALLEL = "bench.parallel10"
BRANCHES = 10  # bench/workflows.py: BRANCHES
SPACED = (0.06, 0.25)  # seconds between latency samples: past claims.COALESCE_SECONDS
WARMUP = 3  # latency samples not counted
THROUGHPUT_POLL_SECONDS = 0.01
FOREACH_POLL_SECONDS = 0.02  # foreach: status check + pg_stat_activity sample
TENTHS = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", "-w", type=int, default=2, metavar="W", help="default 2")
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=8,
        metavar="C",
        help="threads per worker in the foreach runs (default 8)",
    )
    parser.add_argument(
        "--parallel-concurrency",
        type=int,
        default=4,
        metavar="C",
        help="threads per worker in the parallel runs (default 4)",
    )
    parser.add_argument(
        "--latency-samples", type=int, default=50, metavar="S", help="parallel (default 50)"
    )
    parser.add_argument(
        "--parallel-workflows",
        type=int,
        default=200,
        metavar="N",
        help="parallel workflows started at once for the throughput (default 200)",
    )
    parser.add_argument("--items", "-n", type=int, default=10_000, metavar="N", help="foreach")
    parser.add_argument(
        "--foreach-concurrency",
        default="50",
        metavar="F[,F...]",
        help="the foreach's concurrency, one run each (default 50; e.g. 50,10)",
    )
    parser.add_argument(
        "--big-context",
        type=int,
        default=100_000,
        metavar="BYTES",
        help="one more foreach run (first concurrency) with a block context this large "
        "(default 100000; 0 skips it)",
    )
    parser.add_argument(
        "--part", choices=("parallel", "foreach", "all"), default="all", help="default all"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the bench database and the worker logs"
    )
    args = parser.parse_args()
    try:
        args.foreach_concurrencies = [int(c) for c in args.foreach_concurrency.split(",") if c]
    except ValueError:
        parser.error("--foreach-concurrency takes integers separated by commas, e.g. 50,10")
    numbers = [
        args.workers,
        args.concurrency,
        args.parallel_concurrency,
        args.latency_samples,
        args.parallel_workflows,
        args.items,
        *args.foreach_concurrencies,
    ]
    if not args.foreach_concurrencies or min(numbers) < 1 or args.big_context < 0:
        parser.error("counts and concurrencies must be >= 1, --big-context >= 0")
    return args


# -- the database ----------------------------------------------------------------------


class ControlDatabase:
    """`durable_control` on the DATABASE_URL server, and a probe connection to it that
    reads sizes, WAL positions and pg_stat_activity outside Django."""

    def __init__(self, url: str, keep: bool):
        parts = urlsplit(url)
        if parts.scheme not in POSTGRES_SCHEMES:
            sys.exit("bench_control.py needs PostgreSQL: DATABASE_URL=postgres://...")
        if parts.path.lstrip("/") == CONTROL_DB:
            sys.exit(f"DATABASE_URL must name another database than {CONTROL_DB}.")
        self.admin_url = url
        self.url = parts._replace(path=f"/{CONTROL_DB}").geturl()
        self.keep = keep
        self.admin = None
        self.probe = None
        self.oid = None
        self.walinspect = False
        self.slot = None

    def create(self) -> None:
        import psycopg

        self.admin = psycopg.connect(self.admin_url, autocommit=True)
        self.admin.execute(f"DROP DATABASE IF EXISTS {CONTROL_DB} WITH (FORCE)")
        self.admin.execute(f"CREATE DATABASE {CONTROL_DB}")

    def open_probe(self) -> None:
        import psycopg

        self.probe = psycopg.connect(self.url, autocommit=True)
        self.oid = self.value("SELECT oid FROM pg_database WHERE datname = current_database()")
        try:
            self.probe.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            self.walinspect = True
        except psycopg.Error:
            self.walinspect = False

    def value(self, sql: str, params=()):
        return self.probe.execute(sql, params).fetchone()[0]

    def setting(self, name: str) -> str:
        return self.value("SELECT current_setting(%s)", [name])

    def describe(self) -> str:
        version = self.setting("server_version").split()[0]
        where = urlsplit(self.admin_url)
        return (
            f"PostgreSQL {version} ({CONTROL_DB} on {where.hostname}:{where.port}; "
            f"autovacuum={self.setting('autovacuum')}, "
            f"synchronous_commit={self.setting('synchronous_commit')})"
        )

    def empty(self) -> None:
        """Empty the executions (and the tables that refer to them: steps, waits,
        inputs), so that a run's size growth is its own, not space earlier runs freed."""
        self.probe.execute("TRUNCATE durable_execution CASCADE")

    def sizes(self) -> dict[str, int]:
        return {
            table: self.value("SELECT pg_total_relation_size(%s)", [table])
            for table in ("durable_execution", "durable_step")
        }

    def wal_lsn(self) -> str:
        return self.value("SELECT pg_current_wal_insert_lsn()::text")

    def wal_bytes(self, since: str, until: str) -> int:
        return int(self.value("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", [until, since]))

    def hold_wal(self) -> None:
        """A temporary replication slot (gone with the probe's session) keeps the WAL of
        the measured window until pg_walinspect has read it, checkpoints or not."""
        if not self.walinspect:
            return
        name = f"durable_control_{os.getpid()}"
        try:
            self.probe.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", [name])
            self.slot = name
        except Exception:
            self.slot = None

    def release_wal(self) -> None:
        if self.slot is not None:
            self.probe.execute("SELECT pg_drop_replication_slot(%s)", [self.slot])
            self.slot = None

    def wal_of_this_database(self, since: str, until: str) -> dict | None:
        """WAL records of the window that touch this database's relations, plus the
        commit records of their transactions (pg_walinspect). None if unavailable."""
        if not self.walinspect:
            return None
        give_up = time.monotonic() + 10
        while (
            self.value("SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), %s::pg_lsn)", [until])
            < 0
        ):
            if time.monotonic() > give_up:
                return None
            time.sleep(0.05)
        try:
            row = self.probe.execute(
                """
                WITH r AS (
                    SELECT xid, resource_manager, record_length, fpi_length,
                           coalesce(block_ref, '') ~ %(pattern)s AS ours
                    FROM pg_get_wal_records_info(%(since)s::pg_lsn, %(until)s::pg_lsn)
                ), x AS (SELECT DISTINCT xid FROM r WHERE ours AND xid <> '0')
                SELECT count(*),
                       coalesce(sum(record_length), 0),
                       count(*) FILTER (WHERE ours),
                       coalesce(sum(record_length) FILTER (WHERE ours), 0),
                       coalesce(sum(fpi_length) FILTER (WHERE ours), 0),
                       coalesce(sum(record_length) FILTER (WHERE NOT ours
                           AND resource_manager = 'Transaction'
                           AND xid IN (SELECT xid FROM x)), 0),
                       count(*) FILTER (WHERE ours AND resource_manager = 'Btree'),
                       coalesce(sum(record_length - fpi_length)
                           FILTER (WHERE ours AND resource_manager = 'Btree'), 0)
                FROM r
                """,
                {"pattern": rf"rel \d+/{self.oid}/", "since": since, "until": until},
            ).fetchone()
        except Exception as exc:  # e.g. the WAL was recycled (no slot)
            print(f"  (pg_walinspect could not read the window: {exc})", file=sys.stderr)
            return None
        records, total, ours, ours_bytes, fpi, commits, btree, btree_bytes = row
        return {
            "btree_records": btree,
            "btree_bytes": int(btree_bytes),  # without full-page images
            "records": records,
            "bytes": int(total),
            "our_records": ours,
            "our_bytes": int(ours_bytes) + int(commits),
            "our_fpi": int(fpi),
        }

    def activity(self, exclude: tuple[int, ...]) -> list[tuple[str, str | None, str | None]]:
        """(state, wait_event_type, wait_event) of the bench database's other backends."""
        return self.probe.execute(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datid = %s AND pid <> pg_backend_pid() AND pid <> ALL(%s) "
            "AND backend_type = 'client backend'",
            [self.oid, list(exclude)],
        ).fetchall()

    def drop(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.probe is not None:
            self.probe.close()
        if self.keep:
            print(f"Kept the bench database: {self.url}")
        elif self.admin is not None:
            self.admin.execute(f"DROP DATABASE IF EXISTS {CONTROL_DB} WITH (FORCE)")
        if self.admin is not None:
            self.admin.close()


def setup_django(database: ControlDatabase, args: argparse.Namespace) -> None:
    os.environ["DATABASE_URL"] = database.url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    # The workers inherit these: the same `bench.foreach<C>` workflows on both sides.
    os.environ["DURABLE_BENCH_FOREACH_CONCURRENCY"] = ",".join(
        str(c) for c in args.foreach_concurrencies
    )
    os.environ.pop("DURABLE_BENCH_COUNT_FILE", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


@dataclass
class Activity:
    """What the workers' backends are doing, sampled from pg_stat_activity."""

    states: Counter = field(default_factory=Counter)  # state or wait event -> count, summed
    samples: int = 0
    lock_wait_samples: int = 0  # samples with at least one backend waiting on a Lock
    lock_wait_max: int = 0

    def sample(self, database: "ControlDatabase", bench_pid: int) -> None:
        waiting = 0
        for state, wait_type, wait_event in database.activity((bench_pid,)):
            if state == "active":
                what = f"{wait_type}:{wait_event}" if wait_type else "active, on CPU"
            else:
                what = state or "unknown"  # idle, idle in transaction
            self.states[what] += 1
            waiting += wait_type == "Lock"
        self.samples += 1
        self.lock_wait_samples += waiting > 0
        self.lock_wait_max = max(self.lock_wait_max, waiting)

    def mean(self, what: str) -> float:
        return self.states[what] / max(1, self.samples)

    @property
    def lock_waiters(self) -> float:
        """Backends waiting on a Lock, mean per sample."""
        waiting = sum(n for what, n in self.states.items() if what.startswith("Lock:"))
        return waiting / max(1, self.samples)

    @property
    def lock_wait_share(self) -> float:
        return self.lock_wait_samples / max(1, self.samples)


def django_backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def tally_of(counts: Path) -> Tally | None:
    tallies = [Tally.from_json(json.loads(p.read_text())) for p in counts.glob("*.json")]
    return sum(tallies, Tally()) if tallies else None


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def mb(value: float) -> str:
    return f"{value / 1e6:,.2f} MB"


# -- parallel ----------------------------------------------------------------------------


def poll_until_completed(execution_id, began: float, workers) -> None:
    """Poll a workflow's status every 1 ms until it is completed (it is `waiting` while
    its branches run). A failure or 30 s without completing is a BenchError."""
    from django_durable.models import WorkflowExecution

    while True:
        status = WorkflowExecution.objects.values_list("status", flat=True).get(id=execution_id)
        if status == "completed":
            return
        if status not in ("pending", "running", "waiting"):
            raise BenchError(f"Execution {execution_id} is {status}.{workers.logs()}")
        if time.perf_counter() - began > 30:
            workers.check_alive()
            raise BenchError(f"Execution {execution_id} took over 30 s.{workers.logs()}")
        time.sleep(0.001)


@dataclass
class ParallelLatency:
    samples: list[float] = field(default_factory=list)  # start() -> the bench sees completed
    pickups: list[float] = field(default_factory=list)  # created -> parent claimed
    branches: list[float] = field(default_factory=list)  # parent claimed -> last branch done
    joins: list[float] = field(default_factory=list)  # last branch's step done -> parent done


def parallel_latency(args, logdir: Path, running: list) -> ParallelLatency:
    """Single 10-branch workflows started while W fresh workers idle (NOTIFY wakes them)."""
    from django_durable import starting

    result = ParallelLatency()
    workers = Workers("plat", args.workers, args.parallel_concurrency, logdir)
    running.append(workers)
    try:
        workers.wait_until_registered()
        time.sleep(1.0)  # listeners connected, dispatchers waiting
        for index in range(WARMUP + args.latency_samples):
            time.sleep(random.uniform(*SPACED))
            began = time.perf_counter()
            execution_id = starting.start(PARALLEL, {})
            poll_until_completed(execution_id, began, workers)
            elapsed = time.perf_counter() - began
            if index < WARMUP:
                continue
            result.samples.append(elapsed)
            parent, last_branch = parallel_rows(execution_id)
            result.pickups.append((parent["started_at"] - parent["created_at"]).total_seconds())
            result.branches.append((last_branch - parent["started_at"]).total_seconds())
            result.joins.append((parent["completed_at"] - last_branch).total_seconds())
    finally:
        workers.stop()
    return result


def parallel_rows(execution_id):
    from django.db.models import Max

    from django_durable.models import WorkflowExecution

    parent = WorkflowExecution.objects.values("created_at", "started_at", "completed_at").get(
        id=execution_id
    )
    last = WorkflowExecution.objects.filter(parent_id=execution_id).aggregate(
        last=Max("completed_at")
    )["last"]
    return parent, last


@dataclass
class ParallelThroughput:
    n: int
    seconds: float = 0.0  # commit of the N starts -> the bench sees all completed
    busy_seconds: float = 0.0  # first parent claimed -> last parent completed (rows)
    latencies: list[float] = field(default_factory=list)  # each: created -> completed
    tally: Tally | None = None
    activity: Activity = field(default_factory=Activity)


def parallel_throughput(
    database: "ControlDatabase", args, logdir: Path, running: list
) -> ParallelThroughput:
    """N 10-branch workflows started in one transaction, W fresh workers running them."""
    from django.db import transaction
    from django.db.models import Max, Min

    from django_durable import clock, starting
    from django_durable.models import WorkflowExecution

    result = ParallelThroughput(args.parallel_workflows)
    counts = logdir / "counts-ptp"
    counts.mkdir()
    bench_pid = django_backend_pid()
    workers = Workers("ptp", args.workers, args.parallel_concurrency, logdir, counts=counts)
    running.append(workers)
    try:
        workers.wait_until_registered()
        time.sleep(1.0)
        since = clock.now()
        with transaction.atomic():
            for _ in range(result.n):
                starting.start(PARALLEL, {})
        began = time.perf_counter()
        parents = WorkflowExecution.objects.filter(
            workflow_name=PARALLEL, kind="workflow", created_at__gte=since
        )
        while True:
            statuses = status_counts(parents)
            if statuses.get("completed", 0) == result.n:
                break
            if set(statuses) - {"pending", "running", "waiting", "completed"}:
                raise BenchError(f"Parallel workflows ended badly: {statuses}.{workers.logs()}")
            workers.check_alive()
            if time.perf_counter() - began > 60 + result.n / 5:
                raise BenchError(f"Timed out; parallel workflows are {statuses}.{workers.logs()}")
            result.activity.sample(database, bench_pid)
            time.sleep(THROUGHPUT_POLL_SECONDS)
        result.seconds = time.perf_counter() - began
        window = parents.aggregate(first=Min("started_at"), last=Max("completed_at"))
        result.busy_seconds = (window["last"] - window["first"]).total_seconds()
        result.latencies = [
            (completed - created).total_seconds()
            for created, completed in parents.values_list("created_at", "completed_at")
        ]
    finally:
        workers.stop()
    result.tally = tally_of(counts)
    check_parallel(since, result.n)
    return result


def check_parallel(since, n: int) -> None:
    """Every workflow completed with 10 ok results, 10 completed branches, 12 attempts
    (fork, join, one per branch)."""
    from django_durable.models import StepExecution, WorkflowExecution

    parents = WorkflowExecution.objects.filter(
        workflow_name=PARALLEL, kind="workflow", created_at__gte=since
    )
    for context in parents.values_list("context", flat=True):
        results = context.get("__results__", {})
        if len(results) != BRANCHES or any(value[0] != "ok" for value in results.values()):
            raise BenchError(f"A parallel workflow joined {results!r}.")
    branches = WorkflowExecution.objects.filter(parent__in=parents)
    if status_counts(branches) != {"completed": n * BRANCHES}:
        raise BenchError(f"Branches are {status_counts(branches)}.")
    steps = StepExecution.objects.filter(execution__root__in=parents).count()
    if steps != n * (BRANCHES + 2):
        raise BenchError(f"{steps} step rows for {n} parallel workflows, not {n * 12}.")


def report_parallel(args, latency: ParallelLatency | None, tp: ParallelThroughput | None):
    rows = []
    if latency is not None:
        wall = latency.samples
        rows += [
            (
                "latency start->complete, median",
                ms(statistics.median(wall)),
                f"{len(wall)} workflows one at a time, workers idle (LISTEN/NOTIFY)",
            ),
            ("latency start->complete, p95", ms(p95(wall)), "nearest rank; bench polls every 1 ms"),
            (
                "  pickup, median",
                ms(statistics.median(latency.pickups)),
                "parent created -> claimed",
            ),
            (
                "  fork + branches, median",
                ms(statistics.median(latency.branches)),
                f"parent claimed -> last of {BRANCHES} branches' steps finished",
            ),
            (
                "  join, median",
                ms(statistics.median(latency.joins)),
                "last branch's step finished -> parent completed (that branch's wait for the "
                "parent's lock and its commit, wake, claim, join attempt)",
            ),
        ]
    if tp is not None:
        rows += [
            (
                "throughput, workflows/s",
                f"{tp.n / tp.busy_seconds:,.1f}",
                f"{tp.n} started in one transaction; first claim -> last completion "
                f"{tp.busy_seconds:.2f} s (rows' timestamps)",
            ),
            (
                "throughput, workflows/s from start",
                f"{tp.n / tp.seconds:,.1f}",
                f"{tp.seconds:.2f} s from the commit until the bench saw all completed",
            ),
            (
                "  branch executions/s",
                f"{tp.n * BRANCHES / tp.busy_seconds:,.0f}",
                f"{tp.n * BRANCHES} branches, first claim -> last completion",
            ),
            (
                "  workflow created->completed, median / p95",
                f"{ms(statistics.median(tp.latencies))} / {ms(p95(tp.latencies))}",
                "inside the burst",
            ),
            (
                "  backends waiting on a Lock, mean",
                f"{tp.activity.lock_waiters:.1f}",
                f"of {args.workers * args.parallel_concurrency} runner threads; pg_stat_activity "
                f"every ~{THROUGHPUT_POLL_SECONDS * 1000:.0f} ms, "
                f"{tp.activity.lock_wait_share:.0%} of samples had one",
            ),
        ]
        if tp.tally is not None:
            rows += [
                (
                    "  SQL statements / workflow",
                    f"{tp.tally.statement_count / tp.n:.1f}",
                    "all the workers' SQL from start-up to exit / N",
                ),
                (
                    "  commits / workflow",
                    f"{tp.tally.writing_transactions / tp.n:.1f}",
                    "transactions that wrote",
                ),
            ]
            if tp.tally.rollbacks:
                rows.append(("  rollbacks", f"{tp.tally.rollbacks}", "lost leases or errors"))
    print_table(
        f"Parallel: {BRANCHES} no-op branches ({PARALLEL}), {args.workers} x durable_worker "
        f"--concurrency {args.parallel_concurrency}",
        rows,
    )


# -- foreach -----------------------------------------------------------------------------


@dataclass
class ForeachRun:
    concurrency: int
    items: int
    pad: int  # bytes of the block context's padding
    wall: float = 0.0  # start() -> the bench sees completed
    timings: dict = field(default_factory=dict)
    tenths: list[float] = field(default_factory=list)  # items/s per tenth of completions
    rows: dict = field(default_factory=dict)
    step_rows: int = 0
    size_growth: dict = field(default_factory=dict)
    wal_cluster: int = 0
    wal: dict | None = None
    context_text: int = 0
    context_stored: int = 0
    activity: Activity = field(default_factory=Activity)
    tally: Tally | None = None


def foreach_run(
    database: "ControlDatabase", args, logdir: Path, running: list, concurrency: int, pad: int
) -> ForeachRun:
    """One foreach of `args.items` no-op items, W fresh workers with C threads each."""
    from django_durable import starting

    run = ForeachRun(concurrency, args.items, pad)
    tag = f"fe{concurrency}" + ("big" if pad else "")
    counts = logdir / f"counts-{tag}"
    counts.mkdir()
    database.empty()
    bench_pid = django_backend_pid()
    workers = Workers(tag, args.workers, args.concurrency, logdir, counts=counts)
    running.append(workers)
    payload = {"items": args.items}
    if pad:
        payload["pad"] = secrets.token_hex(pad // 2)  # random hex: TOAST cannot shrink it
    try:
        workers.wait_until_registered()
        time.sleep(1.0)  # listeners connected, dispatchers waiting
        sizes_before = database.sizes()
        database.hold_wal()
        lsn_before = database.wal_lsn()
        began = time.perf_counter()
        execution_id = starting.start(f"bench.foreach{concurrency}", payload)
        wait_for_foreach(database, run, execution_id, began, workers, bench_pid)
        run.wall = time.perf_counter() - began
        lsn_after = database.wal_lsn()
        sizes_after = database.sizes()
    finally:
        workers.stop()
    run.tally = tally_of(counts)
    run.wal_cluster = database.wal_bytes(lsn_before, lsn_after)
    run.wal = database.wal_of_this_database(lsn_before, lsn_after)
    database.release_wal()
    run.size_growth = {table: sizes_after[table] - sizes_before[table] for table in sizes_after}
    measure_foreach_rows(database, run, execution_id)
    check_foreach(execution_id, args.items)
    return run


def wait_for_foreach(database, run, execution_id, began, workers, bench_pid) -> None:
    from django_durable.models import WorkflowExecution

    give_up = began + 120 + run.items / 20
    while True:
        status = WorkflowExecution.objects.values_list("status", flat=True).get(id=execution_id)
        if status == "completed":
            return
        if status not in ("pending", "running", "waiting"):
            raise BenchError(f"The foreach execution is {status}.{workers.logs()}")
        workers.check_alive()
        if time.perf_counter() > give_up:
            raise BenchError(f"The foreach did not complete in time.{workers.logs()}")
        run.activity.sample(database, bench_pid)
        time.sleep(FOREACH_POLL_SECONDS)


def measure_foreach_rows(database: ControlDatabase, run: ForeachRun, execution_id) -> None:
    probe = database.probe
    run.rows = dict(
        probe.execute(
            "SELECT kind, count(*) FROM durable_execution WHERE root_id = %s GROUP BY kind",
            [execution_id],
        ).fetchall()
    )
    run.step_rows = database.value(
        "SELECT count(*) FROM durable_step s JOIN durable_execution e ON e.id = s.execution_id "
        "WHERE e.root_id = %s",
        [execution_id],
    )
    run.context_text, run.context_stored = probe.execute(
        "SELECT octet_length(context::text), pg_column_size(context) FROM durable_execution "
        "WHERE id = %s",
        [execution_id],
    ).fetchone()
    parent = probe.execute(
        "SELECT created_at, started_at, completed_at FROM durable_execution WHERE id = %s",
        [execution_id],
    ).fetchone()
    attempts = probe.execute(
        "SELECT started_at, completed_at FROM durable_step WHERE execution_id = %s "
        "ORDER BY started_at",
        [execution_id],
    ).fetchall()
    ends = [
        row[0]
        for row in probe.execute(
            "SELECT completed_at FROM durable_execution WHERE parent_id = %s ORDER BY completed_at",
            [execution_id],
        ).fetchall()
    ]
    first_item = database.value(
        "SELECT min(started_at) FROM durable_execution WHERE parent_id = %s", [execution_id]
    )
    created, started, completed = parent
    join = attempts[-1]
    run.timings = {
        "pickup": (started - created).total_seconds(),
        "fork": (first_item - started).total_seconds(),
        "items": (ends[-1] - first_item).total_seconds(),
        "join_wait": (join[0] - ends[-1]).total_seconds(),
        "join": (join[1] - join[0]).total_seconds(),
        "created_to_completed": (completed - created).total_seconds(),
    }
    # items/s per tenth of the items, in completion order: a collapse shows up here.
    size = len(ends) / TENTHS
    previous = first_item
    for tenth in range(TENTHS):
        last = ends[min(len(ends) - 1, round((tenth + 1) * size) - 1)]
        count = round((tenth + 1) * size) - round(tenth * size)
        seconds = (last - previous).total_seconds()
        run.tenths.append(count / seconds if seconds > 0 else float("nan"))
        previous = last


def check_foreach(execution_id, items: int) -> None:
    """The foreach completed with every item's result in item order, every item row
    completed, and one attempt per item plus the parent's fork and join attempts."""
    from django_durable.models import StepExecution, WorkflowExecution

    parent = WorkflowExecution.objects.get(id=execution_id)
    results = parent.context.get("__results__", {}).get("items")
    if results != [["ok", index] for index in range(items)]:
        raise BenchError(f"The foreach joined {str(results)[:200]}...")
    members = WorkflowExecution.objects.filter(parent_id=execution_id)
    if status_counts(members) != {"completed": items}:
        raise BenchError(f"Items are {status_counts(members)}.")
    steps = StepExecution.objects.filter(execution__root_id=execution_id).count()
    if steps != items + 2:
        raise BenchError(f"{steps} step rows for {items} items, not {items + 2}.")


def btree_share(wal: dict) -> float:
    """The index records' share of this database's WAL bytes, full-page images left out."""
    return wal["btree_bytes"] / max(1, wal["our_bytes"] - wal["our_fpi"])


def report_foreach(args, runs: list[ForeachRun]) -> None:
    if not runs:
        return
    headers = [
        f"F={run.concurrency}" + (f", {run.pad // 1000} KB ctx" if run.pad else "") for run in runs
    ]

    def line(label: str, values: list[str], note: str = "") -> tuple:
        return (label, values, note)

    def per_item(run: ForeachRun, value: float) -> float:
        return value / run.items

    lines = [
        line("wall time start->completed", [f"{run.wall:.2f} s" for run in runs]),
        line("items/s (wall)", [f"{run.items / run.wall:,.0f}" for run in runs]),
        line(
            "items/s (first item claimed -> last done)",
            [f"{run.items / run.timings['items']:,.0f}" for run in runs],
        ),
        line("  parent pickup", [ms(run.timings["pickup"]) for run in runs], "created -> claimed"),
        line(
            "  fork",
            [ms(run.timings["fork"]) for run in runs],
            "parent claimed -> first item claimed: items(ctx), inserting the rows, commit",
        ),
        line(
            "  last item -> join attempt",
            [ms(run.timings["join_wait"]) for run in runs],
            "the item's wait for the parent's lock, wake, claim",
        ),
        line(
            "  join attempt",
            [ms(run.timings["join"]) for run in runs],
            "reads the items' results, builds the list (the attempt's own times)",
        ),
    ]
    for tenth in range(TENTHS):
        lines.append(
            line(
                f"  items/s, tenth {tenth + 1}"
                if tenth
                else "  items/s, tenth 1 (completion order)",
                [f"{run.tenths[tenth]:,.0f}" for run in runs],
            )
        )
    lines += [
        line(
            "execution rows (workflow + item)",
            [
                f"{sum(run.rows.values()):,} ({run.rows.get('workflow', 0)}+"
                f"{run.rows.get('item', 0):,})"
                for run in runs
            ],
            "durable_execution, root_id = the execution",
        ),
        line("step rows", [f"{run.step_rows:,}" for run in runs], "durable_step of those"),
        line(
            "durable_execution growth",
            [mb(run.size_growth["durable_execution"]) for run in runs],
            "pg_total_relation_size (heap, TOAST, indexes); tables emptied before, no vacuum",
        ),
        line("durable_step growth", [mb(run.size_growth["durable_step"]) for run in runs]),
        line(
            "  bytes / item (both tables)",
            [f"{per_item(run, sum(run.size_growth.values())):,.0f}" for run in runs],
        ),
        line(
            "WAL, cluster-wide",
            [mb(run.wal_cluster) for run in runs],
            "pg_current_wal_insert_lsn() after - before (other databases' writes included)",
        ),
        line(
            "  WAL bytes / item, cluster-wide",
            [f"{per_item(run, run.wal_cluster):,.0f}" for run in runs],
        ),
    ]
    if all(run.wal is not None for run in runs):
        lines += [
            line(
                "WAL of this database",
                [mb(run.wal["our_bytes"]) for run in runs],
                "pg_walinspect: records on durable_control's relations + their commits",
            ),
            line(
                "  WAL bytes / item, this database",
                [f"{per_item(run, run.wal['our_bytes']):,.0f}" for run in runs],
            ),
            line(
                "  without full-page images, bytes / item",
                [
                    f"{per_item(run, run.wal['our_bytes'] - run.wal['our_fpi']):,.0f}"
                    for run in runs
                ],
                "FPIs depend on when checkpoints fall",
            ),
            line(
                "  of which index (Btree) records",
                [
                    f"{btree_share(run.wal):.0%}, "
                    f"{per_item(run, run.wal['btree_records']):.1f} / item"
                    for run in runs
                ],
                "share of the bytes without FPIs; index entries of non-HOT updates",
            ),
            line(
                "  of which full-page images",
                [f"{run.wal['our_fpi'] / max(1, run.wal['our_bytes']):.0%}" for run in runs],
            ),
            line(
                "  WAL records / item, this database",
                [f"{per_item(run, run.wal['our_records']):.1f}" for run in runs],
            ),
        ]
    lines += [
        line(
            "final parent context",
            [f"{run.context_text:,} B" for run in runs],
            "octet_length(context::text)",
        ),
        line(
            "  stored (pg_column_size)",
            [f"{run.context_stored:,} B" for run in runs],
            "after TOAST compression",
        ),
    ]
    if all(run.tally is not None for run in runs):
        lines += [
            line(
                "SQL statements / item",
                [f"{per_item(run, run.tally.statement_count):.2f}" for run in runs],
                "all the workers' SQL, start-up to exit",
            ),
            line(
                "commits / item",
                [f"{per_item(run, run.tally.writing_transactions):.2f}" for run in runs],
                "transactions that wrote",
            ),
            line("rollbacks", [f"{run.tally.rollbacks}" for run in runs], "lost leases, errors"),
        ]
    lines += [
        line(
            "samples with a Lock wait",
            [f"{run.activity.lock_wait_share:.0%}" for run in runs],
            f"pg_stat_activity every ~{FOREACH_POLL_SECONDS * 1000:.0f} ms, workers' backends",
        ),
        line(
            "  backends waiting on a Lock, mean / most",
            [f"{run.activity.lock_waiters:.1f} / {run.activity.lock_wait_max}" for run in runs],
            f"of {args.workers * args.concurrency} runner threads",
        ),
    ]
    widths = [
        max(len(label) for label, _, _ in lines),
        *[max(len(h), *(len(v[i]) for _, v, _ in lines)) for i, h in enumerate(headers)],
    ]
    print(
        f"\nForeach: {args.items:,} no-op items (bench.foreach<F>), {args.workers} x "
        f"durable_worker --concurrency {args.concurrency}"
    )
    print(
        "  "
        + " " * widths[0]
        + "".join(f"  {h:>{w}}" for h, w in zip(headers, widths[1:], strict=True))
    )
    for label, values, note in lines:
        cells = "".join(f"  {v:>{w}}" for v, w in zip(values, widths[1:], strict=True))
        print(f"  {label:<{widths[0]}}{cells}  {note}".rstrip())

    print(
        "\nWorkers' backends during the foreach, mean count per sample (pg_stat_activity; "
        "`idle` includes each worker's listener, dispatcher and heartbeat connections)"
    )
    states = sorted(
        set().union(*(run.activity.states for run in runs)),
        key=lambda s: -max(r.activity.mean(s) for r in runs),
    )
    width = max([len(s) for s in states] + [10])
    print(
        "  "
        + " " * width
        + "".join(f"  {h:>{w}}" for h, w in zip(headers, widths[1:], strict=True))
    )
    for state in states:
        cells = "".join(
            f"  {run.activity.mean(state):>{w}.2f}" for run, w in zip(runs, widths[1:], strict=True)
        )
        print(f"  {state:<{width}}{cells}")

    tallied = [run for run in runs if run.tally is not None]
    if tallied:
        print("\nSQL statements per item, by kind (workers, start-up to exit)")
        kinds = [run.tally.by_kind() for run in tallied]
        names = sorted(set().union(*kinds), key=lambda n: -max(k[n] for k in kinds))
        width = max(len(n) for n in names[:15] + ["total"])
        hs = [h for h, run in zip(headers, runs, strict=True) if run.tally is not None]
        print("  " + " " * width + "".join(f"{h:>18}" for h in hs))
        for name in names[:15]:
            cells = "".join(
                f"{k[name] / run.items:>18.3f}" for k, run in zip(kinds, tallied, strict=True)
            )
            print(f"  {name:<{width}}{cells}")
        if len(names) > 15:
            print(f"  ({len(names) - 15} more kinds)")


def worker_log_issues(logdir: Path) -> Counter:
    """Lines of the worker logs that mention an error, a warning or a traceback."""
    issues = Counter()
    for path in logdir.glob("worker-*.log"):
        for text in path.read_text(errors="replace").splitlines():
            if re.search(r"error|warning|traceback|exception", text, re.I):
                issues[re.sub(r"^\S+ \S+ ", "", text)[:160]] += 1
    return issues


def main() -> int:
    args = parse_args()
    # Stopped with SIGTERM, still stop the workers and drop the database (finally blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    database = ControlDatabase(os.environ.get("DATABASE_URL") or DEFAULT_URL, args.keep)
    logdir = Path(tempfile.mkdtemp(prefix="durable_control_"))
    running: list[Workers] = []
    database.create()
    try:
        setup_django(database, args)
        database.open_probe()
        print(
            f"django-durable control-flow benchmark, {date.today()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {database.describe()}"
        )
        if args.part in ("parallel", "all"):
            latency = parallel_latency(args, logdir, running)
            throughput = parallel_throughput(database, args, logdir, running)
            report_parallel(args, latency, throughput)
        if args.part in ("foreach", "all"):
            runs = [
                foreach_run(database, args, logdir, running, concurrency, 0)
                for concurrency in args.foreach_concurrencies
            ]
            if args.big_context:
                runs.append(
                    foreach_run(
                        database,
                        args,
                        logdir,
                        running,
                        args.foreach_concurrencies[0],
                        args.big_context,
                    )
                )
            report_foreach(args, runs)
        issues = worker_log_issues(logdir)
        if issues:
            print("\nWorker log lines mentioning an error, warning or traceback (count):")
            for text, count in issues.most_common(10):
                print(f"  {count:>5} x {text}")
        else:
            print("\nNo error, warning or traceback in the worker logs.")
    except BenchError as exc:
        print(f"\nBench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for workers in running:  # each phase stops its own; this is for the unexpected
            workers.stop()
        database.drop()
        keep_or_remove(logdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
