#!/usr/bin/env python
"""How long `graphs.queries.list_executions()` takes on 100,000 graph executions, with
and without the model's value-key index on durable_graph_value (GraphKey(node, value)).

Usage: DATABASE_URL=postgres://USER@HOST:PORT/DB python bench/bench_graph_queries.py
       [--executions N] [--other M] [--repeats R] [--no-explain] [--keep]

It creates a database of its own (`durable_graph_queries`, dropped first if left over,
dropped at the end) on the server DATABASE_URL names, migrates it and loads, with
INSERT ... SELECT generate_series:

- N executions (default 100,000) of the graph `bench.graph_queries` v1, created 13 s
  apart, 10% of them completed (archived), the rest waiting; their values: `score` an
  int 0-999,999, `status` one of 4 strings, `email` a distinct string, `flag` a bool,
  `amount` a Decimal on every other execution, `risk` (computed) an int 0-99 on 80%,
  and on 1 execution in 1,000 `history`, a list of 200 strings (about 7 kB of JSON);
  values drawn with hashtext, so none follows the creation order;
- M executions (default 100,000) of a plain workflow, so durable_execution is not just
  the graph's.

Then, for each query of QUERIES, it times list_executions (limit 100; R runs, the
median reported; each run is the query and the page's values) and prints EXPLAIN
(ANALYZE, BUFFERS) of its main statement: once with the value-key index dropped, then
again after creating it (with Django's schema editor, as a migration would). It also
tries the plain (node, value) btree index, which the 7 kB values make fail. A
measurement, not a test: nothing here passes or fails on a timing.
"""

import argparse
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # run as a script: import `bench` and `example_project` from the root

from bench.bench_scale import INSERT_HISTORY, ScaleDatabase, setup_django  # noqa: E402

DATABASE = "durable_graph_queries"
GRAPH = "bench.graph_queries"
OTHER = "orders.fulfil"

EXECUTIONS_SQL = (
    INSERT_HISTORY
    + """
SELECT
    id, %(name)s, %(version)s, status, 'default', 'default', 0, '{}'::jsonb, '{}'::jsonb,
    NULL, NULL, 1, 1, 0, created, created + interval '20 ms',
    CASE WHEN status = 'completed' THEN created + interval '1 s' END,
    '[]'::jsonb, '[]'::jsonb, %(kind)s, id, false
FROM (
    SELECT md5(%(name)s || g)::uuid AS id,
        date_trunc('second', now()) - g * interval '13 s' AS created,
        CASE WHEN g %% 10 = 0 OR %(kind)s = 'workflow' THEN 'completed' ELSE 'waiting' END
            AS status
    FROM generate_series(1, %(count)s) AS g
) AS shaped
"""
)

VALUES_SQL = """
INSERT INTO durable_graph_value (
    execution_id, node, value, is_set, revision, set_at, computed_from, error
)
SELECT e.id, v.node, v.value, true, 1, e.created_at + interval '1 s',
    CASE WHEN v.node = 'risk' THEN '{"score": 1}'::jsonb END, NULL
FROM (
    SELECT g, md5(%(name)s || g)::uuid AS id,
        date_trunc('second', now()) - g * interval '13 s' AS created_at
    FROM generate_series(1, %(count)s) AS g
) AS e
CROSS JOIN LATERAL (VALUES
    ('score', to_jsonb(abs(hashtext('score' || e.g)) %% 1000000)),
    ('status', to_jsonb((ARRAY['new', 'active', 'review', 'closed'])
        [1 + abs(hashtext('status' || e.g)) %% 4])),
    ('email', to_jsonb('user' || e.g || '@example.com')),
    ('flag', to_jsonb(abs(hashtext('flag' || e.g)) %% 3 = 0)),
    ('amount', CASE WHEN e.g %% 2 = 0 THEN jsonb_build_object(
        '__durable__', 'decimal',
        'value', ((abs(hashtext('amount' || e.g)) %% 100000) / 100.0)::numeric(10, 2)::text)
     END),
    ('risk', CASE WHEN abs(hashtext('risk' || e.g)) %% 5 <> 0
        THEN to_jsonb(abs(hashtext('riskv' || e.g)) %% 100) END),
    ('history', CASE WHEN e.g %% 1000 = 7 THEN (
        SELECT jsonb_agg(md5(e.g || '-' || i)) FROM generate_series(1, 200) AS i) END)
) AS v(node, value)
WHERE v.value IS NOT NULL
"""

# (label, keyword arguments of list_executions)
QUERIES = [
    ("no filter (newest 100)", {}),
    ("score > 999,000 (0.1%)", {"filter_by": [("score", "gt", 999_000)]}),
    ("email = one address", {"filter_by": [("email", "eq", "user12345@example.com")]}),
    ("amount >= Decimal 990.00 (0.5%)", {"filter_by": [("amount", "gte", Decimal("990.00"))]}),
    (
        "score > 990,000 AND status = closed AND risk < 50 (~0.1%)",
        {
            "filter_by": [
                ("score", "gt", 990_000),
                ("status", "eq", "closed"),
                ("risk", "lt", 50),
            ]
        },
    ),
    (
        "status = active AND score < 500,000 (~12%)",
        {"filter_by": [("status", "eq", "active"), ("score", "lt", 500_000)]},
    ),
    (
        "status in (new, review) AND flag = true (~17%)",
        {"filter_by": [("status", "in", ["new", "review"]), ("flag", "eq", True)]},
    ),
    ("risk is_not_set (20%)", {"filter_by": [("risk", "is_not_set")]}),
    ("score > 2,000,000 (no match)", {"filter_by": [("score", "gt", 2_000_000)]}),
    ("order by -score (all)", {"order_by": "-score"}),
    (
        "score > 999,000, order by -score",
        {"filter_by": [("score", "gt", 999_000)], "order_by": "-score"},
    ),
    ("order by -updated_at (all)", {"order_by": "-updated_at"}),
    ("no filter, offset 50,000", {"offset": 50_000}),
]


def proposed_indexes():
    """The value-key index, GraphValue.Meta.indexes since migration 0017: dropped for the
    first series, built again for the second."""
    from django.db import models

    from django_durable.graphs.queries import GraphKey

    return [models.Index(GraphKey("node", "value"), name="durable_graph_value_key")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=100_000, metavar="N")
    parser.add_argument("--other", type=int, default=100_000, metavar="M")
    parser.add_argument("--repeats", type=int, default=7, metavar="R")
    parser.add_argument("--no-explain", action="store_true", help="skip EXPLAIN ANALYZE")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if min(args.executions, args.repeats) < 1 or args.other < 0:
        parser.error("--executions and --repeats must be >= 1, --other >= 0")
    return args


def define_graph():
    from django_durable import graphs

    return graphs.graph(
        GRAPH,
        "v1",
        [
            graphs.input("score"),
            graphs.input("status"),
            graphs.input("email"),
            graphs.input("flag"),
            graphs.input("amount"),
            graphs.input("history"),
            graphs.compute("risk", ["score"], lambda values: values["score"] % 100),
        ],
    )


def load(args: argparse.Namespace) -> float:
    from django.db import connection, transaction

    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        params = {"name": GRAPH, "version": "v1", "kind": "graph", "count": args.executions}
        cursor.execute(EXECUTIONS_SQL, params)
        cursor.execute(VALUES_SQL, params)
        if args.other:
            other = {"name": OTHER, "version": "1", "kind": "workflow", "count": args.other}
            cursor.execute(EXECUTIONS_SQL, other)
    vacuum()
    return time.perf_counter() - began


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE durable_execution")
        cursor.execute("VACUUM ANALYZE durable_graph_value")


def sizes() -> list[tuple[str, str]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND (c.relname LIKE 'durable_graph_value%%' "
            "OR c.relname IN ('durable_execution', 'durable_exec_workflow')) ORDER BY 1"
        )
        return cursor.fetchall()


def timed(kwargs: dict, repeats: int):
    """Milliseconds per call, the statements of the last call, and its page."""
    from django.db import connection

    from django_durable.graphs.queries import list_executions

    millis, statements, page = [], [], None

    def record(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    for _ in range(repeats):
        statements.clear()
        began = time.perf_counter()
        with connection.execute_wrapper(record):
            page = list_executions(GRAPH, "v1", **kwargs)
        millis.append((time.perf_counter() - began) * 1000)
    return millis, list(statements), page


def explain(sql: str, params) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def run_queries(phase: str, args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    print(f"\n##### {phase} " + "#" * max(3, 80 - len(phase)))
    results = {}
    for label, kwargs in QUERIES:
        millis, statements, page = timed(kwargs, args.repeats)
        median = statistics.median(millis[1:] if len(millis) > 1 else millis)
        results[label] = (median, len(page))
        print(
            f"\n== {label}: {len(page)} rows, median {median:.1f} ms "
            f"(first {millis[0]:.1f}, min {min(millis):.1f}, max {max(millis):.1f}; "
            f"{len(statements)} statements)"
        )
        if not args.no_explain:
            plan = explain(*statements[0])
            print("\n".join("   " + line for line in plan.splitlines()))
    return results


def try_plain_index() -> str:
    """The plain (node, value) btree: what the 7 kB values do to it."""
    from django.db import DatabaseError, connection, transaction

    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE INDEX durable_graph_value_plain ON durable_graph_value (node, value) "
                "WHERE is_set"
            )
            transaction.set_rollback(True)
    except DatabaseError as exc:
        return str(exc).splitlines()[0]
    return "built (no value too large for it)"


def drop_proposed() -> None:
    from django.db import connection

    from django_durable.models import GraphValue

    with connection.schema_editor(collect_sql=False) as editor:
        for index in proposed_indexes():
            editor.remove_index(GraphValue, index)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE durable_graph_value")


def create_proposed() -> float:
    from django.db import connection

    from django_durable.models import GraphValue

    began = time.perf_counter()
    with connection.schema_editor(collect_sql=False) as editor:
        for index in proposed_indexes():
            print(f"  {index.create_sql(GraphValue, editor)}")
            editor.add_index(GraphValue, index)
    seconds = time.perf_counter() - began
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE durable_graph_value")
    return seconds


def main() -> None:
    args = parse_args()
    database = ScaleDatabase(os.environ.get("DATABASE_URL"), args.keep, name=DATABASE)
    database.create()
    try:
        setup_django(database)
        from django.db import connection

        define_graph()
        print(database.describe())
        loaded = load(args)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM durable_execution")
            executions = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM durable_graph_value")
            values = cursor.fetchone()[0]
        print(
            f"Loaded {executions:,} executions ({args.executions:,} of {GRAPH}) and "
            f"{values:,} graph values in {loaded:.1f} s."
        )
        print(f"Plain btree on (node, value): {try_plain_index()}")
        drop_proposed()
        before = run_queries("without the value-key index", args)
        print("\nCreating the value-key index:")
        built = create_proposed()
        print(f"  built in {built:.1f} s")
        for name, size in sizes():
            print(f"  {name}: {size}")
        after = run_queries("with the value-key index (the model's)", args)
        print(f"\n{'query':62} {'before':>10} {'after':>10} rows")
        for label, _ in QUERIES:
            (was, rows), (now, _) = before[label], after[label]
            print(f"{label:62} {was:8.1f}ms {now:8.1f}ms {rows}")
    finally:
        database.drop()


if __name__ == "__main__":
    main()
