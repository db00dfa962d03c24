#!/usr/bin/env python
"""Benchmark django-durable's claim and wake-up queries against a large execution table.

Run from the repository root (PostgreSQL only):

    DATABASE_URL=postgres://... python bench/bench_scale.py [--rows N] [--parked P]
                                [--samples S] [--concurrency C] [--with-steps] [--keep]

It creates a database of its own, `durable_scale`, on the server DATABASE_URL names,
times start->complete of a 1-step execution on the empty table, bulk-loads N executions
of history (P of them parked), prints EXPLAIN (ANALYZE, BUFFERS) of the claim and of
the queries a worker runs on every poll interval, and times start->complete again. A
measurement, not a test: nothing here passes or fails on a timing. See bench/README.md.
"""

import argparse
import os
import platform
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
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
    poll_until_completed,
)

SCALE_DB = "durable_scale"
QUEUE = "default"
LOAD_CHUNK = 250_000
LATENCY_TARGET = 1.25  # the loaded median may be at most 25% above the empty one
# Names of the loaded history. None is registered: nothing loaded is ever runnable, so no
# worker runs them; they only make durable_exec_workflow look like a real one.
HISTORY_NAMES = ("orders.fulfil", "billing.invoice", "reports.daily", "mail.digest")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, metavar="N", help="executions loaded (1,000,000)"
    )
    parser.add_argument(
        "--parked",
        type=int,
        default=250_000,
        metavar="P",
        help="of which parked (250,000): half waiting for events (no run_at), half "
        "scheduled starts and sleeps (run_at days ahead); the rest completed",
    )
    parser.add_argument(
        "--samples", type=int, default=50, metavar="S", help="latency samples per table state"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        metavar="W",
        help="executions run before each latency series and not counted (default 3)",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=2,
        metavar="C",
        help="threads of the one durable_worker (default 2)",
    )
    parser.add_argument(
        "--explain-repeats",
        type=int,
        default=5,
        metavar="R",
        help="EXPLAIN ANALYZE runs per query; the median execution time is reported (5)",
    )
    parser.add_argument(
        "--with-steps",
        action="store_true",
        help="also load one durable_step row per completed execution (slow)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and the worker logs afterwards"
    )
    args = parser.parse_args()
    if min(args.rows, args.samples, args.concurrency, args.explain_repeats) < 1:
        parser.error("--rows, --samples, --concurrency and --explain-repeats must be >= 1")
    if not 0 <= args.parked <= args.rows or args.warmup < 0:
        parser.error("--parked must be between 0 and --rows, --warmup at least 0")
    return args


# -- the database ----------------------------------------------------------------------


class ScaleDatabase:
    """A scratch database (`name`) on the server of DATABASE_URL, which is used only to
    create and drop it. PostgreSQL only: these benches measure its plans."""

    def __init__(self, url: str | None, keep: bool, name: str = SCALE_DB):
        script = Path(sys.argv[0]).name
        if not url:
            sys.exit(f"{script} needs PostgreSQL: set DATABASE_URL=postgres://...")
        parts = urlsplit(url)
        if parts.scheme not in POSTGRES_SCHEMES:
            sys.exit(
                f"{script} measures PostgreSQL's plans only; DATABASE_URL is "
                f"{parts.scheme!r}. SQLite (a development database) is not supported."
            )
        if parts.path.strip("/") == name:
            sys.exit(f"DATABASE_URL must name another database: the bench drops {name}.")
        self.admin_url, self.name, self.keep = url, name, keep
        self.url = parts._replace(path=f"/{name}").geturl()
        self.admin = None

    def create(self) -> None:
        import psycopg

        self.admin = psycopg.connect(self.admin_url, autocommit=True)
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.execute(f'CREATE DATABASE "{self.name}"')

    def describe(self) -> str:
        version = self.admin.execute("SHOW server_version").fetchone()[0]
        buffers = self.admin.execute("SHOW shared_buffers").fetchone()[0]
        where = urlsplit(self.admin_url)
        return (
            f"PostgreSQL {version.split()[0]} ({self.name} on {where.hostname}:{where.port}, "
            f"shared_buffers {buffers})"
        )

    def drop(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.admin is None:
            return
        if self.keep:
            print(f"Kept the database: {self.url}")
        else:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


# The columns of a finished (or parked) execution, as the history loaders of
# bench_overview, bench_insights and bench_graph_queries write them.
INSERT_HISTORY = """
INSERT INTO durable_execution (
    id, workflow_name, workflow_version, status, queue, run_queue, priority, input, context,
    error, current_step, attempt, step_seq, recoveries, created_at, started_at, completed_at,
    compensation_results, compensation_plan, kind, root_id, ready
)
"""


def setup_django(database: ScaleDatabase) -> None:
    os.environ["DATABASE_URL"] = database.url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ.pop("DURABLE_BENCH_COUNT_FILE", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# -- latency: start -> complete with one idle worker -----------------------------------


@dataclass
class Latency:
    rows: int  # executions in the table while measuring
    latencies: list[float] = field(default_factory=list)
    pickups: list[float] = field(default_factory=list)  # created_at -> started_at
    runs: list[float] = field(default_factory=list)  # started_at -> completed_at
    poll_seconds: float = 0.0
    load_average: float = 0.0  # the machine's 1-minute load average at the end
    checkpoints: int = 0  # server checkpoints (any database) during the samples

    def ms(self, values: list[float] | None = None) -> list[float]:
        return [1000 * value for value in (self.latencies if values is None else values)]


def table_rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM durable_execution")
        return cursor.fetchone()[0]


def checkpoints() -> int:
    """Checkpoints the server has run: one during a latency series competes with its
    commits for the disk."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        return cursor.fetchone()[0]


def measure_latency(tag: str, args: argparse.Namespace, logdir: Path) -> Latency:
    """Start->complete of single `bench.one` executions, each started with
    `django_durable.start` (whose NOTIFY wakes the idle worker), its row polled every
    1 ms until completed; a random 0-200 ms pause between samples."""
    import django_durable
    from django_durable.models import WorkflowExecution

    result = Latency(rows=table_rows())
    workers = Workers(tag, 1, args.concurrency, logdir)
    polls, polling = 0, 0.0
    try:
        workers.wait_until_registered()
        time.sleep(1.0)  # let it settle: listener connected, dispatcher waiting
        checkpoints_before = checkpoints()
        for sample in range(args.warmup + args.samples):
            time.sleep(random.uniform(0.0, 0.2))
            began = time.perf_counter()
            execution_id = django_durable.start("bench.one", {})
            polls += poll_until_completed(execution_id, began, workers)
            ended = time.perf_counter()
            polling += ended - began
            if sample < args.warmup:
                continue
            result.latencies.append(ended - began)
            execution = WorkflowExecution.objects.get(id=execution_id)
            result.pickups.append((execution.started_at - execution.created_at).total_seconds())
            result.runs.append((execution.completed_at - execution.started_at).total_seconds())
        result.poll_seconds = polling / polls
        result.load_average = os.getloadavg()[0]
        result.checkpoints = checkpoints() - checkpoints_before
    finally:
        workers.stop()
    return result


def report_latency(title: str, result: Latency) -> None:
    ms = result.ms()
    print(
        f"\n{title}: {len(ms)} samples, {result.rows:,} executions in the table\n"
        f"  start->complete median {statistics.median(ms):.1f} ms, p95 {p95(ms):.1f} ms, "
        f"min {min(ms):.1f}, max {max(ms):.1f} "
        f"(~{1000 * result.poll_seconds:.2f} ms per poll of the row)\n"
        f"  pickup (created_at -> started_at) median "
        f"{statistics.median(result.ms(result.pickups)):.1f} ms, "
        f"run (started_at -> completed_at) median "
        f"{statistics.median(result.ms(result.runs)):.1f} ms; load average "
        f"{result.load_average:.2f}, {result.checkpoints} server checkpoint(s) meanwhile"
    )


# -- the history: set-based bulk load ---------------------------------------------------

# Row g of N is parked when floor(g*P/N) steps up at g: P rows spread evenly among the
# others, as parked executions are among finished ones in a real table. The j-th parked
# row (j = floor(g*P/N)) waits for an event when j is even (no run_at), is a start
# scheduled ahead (pending) when j % 4 = 1 and sleeps (waiting) when j % 4 = 3: run_at
# 1-30 days ahead. Every other row completed. created_at grows with g over 90 days, as in
# a table filled over time. The workflow name is drawn at random (w), apart from g so it
# does not line up with the parked rows; the first workflow has a timeout, so a deadline
# (120 days after creation: never passed).
LOAD_SQL = """
INSERT INTO durable_execution (
    id, workflow_name, workflow_version, status, queue, run_queue, priority, input, context,
    error, current_step, attempt, step_seq, recoveries, idempotency_key, scheduled_at, run_at,
    deadline, created_at, started_at, completed_at, compensation_results, compensation_plan,
    cancel_reason, locked_by, locked_until, run_token, parent_id, item_index, kind, root_id, ready
)
SELECT
    id, (ARRAY[{names}])[1 + w], '1',
    CASE what WHEN 'done' THEN 'completed' WHEN 'scheduled' THEN 'pending' ELSE 'waiting' END,
    'default', 'default', 0, '{{}}'::jsonb, '{{}}'::jsonb,
    NULL, 's1', 1, 1, 0, NULL,
    CASE WHEN what = 'scheduled' THEN wake END,
    CASE what WHEN 'done' THEN created WHEN 'event' THEN NULL ELSE wake END,
    CASE WHEN w = 0 THEN created + interval '120 days' END,
    created,
    CASE WHEN what <> 'scheduled' THEN created + interval '20 ms' END,
    CASE WHEN what = 'done' THEN created + interval '20 ms' + random() * interval '60 s' END,
    '[]'::jsonb, '[]'::jsonb, NULL,
    NULL, NULL, NULL, NULL, NULL, 'workflow', id, false
FROM (
    SELECT
        g, gen_random_uuid() AS id,
        now() - interval '90 days' * (1 - g::float8 / %(rows)s) AS created,
        now() + interval '1 day' + random() * interval '29 days' AS wake,
        floor(random() * {count})::integer AS w,
        CASE
            WHEN g * %(parked)s / %(rows)s = (g - 1) * %(parked)s / %(rows)s THEN 'done'
            WHEN (g * %(parked)s / %(rows)s) %% 2 = 0 THEN 'event'
            WHEN (g * %(parked)s / %(rows)s) %% 4 = 1 THEN 'scheduled'
            ELSE 'sleeping'
        END AS what
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
) AS history
""".format(names=", ".join(f"'{name}'" for name in HISTORY_NAMES), count=len(HISTORY_NAMES))

STEPS_SQL = """
INSERT INTO durable_step (
    id, execution_id, step_name, attempt, status, output, error, logs, worker, started_at,
    completed_at, duration_ms, is_compensation, compensation_for
)
SELECT
    gen_random_uuid(), id, 's1', 1, 'completed', '{"n": 1}'::jsonb, NULL, '[]'::jsonb,
    'history', started_at, completed_at,
    (extract(epoch FROM completed_at - started_at) * 1000)::integer, false, NULL
FROM durable_execution
WHERE status = 'completed' AND workflow_name <> 'bench.one'
"""


@dataclass
class Load:
    rows: int
    seconds: float
    steps_seconds: float | None
    vacuum_seconds: float
    checkpoint_seconds: float | None
    statuses: dict[str, int]
    sizes: list[tuple[str, int]]


def load_history(args: argparse.Namespace) -> Load:
    from django.db import DatabaseError, connection, transaction

    began = time.perf_counter()
    with connection.cursor() as cursor:
        for first in range(1, args.rows + 1, LOAD_CHUNK):
            last = min(args.rows, first + LOAD_CHUNK - 1)
            with transaction.atomic():  # the deferred FK checks (root_id) run at commit
                cursor.execute(
                    LOAD_SQL,
                    {"rows": args.rows, "parked": args.parked, "first": first, "last": last},
                )
            print(f"  loaded {last:,} / {args.rows:,} ({time.perf_counter() - began:.1f} s)")
        seconds = time.perf_counter() - began
        steps_seconds = None
        if args.with_steps:
            began = time.perf_counter()
            with transaction.atomic():
                cursor.execute(STEPS_SQL)
            steps_seconds = time.perf_counter() - began
            print(f"  loaded {cursor.rowcount:,} durable_step rows ({steps_seconds:.1f} s)")
        began = time.perf_counter()
        cursor.execute("VACUUM ANALYZE durable_execution")
        if args.with_steps:
            cursor.execute("VACUUM ANALYZE durable_step")
        vacuum_seconds = time.perf_counter() - began
        # The load wrote about a gigabyte of WAL: flush it now, so that no checkpoint it
        # started competes for the disk with the commits of the loaded latency series.
        began = time.perf_counter()
        try:
            cursor.execute("CHECKPOINT")
            checkpoint_seconds = time.perf_counter() - began
        except DatabaseError as exc:  # needs superuser or pg_checkpoint
            print(f"  CHECKPOINT refused ({exc}); a checkpoint may overlap the next series")
            checkpoint_seconds = None
        cursor.execute(
            "SELECT status || CASE WHEN status IN ('completed') THEN '' "
            "WHEN run_at IS NULL THEN ' (no run_at)' ELSE ' (run_at ahead)' END, count(*) "
            "FROM durable_execution GROUP BY 1 ORDER BY 2 DESC"
        )
        statuses = dict(cursor.fetchall())
        cursor.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
            "WHERE c.relname = 'durable_execution' OR c.oid IN "
            "(SELECT indexrelid FROM pg_index WHERE indrelid = 'durable_execution'::regclass) "
            "ORDER BY c.relname <> 'durable_execution', c.relname"
        )
        sizes = cursor.fetchall()
    return Load(
        table_rows(), seconds, steps_seconds, vacuum_seconds, checkpoint_seconds, statuses, sizes
    )


def report_load(load: Load) -> None:
    print(
        f"\nLoaded history in {load.seconds:.1f} s"
        + (f" (+ {load.steps_seconds:.1f} s of durable_step)" if load.steps_seconds else "")
        + f", VACUUM ANALYZE {load.vacuum_seconds:.1f} s"
        + (
            f", CHECKPOINT {load.checkpoint_seconds:.1f} s"
            if load.checkpoint_seconds is not None
            else ""
        )
        + f"; {load.rows:,} executions:"
    )
    for status, count in load.statuses.items():
        print(f"  {status:<24} {count:>10,}")
    print("Sizes (pg_relation_size):")
    for name, size in load.sizes:
        print(f"  {name:<40} {size / 2**20:>8.1f} MiB  {size // 8192:>7,} pages")


# -- EXPLAIN (ANALYZE, BUFFERS) of the statements the library sends ----------------------


@contextmanager
def rolled_back() -> Iterator[None]:
    """A transaction (a savepoint when nested) that is always rolled back."""
    from django.db import transaction

    with transaction.atomic():
        yield
        transaction.set_rollback(True)


_TRANSACTION_CONTROL = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b")


def capture(call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The statements `call` sends (SQL and parameters, as Django passes them to the
    driver), run in a transaction that is rolled back."""
    from django.db import connection

    statements = []

    def record(execute, sql, params, many, context):
        if not _TRANSACTION_CONTROL.match(sql):
            statements.append((sql, params))
        return execute(sql, params, many, context)

    with rolled_back(), connection.execute_wrapper(record):
        call()
    return statements


@dataclass
class Plan:
    label: str
    sql: str
    params: Any
    text: str  # the plan of the first run
    hit: int  # shared buffers of the first run (top plan node: includes its children)
    read: int
    execution_ms: list[float]
    planning_ms: float

    @property
    def buffers(self) -> int:
        return self.hit + self.read

    @property
    def median_ms(self) -> float:
        return statistics.median(self.execution_ms)

    def scans(self) -> list[str]:
        """The relations the plan reads, and how: `Index Scan durable_exec_timer`..."""
        found = []
        for line in self.text.splitlines():
            match = re.search(
                r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan|CTE Scan)"
                r"(?: Backward)?(?: using (\S+))? on (\S+)",
                line,
            )
            if match:
                kind, index, relation = match.groups()
                name = index or relation
                if kind == "Bitmap Index Scan":
                    kind = "Bitmap"
                found.append(f"{kind} {name}")
        return found


_BUFFER_FIELD = re.compile(r"(hit|read)=(\d+)")


def top_node_buffers(text: str) -> tuple[int, int]:
    """Shared hit/read of the plan's top node, which counts those of all below it. A
    node that touched no buffer has no Buffers line: then 0."""
    for line in text.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith(("->", "CTE ", "InitPlan", "SubPlan", "Planning", "Execution")):
            break
        if stripped.startswith("Buffers:") and "shared" in stripped:
            shared = stripped.split("shared", 1)[1].split(",", 1)[0]
            values = dict(_BUFFER_FIELD.findall(shared))
            return int(values.get("hit", 0)), int(values.get("read", 0))
    return 0, 0


def _time(text: str, what: str) -> float:
    match = re.search(rf"{what} Time: ([\d.]+) ms", text)
    return float(match.group(1)) if match else float("nan")


def explain(label: str, sql: str, params: Any, repeats: int) -> Plan:
    """EXPLAIN (ANALYZE, BUFFERS) `repeats` times, each in a transaction rolled back (a
    claim really leases what it finds: each run must find the same rows)."""
    from django.db import connection

    texts = []
    for _ in range(repeats):
        with rolled_back(), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            texts.append("\n".join(row[0] for row in cursor.fetchall()))
    hit, read = top_node_buffers(texts[0])
    return Plan(
        label=label,
        sql=sql,
        params=params,
        text=texts[0],
        hit=hit,
        read=read,
        execution_ms=[_time(text, "Execution") for text in texts],
        planning_ms=_time(texts[0], "Planning"),
    )


def explain_all(label: str, statements: list[tuple[str, Any]], repeats: int) -> list[Plan]:
    plans = []
    for index, (sql, params) in enumerate(statements):
        name = label
        minimum = re.search(r'MIN\("durable_execution"\."(\w+)"\)', sql)
        if minimum:
            name = f"{label}: min({minimum.group(1)})"
        elif len(statements) > 1:
            name = f"{label} [{index + 1}]"
        plans.append(explain(name, sql, params, repeats))
    return plans


def explain_queries(args: argparse.Namespace) -> list[Plan]:
    """The claim of one queue as a worker thread sends it (with its first attempt; empty,
    and with one ready row), and what a worker runs every poll interval: run_timers()
    (lapsed leases, passed deadlines, wake_due's timers_due) and next_wakeup()."""
    from django_durable import claims, ids, starting, timers

    worker = "bench-scale-explain"
    repeats = args.explain_repeats
    plans = explain_all(
        "claim, idle",
        capture(lambda: claims.claim_and_start(worker, [QUEUE], ids.time_ordered())),
        repeats,
    )
    with rolled_back():
        starting.start("bench.one", {})  # one ready row, never committed
        plans += explain_all(
            "claim, 1 ready",
            capture(lambda: claims.claim_and_start(worker, [QUEUE], ids.time_ordered())),
            repeats,
        )
    plans += explain_all("wake_due (timers_due)", capture(timers.wake_due), repeats)
    plans += explain_all("next_wakeup", capture(timers.next_wakeup), repeats)
    plans += explain_all("timers: leases", capture(timers.reclaim_expired_leases), repeats)
    plans += explain_all("timers: deadlines", capture(timers.expire_deadlines), repeats)
    return plans


def report_plans(plans: list[Plan]) -> None:
    for plan in plans:
        print(f"\n=== {plan.label} " + "=" * max(3, 80 - len(plan.label)))
        print(" ".join(plan.sql.split()))
        print(f"params: {plan.params!r}")
        print(
            f"-- shared buffers hit {plan.hit} + read {plan.read} = {plan.buffers}; "
            f"execution {plan.execution_ms[0]:.3f} ms (median of {len(plan.execution_ms)}: "
            f"{plan.median_ms:.3f} ms), planning {plan.planning_ms:.3f} ms"
        )
        print(plan.text)


def plan_notes(plans: list[Plan]) -> list[str]:
    """Plan lines worth a look: a sequential scan of the executions, rows read and
    thrown away, a sort."""
    notes = []
    for plan in plans:
        for line in plan.text.splitlines():
            stripped = line.strip()
            removed = re.search(r"Rows Removed by (?:Filter|Index Recheck): (\d+)", stripped)
            if (
                "Seq Scan on durable_execution" in stripped
                or (removed and int(removed.group(1)) > 100)
                or stripped.startswith("-> Sort ")
                or stripped.startswith("->  Sort ")
            ):
                notes.append(f"{plan.label}: {stripped}")
    return notes


# -- report ------------------------------------------------------------------------------


def print_columns(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1], strict=True)
        ]
        cells.append(row[-1])
        print("  " + "  ".join(cells).rstrip())


def summary(
    args: argparse.Namespace,
    load: Load,
    empty_plans: list[Plan],
    plans: list[Plan],
    empty: Latency,
    loaded: Latency,
) -> None:
    parked = {k: v for k, v in load.statuses.items() if not k.startswith("completed")}
    print(
        f"\n{'#' * 88}\nSummary: {load.rows:,} executions, {sum(parked.values()):,} parked "
        f"({', '.join(f'{v:,} {k}' for k, v in parked.items())})"
    )
    empty_by_label = {plan.label: plan for plan in empty_plans}
    rows = []
    for plan in plans:
        before = empty_by_label.get(plan.label)
        rows.append(
            (
                plan.label,
                "-" if before is None else str(before.buffers),
                f"{plan.hit}+{plan.read}",
                f"{plan.execution_ms[0]:.3f}",
                f"{plan.median_ms:.3f}",
                ", ".join(dict.fromkeys(plan.scans())) or "(no scan)",
            )
        )
    print_columns(
        "Queries (EXPLAIN ANALYZE, BUFFERS); buffers = shared hit+read of the top node",
        (
            "query",
            "bufs empty",
            f"bufs {load.rows:,}",
            "ms (1st)",
            f"ms (median {args.explain_repeats})",
            "reads",
        ),
        rows,
    )
    e, lo = empty.ms(), loaded.ms()
    ratio = statistics.median(lo) / statistics.median(e)
    print_columns(
        f"Latency start->complete, bench.one, 1 idle worker x {args.concurrency} threads "
        f"({args.samples} samples)",
        ("", "empty", f"{load.rows:,} rows", "ratio", ""),
        [
            (
                "median",
                f"{statistics.median(e):.1f} ms",
                f"{statistics.median(lo):.1f} ms",
                f"{ratio:.2f}",
                f"target <= {LATENCY_TARGET:.2f}"
                + (" (met)" if ratio <= LATENCY_TARGET else " (NOT met)"),
            ),
            ("p95", f"{p95(e):.1f} ms", f"{p95(lo):.1f} ms", f"{p95(lo) / p95(e):.2f}", ""),
            (
                "pickup, median",
                f"{statistics.median(empty.ms(empty.pickups)):.1f} ms",
                f"{statistics.median(loaded.ms(loaded.pickups)):.1f} ms",
                "",
                "created_at -> started_at",
            ),
            (
                "run, median",
                f"{statistics.median(empty.ms(empty.runs)):.1f} ms",
                f"{statistics.median(loaded.ms(loaded.runs)):.1f} ms",
                "",
                "started_at -> completed_at",
            ),
            (
                "load average (1 min)",
                f"{empty.load_average:.2f}",
                f"{loaded.load_average:.2f}",
                "",
                "other work on the machine moves the timings",
            ),
            (
                "server checkpoints meanwhile",
                str(empty.checkpoints),
                str(loaded.checkpoints),
                "",
                "a checkpoint competes with the commits for the disk",
            ),
        ],
    )
    notes = plan_notes(plans)
    print(
        "\nPlan lines worth a look:"
        if notes
        else "\nNo sequential scan, sort or filtered-out rows."
    )
    for note in notes:
        print(f"  {note}")


def main() -> int:
    args = parse_args()
    # Stopped with SIGTERM, still stop the workers and drop the database (finally blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    database = ScaleDatabase(os.environ.get("DATABASE_URL"), args.keep)
    logdir = Path(tempfile.mkdtemp(prefix="durable_scale_"))
    try:
        database.create()
        setup_django(database)
        print(
            f"django-durable scale benchmark, {date.today()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {database.describe()}"
        )
        empty = measure_latency("empty", args, logdir)
        report_latency("Latency, empty table", empty)
        empty_plans = explain_queries(args)

        print(f"\nLoading {args.rows:,} executions ({args.parked:,} parked)...")
        load = load_history(args)
        report_load(load)

        plans = explain_queries(args)
        report_plans(plans)

        loaded = measure_latency("loaded", args, logdir)
        report_latency(f"Latency, {load.rows:,} executions", loaded)
        summary(args, load, empty_plans, plans, empty, loaded)
    except BenchError as exc:
        print(f"\nBench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        database.drop()
        keep_or_remove(logdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
