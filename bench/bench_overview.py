"""The admin's overview page with 1,000,000 executions: its queries and load time.

Usage: DATABASE_URL=postgres://USER@HOST:PORT/DB python bench/bench_overview.py
       [--rows N] [--waiting W] [--failed F] [--last-day D] [--inputs I] [--database NAME]
       [--loads L] [--keep]

It creates a database of its own (`--database`, default durable_overview; dropped first
if left over, dropped at the end) on the server DATABASE_URL names, migrates it, loads N
executions of history (W waiting for events, F failed, D of all created in the last 24
hours, the rest completed), I pending inputs and some workers, held executions and
schedules, then loads the overview page with Django's test client as a staff user:
with a cold cache (the cached counts are computed) and a warm one. It prints the page's
statements with their times, the load times, and EXPLAIN (ANALYZE, BUFFERS) of the
slowest statement of each. A measurement, not a test: nothing here passes or fails on a
timing. See bench/README.md.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/; import `bench` and `example_project` from the root.
sys.path[0] = str(ROOT)

from bench.bench_scale import INSERT_HISTORY, ScaleDatabase, setup_django  # noqa: E402

LOAD_CHUNK = 250_000
WORKFLOW_NAMES = (
    "orders.fulfil",
    "orders.refund",
    "billing.invoice",
    "billing.dunning",
    "reports.daily",
    "mail.digest",
    "crm.sync",
    "kyc.review",
)
WORKERS = (
    ("web-1", ["default"], 8),
    ("web-2", ["default", "emails"], 8),
    ("batch-1", ["batch"], 4),
)

# Row g of N: waiting (for an event: no run_at, not ready) with probability W/N, failed
# with F/N, the rest completed; created in the last 24 hours with probability D/N, else
# over the 89 days before. Random workflow names.
LOAD_SQL = (
    INSERT_HISTORY
    + """
SELECT
    id, (ARRAY[{names}])[1 + floor(random() * {count})::integer], '1', status,
    'default', 'default', 0, '{{}}'::jsonb, '{{}}'::jsonb,
    CASE WHEN status = 'failed' THEN jsonb_build_object(
        'type', 'PaymentDeclined', 'message', 'card declined for order ' || g,
        'traceback', repeat('  File "x.py", line 1, in step\\n', 20)) END,
    's1', 1, 1, 0, created, created + interval '20 ms',
    CASE WHEN status <> 'waiting' THEN created + interval '2 s' END,
    '[]'::jsonb, '[]'::jsonb, 'workflow', id, false
FROM (
    SELECT
        g, gen_random_uuid() AS id,
        CASE WHEN random() < %(last_day)s
            THEN now() - random() * interval '24 hours'
            ELSE now() - interval '24 hours' - random() * interval '89 days'
        END AS created,
        CASE WHEN r < %(waiting)s THEN 'waiting'
             WHEN r < %(waiting)s + %(failed)s THEN 'failed'
             ELSE 'completed' END AS status
    FROM (
        SELECT g, random() AS r FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
    ) AS drawn
) AS history
""".format(names=", ".join(f"'{name}'" for name in WORKFLOW_NAMES), count=len(WORKFLOW_NAMES))
)

INPUTS_SQL = """
INSERT INTO durable_pending_input (
    execution_id, root_id, step_seq, step_name, input_name, input_type, prompt, metadata,
    fields, choices, status, created_at
)
SELECT id, id, 1, 'approve', 'manager', 'approval',
       'Approve the refund of order ' || left(id::text, 8) || '?', '{}'::jsonb, '[]'::jsonb,
       '[]'::jsonb, %(status)s, created_at
FROM durable_execution WHERE status = %(of)s LIMIT %(count)s
"""

# Executions held now by the workers (running, leased) and a few ready ones.
HELD_SQL = """
INSERT INTO durable_execution (
    id, workflow_name, workflow_version, status, queue, run_queue, priority, input, context,
    current_step, attempt, step_seq, recoveries, created_at, started_at, run_at,
    compensation_results, compensation_plan, kind, root_id, ready, locked_by, locked_until,
    run_token
)
SELECT id, 'orders.fulfil', '1', 'running', 'default', 'default', 0, '{}'::jsonb,
       '{}'::jsonb, 's1', 1, 1, 0, now() - interval '1 minute', now(), now(),
       '[]'::jsonb, '[]'::jsonb, 'workflow', id, false, %(worker)s,
       now() + interval '5 minutes', gen_random_uuid()
FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %(count)s)) AS held
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--waiting", type=int, default=200_000, metavar="W")
    parser.add_argument("--failed", type=int, default=10_000, metavar="F")
    parser.add_argument(
        "--last-day",
        type=int,
        default=50_000,
        metavar="D",
        help="executions created in the last 24 hours (50,000)",
    )
    parser.add_argument("--inputs", type=int, default=5_000, metavar="I")
    parser.add_argument("--loads", type=int, default=5, metavar="L", help="timed loads each")
    parser.add_argument("--database", default="durable_overview", metavar="NAME")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if not 0 <= args.waiting + args.failed <= args.rows or not 0 <= args.last_day <= args.rows:
        parser.error("--waiting + --failed and --last-day must be between 0 and --rows")
    if not 0 <= args.inputs <= args.waiting or args.loads < 1:
        parser.error("--inputs must be at most --waiting, --loads at least 1")
    return args


# -- the database ----------------------------------------------------------------------


def load(args: argparse.Namespace) -> None:
    from django.db import connection, transaction

    from django_durable import clock
    from django_durable.dsl.cron import next_time
    from django_durable.models import Schedule, Worker

    began = time.perf_counter()
    shares = {
        "waiting": args.waiting / args.rows,
        "failed": args.failed / args.rows,
        "last_day": args.last_day / args.rows,
    }
    with connection.cursor() as cursor:
        for first in range(1, args.rows + 1, LOAD_CHUNK):
            last = min(args.rows, first + LOAD_CHUNK - 1)
            with transaction.atomic():  # the deferred FK checks (root_id) run at commit
                cursor.execute(LOAD_SQL, {**shares, "first": first, "last": last})
            print(f"  loaded {last:,} / {args.rows:,} ({time.perf_counter() - began:.1f} s)")
        cursor.execute(INPUTS_SQL, {"status": "pending", "of": "waiting", "count": args.inputs})
        cursor.execute(
            INPUTS_SQL, {"status": "completed", "of": "completed", "count": 10 * args.inputs}
        )
        now = clock.now()
        for name, queues, concurrency in WORKERS:
            Worker.objects.create(
                name=name,
                host=name,
                pid=1,
                queues=queues,
                concurrency=concurrency,
                started_at=now,
                last_seen_at=now,
            )
            with transaction.atomic():
                cursor.execute(HELD_SQL, {"worker": name, "count": concurrency // 2})
        Schedule.objects.bulk_create(
            Schedule(
                name=f"{workflow}.{index}",
                workflow_name=workflow,
                cron=f"{index} * * * *",
                next_run_at=next_time(f"{index} * * * *", "UTC", now),
                enabled=index != 7,
                auto_disabled_at=now if index == 7 else None,
                consecutive_failures=10 if index == 7 else 0,
                created_at=now,
                updated_at=now,
            )
            for index in range(20)
            for workflow in WORKFLOW_NAMES[:2]
        )
        print(f"  loaded the rest ({time.perf_counter() - began:.1f} s); VACUUM ANALYZE...")
        for table in ("durable_execution", "durable_pending_input", "durable_schedule"):
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute("SELECT status, count(*) FROM durable_execution GROUP BY 1 ORDER BY 2 DESC")
        statuses = cursor.fetchall()
        cursor.execute(
            "SELECT count(*) FROM durable_execution WHERE created_at > now() - interval '1 day'"
        )
        last_day = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('durable_execution'))")
        size = cursor.fetchone()[0]
    print(
        f"Loaded in {time.perf_counter() - began:.1f} s: "
        + ", ".join(f"{count:,} {status}" for status, count in statuses)
        + f"; {last_day:,} created in the last 24 h; durable_execution {size} with indexes"
    )


# -- page loads ----------------------------------------------------------------------------


@dataclass
class PageLoad:
    seconds: float
    status: int
    size: int
    statements: list[tuple[float, str, tuple]] = field(default_factory=list)  # ms, sql, params

    @property
    def database_ms(self) -> float:
        return sum(ms for ms, _, _ in self.statements)

    def slowest(self) -> tuple[float, str, tuple]:
        return max(self.statements, key=lambda statement: statement[0])


def timed_load(client, url: str) -> PageLoad:
    from django.db import connection

    statements = []

    def record(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append(((time.perf_counter() - began) * 1000, sql, params))

    began = time.perf_counter()
    with connection.execute_wrapper(record):
        response = client.get(url)
    seconds = time.perf_counter() - began
    return PageLoad(seconds, response.status_code, len(response.content), statements)


def staff_client():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client

    user = get_user_model().objects.create_user("bench", password="bench", is_staff=True)
    for codename in ("view_workflowexecution", "view_pendinginput", "respond_pendinginput"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def measure(args: argparse.Namespace) -> tuple[list[PageLoad], list[PageLoad]]:
    from django.core.cache import cache
    from django.urls import reverse

    client = staff_client()
    url = reverse("admin:django_durable_overview_changelist")
    first = timed_load(client, url)  # connection, templates, caches of Django: not counted
    if first.status != 200:
        raise SystemExit(f"The overview answered {first.status}.")
    cold, warm = [], []
    for _ in range(args.loads):
        cache.clear()
        cold.append(timed_load(client, url))
        warm.append(timed_load(client, url))
    return cold, warm


def explain(sql: str, params) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def report(title: str, loads: list[PageLoad]) -> None:
    counts = {len(page.statements) for page in loads}
    seconds = [page.seconds * 1000 for page in loads]
    database = [page.database_ms for page in loads]
    print(
        f"\n{title}: {len(loads)} loads, {'/'.join(map(str, sorted(counts)))} statements each, "
        f"page {statistics.median(seconds):.1f} ms median (min {min(seconds):.1f}, "
        f"max {max(seconds):.1f}), of which database {statistics.median(database):.1f} ms; "
        f"{loads[0].size:,} bytes of HTML"
    )
    middle = sorted(loads, key=lambda page: page.seconds)[len(loads) // 2]
    print("  statements of the median load, slowest first (ms, SQL):")
    for ms, sql, _ in sorted(middle.statements, key=lambda statement: -statement[0]):
        text = " ".join(sql.split())
        print(f"  {ms:8.2f}  {text[:150]}{'...' if len(text) > 150 else ''}")


def main() -> int:
    args = parse_args()
    database = ScaleDatabase(os.environ.get("DATABASE_URL"), args.keep, args.database)
    try:
        database.create()
        setup_django(database)
        print(
            f"django-durable overview benchmark, {date.today()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {database.describe()}"
        )
        print(f"Loading {args.rows:,} executions...")
        load(args)
        cold, warm = measure(args)
        report("Cold cache (the cached counts are computed)", cold)
        report("Warm cache", warm)
        for title, loads in (("cold", cold), ("warm", warm)):
            middle = sorted(loads, key=lambda page: page.seconds)[len(loads) // 2]
            ms, sql, params = middle.slowest()
            print(f"\n=== EXPLAIN (ANALYZE, BUFFERS), slowest statement, {title} ({ms:.1f} ms)")
            print(" ".join(sql.split()))
            print(f"params: {params!r}")
            print(explain(sql, params))
    finally:
        database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
