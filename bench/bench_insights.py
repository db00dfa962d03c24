#!/usr/bin/env python
"""How long `insights.flow_analytics()` (and `insights.status()`) take on a large table.

Usage: DATABASE_URL=postgres://USER@HOST:PORT/DB python bench/bench_insights.py
       [--executions N] [--other M] [--repeats R] [--explain] [--keep]

It creates a database of its own (`durable_insights`, dropped first if left over,
dropped at the end) on the server DATABASE_URL names, migrates it and loads, with
INSERT ... SELECT generate_series:

- N executions (default 100,000) of `bench.chain`, the bench app's 5-step workflow
  (s1 ... s5): 60% completed (all five steps), 10% failed at each of s1, s2 and s4,
  10% waiting at s3; every 7th execution that reached s2 failed its first attempt there
  and succeeded on a retry (two s2 rows). Steps 1-5 s apart, created over ~40 days.
- M executions (default 100,000) of another workflow, 3 completed steps each, so the
  tables are not just the analysed workflow's.

Then it times `flow_analytics("bench.chain")` R times (default 5; the first is also
reported alone, as the cold one), and `status()`, and prints the statements each sent
with their times; `--explain` adds EXPLAIN (ANALYZE, BUFFERS) of the slowest one.
A measurement, not a test: nothing here passes or fails on a timing.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # run as a script: import `bench` and `example_project` from the root

from bench.bench_scale import INSERT_HISTORY, ScaleDatabase, setup_django  # noqa: E402

DATABASE = "durable_insights"
WORKFLOW = "bench.chain"
OTHER = "orders.fulfil"

# Execution g: k(g) steps reached, by g % 10 (0: s1 failed, 1: s2 failed, 2: s3 waiting,
# 3: s4 failed, else all 5 completed); step i starts (i - 1) * gap(g) after the start.
EXECUTIONS_SQL = (
    INSERT_HISTORY
    + """
SELECT
    id, %(name)s, '1', status, 'default', 'default', 0, '{}'::jsonb, '{}'::jsonb,
    CASE WHEN status = 'failed' THEN '{"type": "Declined", "message": "no"}'::jsonb END,
    CASE WHEN status <> 'completed' THEN 's' || k END, 1, k, 0,
    created, created + interval '20 ms',
    CASE WHEN status <> 'waiting'
        THEN created + interval '20 ms' + (k - 1) * gap + interval '100 ms' END,
    '[]'::jsonb, '[]'::jsonb, 'workflow', id, false
FROM (
    SELECT g, id, created, gap, k,
        CASE WHEN k = %(steps)s THEN 'completed' WHEN g %% 10 = 2 THEN 'waiting'
             ELSE 'failed' END AS status
    FROM (
        SELECT g, md5(%(name)s || g)::uuid AS id,
            date_trunc('second', now()) - g * interval '37 s' AS created,
            (1 + g %% 5) * interval '1 s' AS gap,
            CASE WHEN %(steps)s < 5 THEN %(steps)s
                 ELSE CASE g %% 10 WHEN 0 THEN 1 WHEN 1 THEN 2 WHEN 2 THEN 3 WHEN 3 THEN 4
                      ELSE 5 END END AS k
        FROM generate_series(1, %(count)s) AS g
    ) AS shaped
) AS history
"""
)

# Execution g's gap between steps, 1-5 s, as the steps' insert finds it again: created
# is now (whole seconds) - 37 g s, so g %% 5 is read back from created's epoch.
STEP_GAP = (
    "(1 + ((extract(epoch FROM date_trunc('second', now()) - e.created_at)::bigint / 37) %% 5))"
    " * interval '1 s'"
)

STEPS_SQL = f"""
INSERT INTO durable_step (
    id, execution_id, step_name, attempt, status, output, error, logs, worker, started_at,
    completed_at, duration_ms, is_compensation, compensation_for
)
SELECT
    gen_random_uuid(), e.id, 's' || i, 1,
    CASE WHEN i < e.step_seq OR e.status = 'completed' THEN 'completed'
         WHEN e.status = 'waiting' THEN 'waiting' ELSE 'failed' END,
    NULL, NULL, '[]'::jsonb, 'bench',
    e.started_at + (i - 1) * {STEP_GAP},
    e.started_at + (i - 1) * {STEP_GAP} + interval '100 ms',
    100, false, NULL
FROM durable_execution e, generate_series(1, e.step_seq) AS i
WHERE e.workflow_name = %(name)s
"""

# Every 7th execution of the analysed workflow that reached s2 retried it once: its
# first attempt failed one second before the recorded one.
RETRIES_SQL = """
INSERT INTO durable_step (
    id, execution_id, step_name, attempt, status, output, error, logs, worker, started_at,
    completed_at, duration_ms, is_compensation, compensation_for
)
SELECT gen_random_uuid(), s.execution_id, 's2', 1, 'failed', NULL,
    '{"type": "Timeout", "message": "slow"}'::jsonb, '[]'::jsonb, 'bench',
    s.started_at - interval '1 s', s.started_at - interval '900 ms', 100, false, NULL
FROM durable_step s JOIN durable_execution e ON e.id = s.execution_id
WHERE e.workflow_name = %(name)s AND s.step_name = 's2' AND abs(hashtext(e.id::text)) %% 7 = 0
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=100_000, metavar="N")
    parser.add_argument("--other", type=int, default=100_000, metavar="M")
    parser.add_argument("--repeats", type=int, default=5, metavar="R")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN the slowest statement")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if min(args.executions, args.repeats) < 1 or args.other < 0:
        parser.error("--executions and --repeats must be >= 1, --other >= 0")
    return args


def load(args: argparse.Namespace) -> float:
    from django.db import connection, transaction

    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        for name, count, steps in ((WORKFLOW, args.executions, 5), (OTHER, args.other, 3)):
            if not count:
                continue
            params = {"name": name, "count": count, "steps": steps}
            cursor.execute(EXECUTIONS_SQL, params)
            cursor.execute(STEPS_SQL, params)
        cursor.execute(RETRIES_SQL, {"name": WORKFLOW})
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE durable_execution")
        cursor.execute("VACUUM ANALYZE durable_step")
    return time.perf_counter() - began


def timed(call, repeats: int) -> tuple[list[float], list[tuple[str, list, float]], object]:
    """Seconds per call, and the statements of the last call with their seconds."""
    from django.db import connection

    seconds, statements, result = [], [], None

    def record(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((sql, params, time.perf_counter() - began))

    for _ in range(repeats):
        statements.clear()
        began = time.perf_counter()
        with connection.execute_wrapper(record):
            result = call()
        seconds.append(time.perf_counter() - began)
    return seconds, list(statements), result


def explain(sql: str, params) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def report(title: str, seconds: list[float], statements) -> None:
    print(f"\n{title}: cold {seconds[0] * 1000:.0f} ms", end="")
    if len(seconds) > 1:
        warm = seconds[1:]
        print(
            f", warm median {statistics.median(warm) * 1000:.0f} ms "
            f"(min {min(warm) * 1000:.0f}, max {max(warm) * 1000:.0f}; {len(warm)} runs)"
        )
    else:
        print()
    for sql, _params, took in statements:
        print(f"  {took * 1000:7.1f} ms  {' '.join(sql.split())[:110]}")


def main() -> None:
    args = parse_args()
    os.environ["DURABLE_BENCH_STEPS"] = "5"
    database = ScaleDatabase(os.environ.get("DATABASE_URL"), args.keep, name=DATABASE)
    database.create()
    try:
        setup_django(database)
        from django.db import connection

        from django_durable import insights

        print(database.describe())
        loaded = load(args)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM durable_execution")
            executions = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM durable_step")
            steps = cursor.fetchone()[0]
        print(
            f"Loaded {executions:,} executions and {steps:,} step attempts in {loaded:.1f} s "
            f"({args.executions:,} of {WORKFLOW}, 5 steps)."
        )
        seconds, statements, flow = timed(lambda: insights.flow_analytics(WORKFLOW), args.repeats)
        report(f"flow_analytics({WORKFLOW!r})", seconds, statements)
        print()
        print(insights.to_text(flow))
        slowest = max(statements, key=lambda statement: statement[2])
        status_seconds, status_statements, _ = timed(insights.status, args.repeats)
        report("status()", status_seconds, status_statements)
        if args.explain:
            print("\nEXPLAIN (ANALYZE, BUFFERS) of flow_analytics' slowest statement:")
            print(explain(slowest[0], slowest[1]))
    finally:
        database.drop()


if __name__ == "__main__":
    main()
