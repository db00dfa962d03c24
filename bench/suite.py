#!/usr/bin/env python
"""django-durable's benchmark suite: one command, results in bench/RESULTS.md.

Run from the repository root, with the `bench` extra installed
(`.venv/bin/pip install -e ".[dev,bench]"`), against PostgreSQL only:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/suite.py [--quick]

In one run, on the server DATABASE_URL names (which is used only to create and drop
scratch databases: durable_suite, durable_pgbench, durable_peer_procrastinate,
durable_peer_dbos; bench_scale.py makes durable_scale):

1. the physical limit: `pgbench -N` with as many clients as the worker threads;
2. throughput of 1-step and 10-step no-op workflows with 1, 2 and 4 `durable_worker`
   processes, and 10,000 1-step executions started in one transaction then drained;
3. latency with an idle worker (p50/p95/p99): start -> first step begins, start -> a
   1-step workflow completes, send_event -> the waiting step resumes;
4. cost per step in workflow length (1, 10, 100 steps), context size (1 KB, 100 KB:
   WAL bytes per step) and history (bench/bench_scale.py, 1M executions);
5. peers in the same run: procrastinate (one job = one step) and DBOS Transact;
6. a profile of the hot path (pyinstrument in-process, py-spy on a worker).

A measurement, never a test: nothing here passes or fails on a timing. Targets are
reported as met or missed. See bench/README.md ("The benchmark suite").
"""

import argparse
import json
import math
import os
import platform
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
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
    check_completed,
    status_counts,
)
from bench.sqlcount import SQLCounter  # noqa: E402

SUITE_DB = "durable_suite"
PGBENCH_DB = "durable_pgbench"
PROCRASTINATE_DB = "durable_peer_procrastinate"
DBOS_DB = "durable_peer_dbos"
PEERS = ROOT / "bench" / "peers"
RESULTS = ROOT / "bench" / "RESULTS.md"
CONCURRENCY = 4  # threads per worker process, for us and the peers
TARGET_STEPS = 1500  # 10-step workflows, 2 worker processes: steps/s
TARGET_PGBENCH_SHARE = 0.25  # ... and share of pgbench -N tps (stretch 0.35)
TARGET_PEER_RATIO = 3.0
TARGET_P50_MS, TARGET_P99_MS = 5.0, 20.0  # 1-step start -> complete, idle worker
DBOS_POLL_SECONDS = 0.01  # DBOS queue polling interval (its default is 1 s)
SPACED = (0.055, 0.075)  # seconds between latency samples: past claims.COALESCE_SECONDS


@dataclass(frozen=True)
class Plan:
    """How much of everything: the default run, or --quick."""

    pgbench_scale: int
    pgbench_seconds: int
    one_n: int  # 1-step executions per throughput run
    chain_n: int  # 10-step executions per throughput run
    bulk_n: int
    latency_samples: int
    coalesced_samples: int  # 1-step starts 0-50 ms apart (NOTIFY coalesced)
    event_samples: int
    warmup: int
    length_n: dict  # steps -> executions, in-process
    context_n: dict  # context bytes -> executions of the 10-step chain, in-process
    profile_n: int  # 10-step executions under pyinstrument
    scale_args: tuple
    ids_args: tuple  # bench_ids.py: history rows and inserts per kind of primary key


FULL = Plan(
    pgbench_scale=10,
    pgbench_seconds=10,
    one_n=3000,
    chain_n=400,
    bulk_n=10_000,
    latency_samples=1000,
    coalesced_samples=100,
    event_samples=1000,
    warmup=20,
    length_n={1: 1000, 10: 200, 100: 20},
    context_n={1024: 200, 102_400: 30},
    profile_n=100,
    scale_args=(),
    ids_args=(),
)
QUICK = Plan(
    pgbench_scale=1,
    pgbench_seconds=3,
    one_n=500,
    chain_n=100,
    bulk_n=2000,
    latency_samples=200,
    coalesced_samples=40,
    event_samples=100,
    warmup=10,
    length_n={1: 200, 10: 40, 100: 4},
    context_n={1024: 40, 102_400: 8},
    profile_n=30,
    scale_args=("--rows", "100000", "--parked", "25000", "--samples", "20"),
    ids_args=("--rows", "300000", "--inserts", "4000"),
)
WORKER_COUNTS = (1, 2, 4)
PEER_WORKERS = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 2 min)")
    parser.add_argument("--no-peers", action="store_true", help="skip procrastinate and DBOS")
    parser.add_argument("--no-scale", action="store_true", help="skip bench_scale.py")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"where to write ({RESULTS.name})"
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and durable_suite")
    return parser.parse_args()


# -- helpers ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}{unit}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "—"
    return f"{ours / theirs:.2f}x"


def share(ours: float | None, limit: float | None) -> str:
    if not ours or not limit:
        return "—"
    return f"{100 * ours / limit:.0f}%"


def cpu_times() -> tuple[float, float]:
    """The machine's (busy, total) jiffies from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes (backends included) on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Busy:
    """Machine CPU use, and the CPU of given processes and of PostgreSQL, over a span.
    PostgreSQL's is that of its processes alive at the end (a backend that exited during
    the span is missed; one that started is counted from 0)."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.machine = cpu_times()
        self.procs = {pid: process_cpu(pid) for pid in pids}
        self.postgres = {pid: process_cpu(pid) for pid in postgres_pids()}

    def stop(self) -> tuple[float, float, float]:
        busy, total = cpu_times()
        machine = (busy - self.machine[0]) / max(1.0, total - self.machine[1])
        procs = sum(process_cpu(pid) - before for pid, before in self.procs.items())
        postgres = sum(process_cpu(pid) - self.postgres.get(pid, 0.0) for pid in postgres_pids())
        return machine, procs, postgres


def git_state() -> str:
    """HEAD, and whether the library has uncommitted changes (the code the workers run)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "diff", "--stat", "HEAD", "--", "django_durable"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + (
        f" + uncommitted changes to django_durable/ ({dirty.splitlines()[-1].strip()})"
        if dirty
        else ""
    )


class Suite:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.plan = QUICK if args.quick else FULL
        url = os.environ.get("DATABASE_URL")
        if not url or urlsplit(url).scheme not in POSTGRES_SCHEMES:
            sys.exit("bench/suite.py needs PostgreSQL: DATABASE_URL=postgres://user@host:port/db")
        self.admin_url = url
        parts = urlsplit(url)
        if parts.path.strip("/") in (SUITE_DB, PGBENCH_DB, PROCRASTINATE_DB, DBOS_DB):
            sys.exit("DATABASE_URL must name another database: the suite drops its own.")
        self.parts = parts
        self.logdir = Path(tempfile.mkdtemp(prefix="durable_suite_"))
        self.commands: list[str] = []  # every command the suite ran, for RESULTS.md
        self.notes: list[str] = []  # what could not be measured, and why
        self.r: dict = {}  # results
        self.admin = None
        self.began = time.perf_counter()

    # -- databases ------------------------------------------------------------------

    def url(self, database: str) -> str:
        return self.parts._replace(path=f"/{database}").geturl()

    def connect_admin(self) -> None:
        import psycopg

        self.admin = psycopg.connect(self.admin_url, autocommit=True)

    def recreate(self, database: str) -> None:
        self.admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        self.admin.execute(f"CREATE DATABASE {database}")

    def drop(self, database: str) -> None:
        self.admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    @staticmethod
    def vacuum(url: str) -> None:
        """VACUUM ANALYZE a whole database before a measured run: what autovacuum would
        have done by then (this server may run with autovacuum off)."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("VACUUM ANALYZE")

    def scalar(self, sql: str, params=None):
        return self.admin.execute(sql, params).fetchone()[0]

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.began:6.1f}s] {message}", flush=True)

    def run(self, command: list[str], *, env=None, timeout=600, record=True, **kwargs):
        if record:
            self.commands.append(" ".join(command))
        return subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            timeout=timeout,
            check=True,
            capture_output=True,
            text=True,
            **kwargs,
        )

    # -- machine and versions ---------------------------------------------------------

    def describe(self) -> None:
        def version(package: str) -> str:
            try:
                return metadata.version(package)
            except metadata.PackageNotFoundError:
                return "not installed"

        meminfo = Path("/proc/meminfo").read_text()
        ram_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
        settings = {}
        for name in (
            "server_version",
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "wal_level",
            "full_page_writes",
            "max_connections",
            "autovacuum",
        ):
            settings[name] = self.scalar(f"SHOW {name}")
        try:
            pgbench = subprocess.run(
                ["pgbench", "--version"], capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            pgbench = "not found"
        git = git_state()
        self.r["machine"] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": os.cpu_count(),
            "cpu": model.group(1).strip() if model else platform.machine(),
            "ram_gib": ram_kb / 2**20,
            "kernel": platform.release(),
            "load_start": os.getloadavg(),
            "git": git,
        }
        self.r["versions"] = {
            "Python": platform.python_version(),
            "Django": version("Django"),
            "PostgreSQL": settings.pop("server_version"),
            "psycopg": version("psycopg"),
            "pgbench": pgbench,
            "procrastinate": version("procrastinate"),
            "dbos": version("dbos"),
            "SQLAlchemy (DBOS)": version("SQLAlchemy"),
            "pyinstrument": version("pyinstrument"),
            "py-spy": version("py-spy"),
        }
        self.r["pg_settings"] = settings

    # -- 1. pgbench -N -------------------------------------------------------------------

    def pgbench(self, clients_list: tuple[int, ...], key: str) -> None:
        env = dict(os.environ)
        if self.parts.password:
            env["PGPASSWORD"] = self.parts.password
        conn = ["-h", self.parts.hostname or "127.0.0.1", "-p", str(self.parts.port or 5432)]
        if self.parts.username:
            conn += ["-U", self.parts.username]
        results = self.r.setdefault(key, {})
        self.recreate(PGBENCH_DB)
        try:
            self.run(
                ["pgbench", "-i", "-q", "-s", str(self.plan.pgbench_scale), *conn, PGBENCH_DB],
                env=env,
            )
            for clients in clients_list:
                threads = min(clients, os.cpu_count() or 1)
                command = [
                    "pgbench",
                    "-N",
                    "-c",
                    str(clients),
                    "-j",
                    str(threads),
                    "-T",
                    str(self.plan.pgbench_seconds),
                    *conn,
                    PGBENCH_DB,
                ]
                output = self.run(command, env=env).stdout
                tps = float(re.search(r"tps = ([\d.]+) \(without initial", output).group(1))
                latency = re.search(r"latency average = ([\d.]+) ms", output)
                results[clients] = {
                    "tps": tps,
                    "latency_ms": float(latency.group(1)) if latency else None,
                }
                self.log(f"pgbench -N -c {clients}: {tps:,.0f} tps")
        finally:
            self.drop(PGBENCH_DB)

    def limit(self, clients: int) -> float | None:
        """pgbench -N tps with this many clients (the run at the start)."""
        return self.r.get("pgbench", {}).get(clients, {}).get("tps")

    # -- django-durable: set-up ----------------------------------------------------------

    def setup_django(self) -> None:
        self.recreate(SUITE_DB)
        os.environ["DATABASE_URL"] = self.url(SUITE_DB)
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        os.environ.pop("DURABLE_BENCH_COUNT_FILE", None)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)

    def workers(self, tag: str, count: int) -> Workers:
        self.commands.append(
            f"{count} x python manage.py durable_worker --settings {SETTINGS} "
            f"--concurrency {CONCURRENCY} --grace 10 --name bench-{tag}-<i>   ({tag})"
        )
        workers = Workers(tag, count, CONCURRENCY, self.logdir)
        workers.wait_until_registered()
        time.sleep(0.5)  # let them settle: listeners connected, dispatchers waiting
        return workers

    def scan_logs(self) -> None:
        """Lines of our workers' logs that are not routine: errors, warnings, tracebacks."""
        found = Counter()
        examples = {}
        for path in sorted(self.logdir.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if re.search(r"ERROR|WARNING|CRITICAL|Traceback|Exception", line):
                    key = re.sub(r"^\S+ \S+ ", "", line)  # drop the timestamp
                    key = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<uuid>", key)[:200]
                    found[key] += 1
                    examples.setdefault(key, f"{path.name}: {line[:300]}")
        self.r["worker_log_issues"] = [(count, examples[key]) for key, count in found.most_common()]

    # -- 2. throughput ----------------------------------------------------------------

    def batch(self, workers: Workers, name: str, steps: int, n: int, on_commit=None) -> dict:
        """n executions of `name` started in one transaction while `workers` are idle, run
        to completion. steps/s from the rows: first claim -> last completion."""
        from django.db import transaction
        from django.db.models import Max, Min

        from django_durable import clock, starting
        from django_durable.models import WorkflowExecution

        self.vacuum(self.url(SUITE_DB))
        since = clock.now()
        began = time.perf_counter()
        with transaction.atomic():
            for _ in range(n):
                starting.start(name, {})
        committed = time.perf_counter()
        spy = on_commit() if on_commit is not None else None
        busy = Busy([p.pid for p in workers.processes])
        rows = WorkflowExecution.objects.filter(workflow_name=name, created_at__gte=since)
        last_check = committed
        while rows.exclude(status="completed").exists():
            now = time.perf_counter()
            if now - last_check > 1.0:
                last_check = now
                statuses = status_counts(rows)
                if set(statuses) - {"pending", "running", "completed"}:
                    raise BenchError(f"{name}: executions ended badly: {statuses}")
                workers.check_alive()
                if now - committed > 120 + n * steps / 50:
                    raise BenchError(f"{name}: timed out, {statuses}.{workers.logs()}")
            time.sleep(0.02)
        drained = time.perf_counter() - committed
        if spy is not None:
            self.finish_py_spy(spy)
        machine_cpu, workers_cpu, postgres_cpu = busy.stop()
        window = rows.aggregate(first=Min("started_at"), last=Max("completed_at"))
        seconds = (window["last"] - window["first"]).total_seconds()
        check_completed(name, n, steps, since=since)
        return {
            "n": n,
            "steps": steps,
            "start_seconds": committed - began,
            "busy_seconds": seconds,
            "drain_seconds": drained,
            "steps_per_s": n * steps / seconds,
            "machine_cpu": machine_cpu,
            "worker_cpu_ms_per_step": 1000 * workers_cpu / (n * steps),
            "postgres_cpu_ms_per_step": 1000 * postgres_cpu / (n * steps),
        }

    def throughput(self) -> None:
        plan = self.plan
        results = self.r["throughput"] = {}
        for count in WORKER_COUNTS:
            workers = self.workers(f"tp{count}", count)
            try:
                for name, steps, n in (
                    ("bench.one", 1, plan.one_n),
                    ("bench.chain10", 10, plan.chain_n),
                ):
                    result = self.batch(workers, name, steps, n)
                    results[(steps, count)] = result
                    self.log(
                        f"throughput {steps}-step, {count} worker(s): "
                        f"{result['steps_per_s']:,.0f} steps/s"
                    )
                if count == 2:
                    # A run of its own under py-spy (its sampling takes CPU from the others).
                    self.batch(
                        workers,
                        "bench.chain10",
                        10,
                        plan.chain_n,
                        on_commit=lambda pid=workers.processes[0].pid: self.start_py_spy(pid),
                    )
                    result = self.batch(workers, "bench.one", 1, plan.bulk_n)
                    self.r["bulk"] = result
                    try:
                        self.churn()
                    except Exception as exc:  # a side measurement: never stop the suite
                        self.notes.append(f"The churn probe failed: {type(exc).__name__}: {exc}")
                    self.log(
                        f"bulk {plan.bulk_n:,}: started in {result['start_seconds']:.1f} s, "
                        f"drained in {result['drain_seconds']:.1f} s"
                    )
            finally:
                workers.stop()

    # -- py-spy on one worker during the 10-step, 2-worker run --------------------------

    def start_py_spy(self, pid: int):
        out = self.logdir / "py-spy.txt"
        command = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--duration",
            "60",
            "--idle",
            "--threads",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ]
        try:
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        except OSError as exc:
            self.notes.append(f"py-spy could not start: {exc}")
            return None
        self.commands.append(
            " ".join(command).replace(str(pid), "<worker pid>").replace(str(self.logdir), "$TMP")
        )
        return process, out

    def finish_py_spy(self, spy) -> None:
        process, out = spy
        process.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            err = "timed out"
        if not out.exists():
            self.notes.append(f"py-spy wrote nothing: {err.strip()[-300:]}")
            return
        self.r["py_spy"] = summarise_py_spy(out.read_text())

    # -- 3. latency ---------------------------------------------------------------------

    def latency(self) -> None:
        """Single executions, one at a time, with one idle worker.

        A NOTIFY from the same process less than claims.COALESCE_SECONDS after the last
        one is not sent (the worker is meant to claim again that long after a notice). So
        the main series spaces its starts (and the send_event after a start) by at least
        SPACED[0] s: each one sends its own notice. A short series of starts 0-50 ms
        apart shows what happens when notices are coalesced.
        """
        plan = self.plan
        self.vacuum(self.url(SUITE_DB))
        workers = self.workers("lat", 1)
        try:
            time.sleep(0.5)
            spaced = self.one_step_series(workers, plan.latency_samples, *SPACED)
            self.log(f"latency: {plan.latency_samples} spaced 1-step samples")
            close = self.one_step_series(workers, plan.coalesced_samples, 0.0, 0.05)
            self.log(f"latency: {plan.coalesced_samples} back-to-back 1-step samples")
            events = self.event_series(workers, plan.event_samples)
            self.log(f"latency: {plan.event_samples} send_event samples")
        finally:
            workers.stop()
        self.r["latency"] = {
            "start -> first step begins": spaced["first_step"],
            "start -> 1-step workflow completed": spaced["complete"],
            "start() call -> client sees completed": spaced["client"],
            "send_event returned -> resumed attempt begins": events["resumed"],
            "send_event returned -> resumed attempt completed": events["resumed_done"],
            "send_event() call itself": events["send_call"],
        }
        self.r["send_event_sql"] = (
            statistics.mean(events["send_statements"] or [0]),
            statistics.mean(events["send_commits"] or [0]),
        )
        self.r["latency_coalesced"] = {
            "start -> first step begins": close["first_step"],
            "start -> 1-step workflow completed": close["complete"],
        }

    def wait_for(self, execution_id, statuses: tuple[str, ...], workers: Workers) -> float:
        """Poll the execution's status every 1 ms until it is one of `statuses`."""
        from django_durable.models import WorkflowExecution

        began = time.perf_counter()
        while True:
            status = WorkflowExecution.objects.values_list("status", flat=True).get(id=execution_id)
            if status in statuses:
                return time.perf_counter()
            if status not in ("pending", "running", "waiting"):
                raise BenchError(f"{execution_id} is {status}.{workers.logs()}")
            if time.perf_counter() - began > 30:
                workers.check_alive()
                raise BenchError(f"{execution_id} took over 30 s.{workers.logs()}")
            time.sleep(0.001)

    def one_step_series(self, workers: Workers, samples: int, low: float, high: float) -> dict:
        import django_durable
        from django_durable.models import StepExecution, WorkflowExecution

        out = {"first_step": [], "complete": [], "client": []}
        last_start = 0.0
        for index in range(self.plan.warmup + samples):
            # The pause runs from the previous start (its NOTIFY), not from its end.
            gap = random.uniform(low, high)
            time.sleep(max(0.0, last_start + gap - time.perf_counter()))
            began = last_start = time.perf_counter()
            execution_id = django_durable.start("bench.one", {})
            seen = self.wait_for(execution_id, ("completed",), workers)
            if index < self.plan.warmup:
                continue
            created, done = WorkflowExecution.objects.values_list("created_at", "completed_at").get(
                id=execution_id
            )
            step_began = (
                StepExecution.objects.filter(execution_id=execution_id)
                .order_by("started_at")
                .values_list("started_at", flat=True)[0]
            )
            out["first_step"].append((step_began - created).total_seconds() * 1000)
            out["complete"].append((done - created).total_seconds() * 1000)
            out["client"].append((seen - began) * 1000)
        return out

    def event_series(self, workers: Workers, samples: int) -> dict:
        from django.db import connection
        from django.utils import timezone

        import django_durable
        from django_durable.models import StepExecution

        out = {
            "resumed": [],
            "resumed_done": [],
            "send_call": [],
            "send_statements": [],
            "send_commits": [],
        }
        for index in range(self.plan.warmup + samples):
            began = time.perf_counter()
            execution_id = django_durable.start("bench.wait", {})
            self.wait_for(execution_id, ("waiting",), workers)
            # Idle again, and the start's NOTIFY far enough back for send_event's own.
            time.sleep(max(0.0, began + random.uniform(*SPACED) - time.perf_counter()))
            counter = SQLCounter()
            called = time.perf_counter()
            with counter.counting(connection):
                django_durable.send_event(execution_id, "go", index)
            sent = timezone.now()
            call_ms = (time.perf_counter() - called) * 1000
            self.wait_for(execution_id, ("completed",), workers)
            if index < self.plan.warmup:
                continue
            attempt = (
                StepExecution.objects.filter(execution_id=execution_id)
                .order_by("-started_at")
                .values_list("started_at", "completed_at", "status")[0]
            )
            if attempt[2] != "completed":
                raise BenchError(f"{execution_id}: the resumed attempt is {attempt[2]}")
            out["resumed"].append((attempt[0] - sent).total_seconds() * 1000)
            out["resumed_done"].append((attempt[1] - sent).total_seconds() * 1000)
            out["send_call"].append(call_ms)
            out["send_statements"].append(counter.tally.statement_count)
            out["send_commits"].append(counter.tally.writing_transactions)
        return out

    # -- 4. cost per step: length, context size (in-process) ------------------------

    def inprocess(self, name: str, steps: int, n: int, make_input=dict) -> dict:
        from django.db import connection

        from django_durable import starting, testing

        self.vacuum(self.url(SUITE_DB))
        for _ in range(n):
            starting.start(name, make_input())
        lsn = self.scalar("SELECT pg_current_wal_insert_lsn()")
        counter = SQLCounter()
        cpu = time.process_time()
        began = time.perf_counter()
        with counter.counting(connection):
            attempts = testing.run_until_idle(max_steps=2 * n * steps + 10)
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu
        wal = self.scalar("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", [lsn])
        if attempts != n * steps:
            raise BenchError(f"{name}: ran {attempts} attempts, expected {n * steps}")
        total = n * steps
        return {
            "n": n,
            "steps": steps,
            "ms_per_step": 1000 * seconds / total,
            "steps_per_s": total / seconds,
            "python_share": cpu / seconds,
            "statements_per_step": counter.tally.statement_count / total,
            "commits_per_step": counter.tally.writing_transactions / total,
            "wal_bytes_per_step": float(wal) / total,
        }

    def churn(self) -> None:
        """The idle claim's plan with the dead rows the runs so far left (this server may
        run without autovacuum), then after a VACUUM."""
        from bench.bench_scale import capture, explain
        from django_durable import claims, ids

        def claim():
            return claims.claim_and_start("bench-churn", ["default"], ids.time_ordered())

        def probe() -> dict:
            sql, params = capture(claim)[0]
            plan = explain("claim, idle", sql, params, 5)
            return {"buffers": plan.buffers, "ms": plan.median_ms}

        stats = "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = %s"
        import psycopg

        with psycopg.connect(self.url(SUITE_DB), autocommit=True) as db:
            live, dead = db.execute(stats, ["durable_execution"]).fetchone()
        before = probe()
        self.vacuum(self.url(SUITE_DB))
        self.r["churn"] = {"live": live, "dead": dead, "before": before, "after": probe()}

    def cost(self) -> None:
        lengths = self.r["length"] = {}
        names = {1: "bench.one", 10: "bench.chain10", 100: "bench.chain100"}
        for steps, n in self.plan.length_n.items():
            lengths[steps] = self.inprocess(names[steps], steps, n)
            self.log(f"in-process {steps}-step: {lengths[steps]['ms_per_step']:.2f} ms/step")
        contexts = self.r["context"] = {0: lengths[10]}
        for size, n in self.plan.context_n.items():
            # Random hex: incompressible, so TOAST's compression cannot hide the bytes.
            contexts[size] = self.inprocess(
                "bench.chain10", 10, n, lambda size=size: {"blob": secrets.token_hex(size // 2)}
            )
            self.log(
                f"in-process 10-step, {size:,} B context: "
                f"{contexts[size]['wal_bytes_per_step']:,.0f} WAL bytes/step"
            )

    def scale(self) -> None:
        command = [sys.executable, "bench/bench_scale.py", *self.plan.scale_args]
        env = dict(os.environ)
        env["DATABASE_URL"] = self.admin_url
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.commands.append(f"DATABASE_URL={self.admin_url} python " + " ".join(command[1:]))
        try:
            output = self.run(command, env=env, timeout=900, record=False).stdout
        except subprocess.CalledProcessError as exc:
            self.notes.append(
                f"bench_scale.py failed (exit {exc.returncode}): "
                f"{(exc.stderr or '').strip()[-500:]}"
            )
            return
        (self.logdir / "bench_scale.txt").write_text(output)
        summary = output.split("#" * 88, 1)[-1].strip()
        self.r["scale"] = summary
        self.log("bench_scale.py done")

    def ids(self) -> None:
        command = [sys.executable, "bench/bench_ids.py", *self.plan.ids_args]
        env = {**os.environ, "DATABASE_URL": self.admin_url}
        self.commands.append(f"DATABASE_URL={self.admin_url} python " + " ".join(command[1:]))
        self.r["ids"] = self.run(command, env=env, timeout=900, record=False).stdout.strip()
        self.log("bench_ids.py done")

    # -- 5. peers ----------------------------------------------------------------------

    def peer_process(self, script: str, url: str, args: list[str], log: str):
        path = PEERS / script
        self.commands.append(f"python bench/peers/{script} <url> " + " ".join(args))
        out = open(self.logdir / log, "w")
        process = subprocess.Popen(
            [sys.executable, str(path), url, *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        return process

    def peer_command(self, script: str, url: str, args: list[str]) -> str:
        self.commands.append(f"python bench/peers/{script} <url> " + " ".join(args))
        return self.run(
            [sys.executable, str(PEERS / script), url, *args], timeout=300, record=False
        ).stdout

    @staticmethod
    def stop_processes(processes: list[subprocess.Popen]) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def procrastinate(self) -> None:
        import psycopg

        script = "procrastinate_peer.py"
        url = self.url(PROCRASTINATE_DB)
        results = self.r["procrastinate"] = {}
        self.recreate(PROCRASTINATE_DB)
        processes = []
        try:
            self.peer_command(script, url, ["schema"])
            db = psycopg.connect(url, autocommit=True)
            for index in range(PEER_WORKERS):
                processes.append(
                    self.peer_process(
                        script,
                        url,
                        ["worker", f"p{index}", str(CONCURRENCY)],
                        f"procrastinate-{index}.log",
                    )
                )
            give_up = time.monotonic() + 60
            while db.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] < len(
                processes
            ):
                if time.monotonic() > give_up or any(p.poll() is not None for p in processes):
                    raise BenchError("procrastinate workers did not start: " + self.peer_logs())
                time.sleep(0.05)
            time.sleep(0.5)
            for steps, n in ((1, self.plan.one_n), (10, self.plan.chain_n)):
                first_id = db.execute(
                    "SELECT coalesce(max(id), 0) FROM procrastinate_jobs"
                ).fetchone()[0]
                self.vacuum(url)
                self.peer_command(script, url, ["defer", str(n), str(steps)])
                began = time.monotonic()
                total = n * steps
                while True:
                    done, bad = db.execute(
                        "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
                        "count(*) FILTER (WHERE status IN ('failed', 'aborted', 'cancelled')) "
                        "FROM procrastinate_jobs WHERE id > %s",
                        [first_id],
                    ).fetchone()
                    if bad:
                        raise BenchError(f"procrastinate: {bad} jobs failed.{self.peer_logs()}")
                    if done >= total:
                        break
                    if time.monotonic() - began > 120 + total / 50:
                        raise BenchError(f"procrastinate timed out ({done}/{total})")
                    time.sleep(0.02)
                seconds = db.execute(
                    "SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded') "
                    "- min(at) FILTER (WHERE type = 'started')) FROM procrastinate_events "
                    "WHERE job_id > %s",
                    [first_id],
                ).fetchone()[0]
                results[steps] = {"n": n, "steps_per_s": total / float(seconds)}
                self.log(
                    f"procrastinate {steps}-step: {results[steps]['steps_per_s']:,.0f} steps/s"
                )
            db.close()
        finally:
            self.stop_processes(processes)
            self.drop(PROCRASTINATE_DB)

    def dbos(self) -> None:
        import psycopg

        script = "dbos_peer.py"
        url = self.url(DBOS_DB)
        results = self.r["dbos"] = {}
        self.recreate(DBOS_DB)
        processes = []
        try:
            self.peer_command(script, url, ["migrate"])
            db = psycopg.connect(url, autocommit=True)
            for steps in (1, 10):  # the N of our in-process "workflow length" runs
                n = self.plan.length_n[steps]
                out = json.loads(
                    self.peer_command(script, url, ["direct", str(n), str(steps), "1"])
                    .strip()
                    .splitlines()[-1]
                )
                results[("direct", steps)] = {
                    "n": n,
                    "steps_per_s": n * steps / out["seconds"],
                    "ms_per_step": 1000 * out["seconds"] / (n * steps),
                    "python_share": out["cpu_seconds"] / out["seconds"],
                }
            for index in range(PEER_WORKERS):
                processes.append(
                    self.peer_process(
                        script,
                        url,
                        ["worker", f"d{index}", str(CONCURRENCY), str(DBOS_POLL_SECONDS)],
                        f"dbos-{index}.log",
                    )
                )
            give_up = time.monotonic() + 60
            while not all(
                "ready" in (self.logdir / f"dbos-{i}.log").read_text()
                for i in range(len(processes))
            ):
                if time.monotonic() > give_up or any(p.poll() is not None for p in processes):
                    raise BenchError("DBOS workers did not start: " + self.peer_logs())
                time.sleep(0.05)
            time.sleep(0.5)
            for steps, n in ((1, self.plan.one_n), (10, self.plan.chain_n)):
                since_ms = int(time.time() * 1000) - 1
                self.vacuum(url)
                self.peer_command(script, url, ["enqueue", str(n), str(steps)])
                began = time.monotonic()
                while True:
                    done, bad = db.execute(
                        "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), "
                        "count(*) FILTER (WHERE status IN ('ERROR', 'CANCELLED', "
                        "'MAX_RECOVERY_ATTEMPTS_EXCEEDED')) FROM dbos.workflow_status "
                        "WHERE queue_name = 'bench' AND created_at >= %s",
                        [since_ms],
                    ).fetchone()
                    if bad:
                        raise BenchError(f"DBOS: {bad} workflows failed.{self.peer_logs()}")
                    if done >= n:
                        break
                    if time.monotonic() - began > 120 + n * steps / 50:
                        raise BenchError(f"DBOS timed out ({done}/{n})")
                    time.sleep(0.02)
                ms = db.execute(
                    "SELECT max(completed_at) - min(started_at_epoch_ms) FROM "
                    "dbos.workflow_status WHERE queue_name = 'bench' AND created_at >= %s",
                    [since_ms],
                ).fetchone()[0]
                results[("queue", steps)] = {"n": n, "steps_per_s": n * steps / (ms / 1000)}
                self.log(
                    f"DBOS queue {steps}-step: "
                    f"{results[('queue', steps)]['steps_per_s']:,.0f} steps/s"
                )
            db.close()
        finally:
            self.stop_processes(processes)
            self.drop(DBOS_DB)

    def peer_logs(self) -> str:
        text = []
        for path in sorted(self.logdir.glob("*.log")):
            if not path.name.startswith("worker-"):
                text.append(f"\n--- {path.name}\n{path.read_text(errors='replace')[-2000:]}")
        return "".join(text)

    # -- 6. pyinstrument ------------------------------------------------------------------

    def profile(self) -> None:
        from django_durable import starting, testing

        try:
            from pyinstrument import Profiler
        except ImportError as exc:
            self.notes.append(f"pyinstrument is not installed: {exc}")
            return
        n = self.plan.profile_n
        for _ in range(n):
            starting.start("bench.chain10", {})
        profiler = Profiler(interval=0.0002)
        cpu = time.process_time()
        began = time.perf_counter()
        profiler.start()
        attempts = testing.run_until_idle(max_steps=20 * n + 10)
        profiler.stop()
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu
        (self.logdir / "pyinstrument.txt").write_text(
            profiler.output_text(unicode=False, color=False, show_all=False)
        )
        self.r["pyinstrument"] = summarise_pyinstrument(
            profiler.last_session, attempts, seconds, cpu
        )
        self.log("pyinstrument done")

    # -- the whole run ------------------------------------------------------------------

    def main(self) -> int:
        self.connect_admin()
        self.describe()
        clients = tuple(sorted({count * CONCURRENCY for count in WORKER_COUNTS}))
        phases = [
            ("pgbench", lambda: self.pgbench(clients, "pgbench")),
            ("django", self.setup_django),
            ("throughput", self.throughput),
            ("latency", self.latency),
            ("cost", self.cost),
            ("profile", self.profile),
        ]
        if not self.args.no_peers:
            phases += [("procrastinate", self.procrastinate), ("dbos", self.dbos)]
        if not self.args.no_scale:
            phases += [("scale", self.scale), ("ids", self.ids)]
        if not self.args.quick:
            phases.append(
                (
                    "pgbench_end",
                    lambda: self.pgbench((PEER_WORKERS * CONCURRENCY,), "pgbench_end"),
                )
            )
        failed = False
        try:
            for name, phase in phases:
                try:
                    phase()
                except (BenchError, subprocess.SubprocessError, OSError, Exception) as exc:
                    detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else ""
                    message = f"{name}: {type(exc).__name__}: {exc} {detail or ''}".strip()
                    self.notes.append(f"Phase {message[:1500]}")
                    print(f"\n{message}\n{traceback.format_exc()}", file=sys.stderr)
                    failed = True
                    if name == "django":
                        break
        finally:
            self.scan_logs()
            self.r["machine"]["load_end"] = os.getloadavg()
            if git_state() != self.r["machine"]["git"]:
                self.notes.insert(
                    0,
                    f"**The library changed during this run**: `{self.r['machine']['git']}` at "
                    f"the start, `{git_state()}` at the end. Each phase ran the code on disk "
                    "when its processes started.",
                )
            self.r["seconds"] = time.perf_counter() - self.began
            self.args.output.write_text(render(self))
            self.log(f"wrote {self.args.output}")
            self.cleanup()
        return 1 if failed else 0

    def cleanup(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.admin is not None:
            if not self.args.keep:
                self.drop(SUITE_DB)
            for database in (PGBENCH_DB, PROCRASTINATE_DB, DBOS_DB):
                self.drop(database)
            self.admin.close()
        if self.args.keep:
            print(f"Logs: {self.logdir}; kept {SUITE_DB}")
        else:
            for path in sorted(self.logdir.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            self.logdir.rmdir()


# -- profiles ---------------------------------------------------------------------------


def frame_group(path: str | None) -> str:
    """Which layer a frame belongs to (absolute paths from pyinstrument, paths relative
    to sys.path from py-spy)."""
    path = path or ""

    def under(package: str) -> bool:
        return bool(re.search(rf"(^|/){package}/", path))

    if under("psycopg") or under("psycopg_binary"):
        return "psycopg (driver; includes waiting for PostgreSQL)"
    if under("django_durable"):
        return "django_durable"
    if under("django/db"):
        return "Django ORM / db backend"
    if under("django") or under("asgiref"):
        return "Django (other), asgiref"
    if under("bench"):
        return "bench workflows (the no-op steps)"
    if re.search(r"(^|/)(json/|uuid\.py|datetime\.py|zoneinfo/)", path):
        return "stdlib: json, uuid, datetime"
    if re.search(r"(^|/)(threading|queue|selectors)\.py", path):
        return "threads: waiting for work"
    return "other Python (stdlib, interpreter)"


def summarise_pyinstrument(session, attempts: int, seconds: float, cpu: float) -> dict:
    root = session.root_frame()
    self_by_function: Counter = Counter()
    self_by_group: Counter = Counter()
    total_by_function: Counter = Counter()

    def walk(frame, stack: frozenset) -> None:
        children = [child for child in frame.children if not child.is_synthetic]
        own = frame.time - sum(child.time for child in children)
        path = frame.file_path or ""
        key = f"{frame.function} ({frame.file_path_short or path}:{frame.line_no})"
        self_by_function[key] += own
        self_by_group[frame_group(path)] += own
        if key not in stack:
            total_by_function[key] += frame.time
        for child in children:
            walk(child, stack | {key})

    if root is not None:
        walk(root, frozenset())
    total = sum(self_by_group.values()) or 1.0
    ours = {k: v for k, v in total_by_function.items() if "django_durable" in k}
    return {
        "attempts": attempts,
        "seconds": seconds,
        "cpu_share": cpu / seconds,
        "profiled_seconds": total,
        "groups": [(group, t / total) for group, t in self_by_group.most_common()],
        "self": [(k, t / total) for k, t in self_by_function.most_common(12)],
        "ours_cumulative": sorted(ours.items(), key=lambda kv: -kv[1])[:12],
    }


IDLE_STATE = "waiting for work"
DB_STATE = "in psycopg: sending to / waiting for PostgreSQL"
PYTHON_STATE = "Python"


def summarise_py_spy(raw: str) -> dict:
    """py-spy's raw (collapsed) stacks of one worker, `--idle --threads`: per kind of
    thread, what its samples were doing at their leaf frame."""
    states: dict[str, Counter] = {}
    busy_groups: Counter = Counter()
    functions: Counter = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        name = frames[0].split(": ", 1)[-1]
        if name in ("durable-listener", "durable-heartbeat"):
            role = "listener and heartbeat"
        elif name.startswith("durable-"):
            role = "runner threads"
        elif name == "MainThread":
            role = "dispatcher (main thread)"
        else:
            role = f"other ({name})"
        match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frames[-1])
        function, path = (match.group(1), match.group(2)) if match else (frames[-1], "")
        group = frame_group(path)
        if group == "threads: waiting for work" or function.endswith("sleep"):
            state = IDLE_STATE
        elif "psycopg" in group:
            state = IDLE_STATE if "notifies" in stack else DB_STATE
        else:
            state = PYTHON_STATE
        states.setdefault(role, Counter())[state] += count
        if role == "runner threads" and state == PYTHON_STATE and len(frames) > 1:
            # The deepest frame of our own or Django's code: who asked for the work.
            busy_groups[group] += count
            functions[f"{function} ({path})"] += count
    return {
        "states": {role: dict(counter) for role, counter in states.items()},
        "busy_groups": busy_groups.most_common(),
        "functions": functions.most_common(12),
    }


# -- RESULTS.md -------------------------------------------------------------------------


def render(suite: Suite) -> str:  # noqa: C901 - a report, top to bottom
    r, plan = suite.r, suite.plan
    out: list[str] = []
    add = out.append
    machine = r.get("machine", {})
    mode = "--quick" if suite.args.quick else "default"
    add("# Benchmark results: bench/suite.py\n")
    add(
        "Generated by `bench/suite.py` (do not edit by hand; re-run it). A measurement, not "
        "a test: the figures are this machine's on the day, and a shared 2-core VM moves "
        "timings by tens of percent from run to run; counts are exact.\n"
    )
    add(
        f"{machine.get('date', '?')}, {mode} run, {r.get('seconds', 0):.0f} s, git "
        f"`{machine.get('git', '?')}`.\n"
    )
    add("## Machine and versions\n")
    add("| | |\n| --- | --- |")
    if machine:
        add(
            f"| machine | {machine['cores']} cores ({machine['cpu']}), "
            f"{machine['ram_gib']:.1f} GiB RAM, Linux {machine['kernel']} |"
        )
        load_end = machine.get("load_end", (math.nan,) * 3)
        start = ", ".join(f"{x:.2f}" for x in machine["load_start"])
        end = ", ".join(f"{x:.2f}" for x in load_end)
        add(f"| load average (1/5/15 min) | start {start}; end {end} |")
    for name, value in r.get("versions", {}).items():
        add(f"| {name} | {value} |")
    settings = r.get("pg_settings", {})
    if settings:
        add(
            "| PostgreSQL settings | "
            + ", ".join(f"`{k}={v}`" for k, v in settings.items())
            + "; server on the same machine (loopback) |"
        )
    add(
        f"| django-durable workers | `durable_worker --concurrency {CONCURRENCY}` per process, "
        "settings `bench.bench_settings` (example project, `poll_interval` 1 s, LISTEN/NOTIFY), "
        "Django's default `CONN_MAX_AGE = 0` |"
    )
    add("")

    # headline
    add("## Headline and targets\n")
    tp = r.get("throughput", {})
    headline = tp.get((10, 2))
    limit8 = suite.limit(PEER_WORKERS * CONCURRENCY)
    lat = r.get("latency", {})
    complete = lat.get("start -> 1-step workflow completed")
    proc = r.get("procrastinate", {})
    dbos = r.get("dbos", {})
    add("| target | measured | met? |\n| --- | --- | --- |")
    if headline:
        steps = headline["steps_per_s"]
        add(
            f"| 10-step no-op workflows, 2 worker processes: >= {TARGET_STEPS:,} steps/s | "
            f"{steps:,.0f} steps/s | {'yes' if steps >= TARGET_STEPS else 'NO'} |"
        )
        if limit8:
            add(
                f"| ... and >= {TARGET_PGBENCH_SHARE:.0%} of `pgbench -N` tps with "
                f"{PEER_WORKERS * CONCURRENCY} clients (stretch 35%) | "
                f"{100 * steps / limit8:.2f}% "
                f"of {limit8:,.0f} tps | "
                f"{'yes' if steps >= TARGET_PGBENCH_SHARE * limit8 else 'NO'} |"
            )
        for peer, figure in (
            ("procrastinate", proc.get(10, {}).get("steps_per_s")),
            ("DBOS (queue)", dbos.get(("queue", 10), {}).get("steps_per_s")),
        ):
            if figure:
                add(
                    f"| >= {TARGET_PEER_RATIO:.0f}x {peer}, same workload | "
                    f"{ratio(steps, figure)} ({figure:,.0f} steps/s) | "
                    f"{'yes' if steps >= TARGET_PEER_RATIO * figure else 'NO'} |"
                )
            else:
                add(f"| >= {TARGET_PEER_RATIO:.0f}x {peer} | not measured (see below) | — |")
    if complete:
        p50, p99 = percentile(complete, 50), percentile(complete, 99)
        add(
            f"| 1-step start -> complete, idle worker: p50 < {TARGET_P50_MS:.0f} ms | "
            f"{p50:.2f} ms | {'yes' if p50 < TARGET_P50_MS else 'NO'} |"
        )
        add(
            f"| ... p99 < {TARGET_P99_MS:.0f} ms | {p99:.2f} ms | "
            f"{'yes' if p99 < TARGET_P99_MS else 'NO'} |"
        )
    add("")

    # 1. pgbench
    add("## 1. The physical limit: `pgbench -N`\n")
    add(
        f"`pgbench -i -s {plan.pgbench_scale}` into the scratch database `{PGBENCH_DB}` "
        f"(dropped after), then `pgbench -N -T {plan.pgbench_seconds}` (simple-update: "
        "UPDATE accounts, SELECT, INSERT history, one commit per transaction) with as many "
        "clients as the worker threads of the throughput runs. Every throughput figure below "
        "is also given as a share of the tps with the same number of clients.\n"
    )
    add("| clients (`-c`) | `-j` | tps | latency avg |\n| --- | --- | --- | --- |")
    for key, label in (("pgbench", "start of the run"), ("pgbench_end", "end of the run")):
        for clients, row in sorted(r.get(key, {}).items()):
            add(
                f"| {clients} ({label}) | {min(clients, machine.get('cores') or 2)} | "
                f"{row['tps']:,.0f} | {fmt(row['latency_ms'], 2, ' ms')} |"
            )
    add("")

    # 2. throughput
    add("## 2. Throughput\n")
    add(
        f"W fresh `durable_worker` processes x {CONCURRENCY} threads, idle; the suite starts "
        "N executions in one transaction and waits until all are completed. **steps/s** = "
        "N x steps / (first claim -> last completion), from the executions' `started_at` and "
        "`completed_at`. *drain* is the wall time from the commit of the starts until the "
        "suite saw them all completed (checked every 20 ms). *CPU busy* is the whole "
        "machine's (2 cores) over the drain; *worker CPU* and *PostgreSQL CPU* are the CPU "
        "time (user + system, all threads) of the worker processes and of the server's "
        "processes per step.\n"
    )
    add(
        "| workflow | workers x threads | N | steps/s | share of pgbench -N (same clients) "
        "| drain | CPU busy | worker CPU / step | PostgreSQL CPU / step |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for (steps, count), row in sorted(tp.items()):
        clients = count * CONCURRENCY
        add(
            f"| {steps}-step | {count} x {CONCURRENCY} | {row['n']:,} | "
            f"**{row['steps_per_s']:,.0f}** | {share(row['steps_per_s'], suite.limit(clients))} "
            f"of {fmt(suite.limit(clients))} | {row['drain_seconds']:.2f} s | "
            f"{row['machine_cpu']:.0%} | {row['worker_cpu_ms_per_step']:.2f} ms | "
            f"{row['postgres_cpu_ms_per_step']:.2f} ms |"
        )
    bulk = r.get("bulk")
    if bulk:
        add("")
        add(
            f"**Bulk start then drain** ({PEER_WORKERS} x {CONCURRENCY}): {bulk['n']:,} 1-step "
            f"executions started in one transaction in {bulk['start_seconds']:.2f} s "
            f"({1000 * bulk['start_seconds'] / bulk['n']:.2f} ms per `start()`), drained in "
            f"**{bulk['drain_seconds']:.2f} s** from the commit; "
            f"**{bulk['steps_per_s']:,.0f} steps/s** first claim -> last completion "
            f"({share(bulk['steps_per_s'], limit8)} of pgbench -N with "
            f"{PEER_WORKERS * CONCURRENCY} clients); machine CPU busy {bulk['machine_cpu']:.0%}.\n"
        )
    add("")

    # 3. latency
    add("## 3. Latency with an idle worker\n")
    low, high = (1000 * x for x in SPACED)
    add(
        f"One idle `durable_worker --concurrency {CONCURRENCY}` (woken by LISTEN/NOTIFY). "
        f"Samples are taken one at a time after {plan.warmup} uncounted warm-up samples, "
        f"each start {low:.0f}-{high:.0f} ms (random) after the previous one: the library "
        "coalesces the NOTIFYs a process sends less than `claims.COALESCE_SECONDS` (50 ms) "
        "apart, so spacing the starts gives each its own notice (the back-to-back series "
        "below shows the other case). Times from the engine's rows (one clock: every "
        "process is on this machine): *start* is the execution's `created_at` (set inside "
        "`start()`, before its INSERT and commit), *first step begins* the first attempt's "
        "`started_at`, *completed* the execution's `completed_at`. For `send_event` the "
        "suite parks a `bench.wait` execution (one step waiting for the event `go`), calls "
        f"`send_event` {low:.0f}-{high:.0f} ms after the start, and takes the wall clock "
        "when it returns; *resumed attempt begins* is the new attempt's `started_at`. The "
        "client row polls the status every 1 ms from just before `start()` (it includes "
        "`start()`'s own commit and the polling).\n"
    )
    add("| | samples | p50 | p95 | p99 | max |\n| --- | --- | --- | --- | --- | --- |")

    def latency_rows(series: dict) -> None:
        for label, values in series.items():
            if values:
                add(
                    f"| {label} | {len(values):,} | **{percentile(values, 50):.2f} ms** | "
                    f"{percentile(values, 95):.2f} ms | {percentile(values, 99):.2f} ms | "
                    f"{max(values):.2f} ms |"
                )

    latency_rows(lat)
    add("")
    if r.get("send_event_sql"):
        statements, commits = r["send_event_sql"]
        add(
            f"One `send_event` to a parked step sent {statements:.1f} SQL statements "
            f"({commits:.1f} writing transactions) from the caller, then the NOTIFY.\n"
        )
    close = r.get("latency_coalesced", {})
    if close.get("start -> 1-step workflow completed"):
        values = close["start -> 1-step workflow completed"]
        slow = sum(1 for v in values if v > 500)
        add(
            f"**Back-to-back starts** (each 0-50 ms after the previous start, so most "
            f"notices are coalesced away): {slow} of {len(values)} took more than 500 ms.\n"
        )
        add("| | samples | p50 | p95 | p99 | max |\n| --- | --- | --- | --- | --- | --- |")
        latency_rows(close)
        add("")

    # 4. cost per step
    add("## 4. Cost per step\n")
    add(
        "In-process, one thread, one connection: `starting.start()` N executions (not "
        "timed), then `django_durable.testing.run_until_idle()` runs them (it also runs "
        "`run_timers()` before every claim, which a worker does once per poll interval: "
        "in a 1-step workflow those are about half the statements, so the 1-step row "
        "overstates what a worker pays). "
        "Statements are counted with an execute wrapper (`bench/sqlcount.py`); *commits* "
        "are transactions that wrote; *Python share* is the process's CPU time / wall time "
        "(the rest is waiting for PostgreSQL, mostly for commits to be flushed); *WAL* is "
        "`pg_current_wal_insert_lsn()` after minus before, divided by the steps (cluster-"
        "wide: anything else writing on the server at the time is included; full-page "
        "images after a checkpoint too).\n"
    )
    add("### Workflow length\n")
    add(
        "| steps | N | ms / step | steps/s | statements / step | commits / step | "
        "WAL bytes / step | Python share |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for steps, row in sorted(r.get("length", {}).items()):
        add(
            f"| {steps} | {row['n']:,} | {row['ms_per_step']:.2f} | {row['steps_per_s']:,.0f} "
            f"| {row['statements_per_step']:.2f} | {row['commits_per_step']:.2f} | "
            f"{row['wal_bytes_per_step']:,.0f} | {row['python_share']:.0%} |"
        )
    add("")
    add("### Context size (10-step chain)\n")
    add(
        "The input (and so the context every step carries forward) holds a random hex "
        "string, incompressible, so TOAST cannot shrink it; 0 B is the plain chain above.\n"
    )
    add(
        "| context | N | ms / step | statements / step | WAL bytes / step | WAL / context "
        "size |\n| --- | --- | --- | --- | --- | --- |"
    )
    for size, row in sorted(r.get("context", {}).items()):
        add(
            f"| {size:,} B | {row['n']:,} | {row['ms_per_step']:.2f} | "
            f"{row['statements_per_step']:.2f} | {row['wal_bytes_per_step']:,.0f} | "
            f"{(row['wal_bytes_per_step'] / size if size else math.nan):.2f} |".replace("nan", "—")
        )
    add("")
    rows_arg = dict(zip(plan.scale_args[::2], plan.scale_args[1::2], strict=True))
    history_rows = int(rows_arg.get("--rows", 1_000_000))
    add(f"### History: {history_rows:,} executions (bench/bench_scale.py)\n")
    churn = r.get("churn")
    if churn:
        add(
            f"**Churn before vacuum** (this server runs with `autovacuum="
            f"{settings.get('autovacuum', '?')}`): right after the bulk drain, "
            f"`durable_execution` held {churn['live']:,} live and {churn['dead']:,} dead row "
            f"versions; `EXPLAIN (ANALYZE, BUFFERS)` of an idle claim read "
            f"{churn['before']['buffers']:,} buffers ({churn['before']['ms']:.3f} ms), and "
            f"{churn['after']['buffers']:,} ({churn['after']['ms']:.3f} ms) after `VACUUM "
            "ANALYZE`. The suite vacuums its database (and the peers') before every measured "
            "run, as autovacuum would; bench_scale.py measures freshly vacuumed history.\n"
        )
    if r.get("scale"):
        args = " ".join(plan.scale_args) or "(defaults: --rows 1000000 --parked 250000)"
        add(
            f"`bench/bench_scale.py {args}` run by the suite in the same run; its summary as "
            "printed (buffers = shared hit + read of the plan's top node; the full plans "
            "are in its output). See bench/README.md for what it loads.\n"
        )
        add("```text\n" + r["scale"] + "\n```\n")
    else:
        add("Not run in this run (see *Not measured*).\n")
    add("### Attempt ids: random or time-ordered (bench/bench_ids.py)\n")
    if r.get("ids"):
        add(
            "Attempts (`durable_step`) are the table that grows fastest. Their ids (and run "
            "tokens) are time-ordered UUIDs (version 7, `django_durable.ids`); execution ids "
            "stay random, since people type their prefixes. `bench/bench_ids.py "
            f"{' '.join(plan.ids_args) or '(defaults: --rows 3000000 --inserts 20000)'}` "
            "builds two copies of the table's shape with that much history, one keyed by "
            "random and one by time-ordered ids, and inserts into each from 4 connections, "
            "one row per transaction, right after a CHECKPOINT; figures from the server's "
            "counters.\n"
        )
        add("```text\n" + r["ids"] + "\n```\n")
    else:
        add("Not run in this run (see *Not measured*).\n")

    # 5. peers
    add("## 5. Peers, same run, same machine, same server\n")
    add(
        f"Each peer in a scratch database of its own, {PEER_WORKERS} worker processes with "
        f"the same concurrency ({CONCURRENCY}), the same N, the work made runnable in one "
        "transaction while the workers idle, and steps/s over first start -> last "
        "completion from the peer's own rows. Installed with the `bench` extra only.\n\n"
        "- **procrastinate**: one job = one step; a 10-step chain is a job that defers the "
        "next (`remaining - 1`) when it runs. Async no-op task, `listen_notify=True`, "
        "`batch_defer` of N first jobs in one statement; timing from `procrastinate_events` "
        "(`started` -> `succeeded`). Its schema in `durable_peer_procrastinate`.\n"
        "- **DBOS Transact**: `@DBOS.workflow` of 1 or 10 no-op `@DBOS.step`s; N workflows "
        "enqueued in one transaction (`DBOSClient.enqueue_in_transaction`) on a queue with "
        f"`worker_concurrency={CONCURRENCY}` per process and `polling_interval_sec="
        f"{DBOS_POLL_SECONDS}` (DBOS's default is 1 s, which would cap it at 4 workflows "
        "per second per process; its queues are polled, not notified); timing from "
        "`dbos.workflow_status` (`started_at_epoch_ms` -> `completed_at`). *Direct* calls the "
        "workflow function in one thread of one process, no queue, compared with our "
        "in-process `run_until_idle` (one thread). System database `durable_peer_dbos`.\n"
    )
    add(
        "| workload | django-durable | procrastinate | ours / procrastinate | DBOS | "
        "ours / DBOS |\n| --- | --- | --- | --- | --- | --- |"
    )
    direct = r.get("length", {})
    for steps in (1, 10):
        ours = tp.get((steps, PEER_WORKERS), {}).get("steps_per_s")
        p = proc.get(steps, {}).get("steps_per_s")
        d = dbos.get(("queue", steps), {}).get("steps_per_s")
        add(
            f"| {steps}-step, {PEER_WORKERS} workers x {CONCURRENCY} | {fmt(ours)} steps/s | "
            f"{fmt(p)} | {ratio(ours, p)} | {fmt(d)} | {ratio(ours, d)} |"
        )
    for steps in (1, 10):
        ours = direct.get(steps, {}).get("steps_per_s")
        d = dbos.get(("direct", steps), {}).get("steps_per_s")
        add(
            f"| {steps}-step, in-process, 1 thread | {fmt(ours)} steps/s | — | — | "
            f"{fmt(d)} | {ratio(ours, d)} |"
        )
    for steps in (1, 10):
        ours = tp.get((steps, PEER_WORKERS), {}).get("steps_per_s")
        p = proc.get(steps, {}).get("steps_per_s")
        d = dbos.get(("queue", steps), {}).get("steps_per_s")
        limit = limit8
        add(
            f"| share of pgbench -N ({PEER_WORKERS * CONCURRENCY} clients), {steps}-step | "
            f"{share(ours, limit)} | {share(p, limit)} | | {share(d, limit)} | |"
        )
    add("")

    # 6. profile
    add("## 6. Where the time goes\n")
    prof = r.get("pyinstrument")
    if prof:
        add(
            f"**In-process (pyinstrument, 0.2 ms sampling)**: {prof['attempts']:,} attempts of "
            f"10-step workflows in {prof['seconds']:.2f} s on one thread "
            f"({1000 * prof['seconds'] / max(1, prof['attempts']):.2f} ms/step under the "
            f"profiler); the process was on the CPU {prof['cpu_share']:.0%} of the wall "
            "time. Time in psycopg is mostly waiting for PostgreSQL (the driver's C code, "
            "the socket, the commit's flush), attributed to the psycopg frame that called it.\n"
        )
        add("| layer (self time) | share |\n| --- | --- |")
        for group, part in prof["groups"]:
            add(f"| {group} | {part:.0%} |")
        add("")
        add("| top functions by self time | share |\n| --- | --- |")
        for name, part in prof["self"]:
            add(f"| `{name}` | {part:.1%} |")
        add("")
        add("| django_durable functions, cumulative | seconds |\n| --- | --- |")
        for name, secs in prof["ours_cumulative"]:
            add(f"| `{name}` | {secs:.3f} |")
        add("")
    spy = r.get("py_spy")
    if spy and spy["states"]:
        add(
            "**A worker under load (py-spy, `--idle --threads`, 250 Hz)**: one of the two "
            "worker processes during an extra 10-step, 2-worker run (same N, not in the "
            "throughput table: py-spy's sampling takes CPU), from the commit of the starts "
            "to the last completion. Each thread's "
            "samples by what its innermost frame was doing: *waiting for work* (a queue, an "
            "event, a sleep), *in psycopg* (sending a statement and waiting for the reply: "
            "the round trip and the server's work, commit flush included; on a loopback "
            "socket on 2 cores the send itself often waits while the woken backend runs), "
            "*Python* (running, or runnable and waiting for the GIL: py-spy cannot tell "
            "those apart).\n"
        )
        add(
            f"| thread | samples | {IDLE_STATE} | {DB_STATE} | {PYTHON_STATE} |\n"
            "| --- | --- | --- | --- | --- |"
        )
        for role, counts in spy["states"].items():
            total = sum(counts.values()) or 1
            cells = " | ".join(
                f"{counts.get(state, 0) / total:.0%}"
                for state in (IDLE_STATE, DB_STATE, PYTHON_STATE)
            )
            add(f"| {role} | {total:,} | {cells} |")
        busy = sum(c for _, c in spy["busy_groups"]) or 1
        add("")
        add(
            "| runner threads' Python samples, by the layer of the innermost frame | share |"
            "\n| --- | --- |"
        )
        for group, count in spy["busy_groups"]:
            add(f"| {group} | {count / busy:.0%} |")
        add("")
        add("| runner threads' busiest innermost functions (Python) | samples |\n| --- | --- |")
        for name, count in spy["functions"]:
            add(f"| `{name}` | {count:,} |")
        add("")

    # anomalies
    add("## django-durable behaviour worth a look\n")
    seen = False
    values = close.get("start -> 1-step workflow completed", [])
    slow = [v for v in values if v > 500]
    if slow:
        seen = True
        add(
            f"- **A start can wait a whole `poll_interval` (1 s) with an idle worker.** "
            f"{len(slow)} of {len(values)} back-to-back starts (0-50 ms apart) completed "
            f"only after {min(slow):.0f}-{max(slow):.0f} ms. Such a start sends no NOTIFY "
            "(`claims._send` coalesces notices less than `COALESCE_SECONDS` = 50 ms apart), "
            "and the worker that heard the previous notice is meant to claim again 50 ms "
            "after it (`Worker._heard` sets `_recheck_at`). But `_seconds_until_due()` "
            "clears `_recheck_at` as soon as the dispatcher computes its wait; when a runner "
            "thread finishes the previous execution within those 50 ms it sets `_wake`, "
            "the dispatcher wakes early, finds nothing, and its next wait is a full "
            "`poll_interval`: the recheck is lost (read in `django_durable/worker.py` at "
            f"git `{machine.get('git', '?')}`). Spaced starts (the main series) do not "
            "show it."
        )
    scale_p95 = re.search(r"^\s*p95\s+([\d.]+) ms\s+([\d.]+) ms", r.get("scale", ""), re.M)
    if scale_p95 and max(float(scale_p95.group(1)), float(scale_p95.group(2))) > 500:
        seen = True
        add(
            f"- bench_scale.py's own start -> complete p95 ({scale_p95.group(1)} ms empty, "
            f"{scale_p95.group(2)} ms loaded) is the same effect: its samples are 0-200 ms "
            "apart, so some starts fall inside the 50 ms coalescing window."
        )
    if churn and churn["before"]["buffers"] > 10 * max(1, churn["after"]["buffers"]):
        seen = True
        add(
            f"- **The claim's cost grows with dead rows until a vacuum.** After the bulk drain "
            f"the idle claim read {churn['before']['buffers']:,} buffers instead of "
            f"{churn['after']['buffers']:,}: every claimed, handed-over and ended execution "
            "leaves dead entries in the partial `durable_exec_ready` index that the claim's "
            "index scan walks over. With autovacuum on (PostgreSQL's default) this stays "
            "bounded; on a server like this one (autovacuum off), or when vacuum lags behind "
            "a burst, claims and the in-process cost per step slow down."
        )
    if not seen:
        add("- Nothing beyond the figures above.")
    add("")
    add("## Worker logs\n")
    issues = r.get("worker_log_issues")
    if issues:
        add(
            "Lines of the `durable_worker` logs that mention an error, a warning or a "
            "traceback (count, first occurrence):\n"
        )
        for count, example in issues[:20]:
            add(f"- {count} x `{example}`")
    else:
        add("No error, warning or traceback in any `durable_worker` log of this run.")
    add("")

    add("## Not measured, or measured differently\n")
    for note in suite.notes:
        add(f"- {note}")
    add(
        "- Peers' latency (start -> complete) is not measured: the comparison asked for is "
        "throughput. DBOS's queue is polled (here every "
        f"{DBOS_POLL_SECONDS * 1000:.0f} ms), procrastinate's is notified.\n"
        "- SQLite: the suite is PostgreSQL only (bench/bench_steps.py covers SQLite).\n"
        "- WAL per step is cluster-wide (another database's writes at the same time would "
        "be counted), and includes full-page images."
    )
    add("")

    add("## Exact commands\n")
    add("```sh")
    add(
        "DATABASE_URL="
        + suite.admin_url
        + " .venv/bin/python bench/suite.py"
        + (" --quick" if suite.args.quick else "")
        + (" --no-peers" if suite.args.no_peers else "")
        + (" --no-scale" if suite.args.no_scale else "")
    )
    add("```\n")
    add("which ran, in order (`<url>` is the peer's scratch database):\n")
    add("```sh")
    for command in suite.commands:
        add(
            command.replace(sys.executable, "python").replace(
                str(Path(sys.executable).parent) + "/", ".venv/bin/"
            )
        )
    add("```")
    return "\n".join(out) + "\n"


def main() -> int:
    args = parse_args()
    # Stopped with SIGTERM, still stop the workers and drop the databases (finally blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return Suite(args).main()


if __name__ == "__main__":
    sys.exit(main())
