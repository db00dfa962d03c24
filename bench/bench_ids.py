"""Random (v4) against time-ordered (v7) primary keys for the attempts table.

Attempts (`durable_step`) are the table that grows fastest: one row per step run. This
bench asks what its primary key's kind costs once the table is large: it builds two
copies of the table's shape (primary key, `(execution_id, started_at)` index) with
`--rows` rows of history each, one keyed by random UUIDs and one by time-ordered ones,
then inserts `--inserts` rows into each from `--clients` connections, one row per
transaction (as chained steps do), right after a CHECKPOINT (so full-page images count,
as they do in a server's life). It reports rows/s, WAL bytes per row and buffers read
per row, from the server's own counters. Not a test; figures depend on the machine.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres python bench/bench_ids.py
"""

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import psycopg  # noqa: E402

from django_durable.ids import time_ordered  # noqa: E402

DATABASE = "durable_bench_ids"
KINDS = {"random (v4)": uuid.uuid4, "time-ordered (v7)": time_ordered}

TABLE_SQL = """
CREATE TABLE {table} (
    id uuid PRIMARY KEY,
    execution_id uuid NOT NULL,
    step_name varchar(200) NOT NULL,
    status varchar(16) NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX {table}_execution ON {table} (execution_id, started_at);
"""

# History: ids made in SQL, random, or time-ordered by setting the first 48 bits to a
# millisecond count that grows with the row number (older rows first).
LOAD_SQL = {
    "random (v4)": "gen_random_uuid()",
    "time-ordered (v7)": (
        "(lpad(to_hex(1700000000000 + n), 12, '0') "
        "|| substr(replace(gen_random_uuid()::text, '-', ''), 13))::uuid"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="history rows per table")
    parser.add_argument("--inserts", type=int, default=20_000, help="rows inserted per table")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    admin = psycopg.connect(url, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    admin.execute(f"CREATE DATABASE {DATABASE}")
    target = psycopg.conninfo.make_conninfo(url, dbname=DATABASE)
    try:
        print(
            f"{args.rows:,} rows of history per table, {args.inserts:,} inserts, "
            f"{args.clients} clients, one row per transaction, after a CHECKPOINT"
        )
        print(f"  {'ids':<20} {'rows/s':>8} {'WAL bytes/row':>14} {'blocks read/row':>16}")
        for number, (kind, make) in enumerate(KINDS.items()):
            table = f"steps_{number}"
            _load(target, table, LOAD_SQL[kind], args.rows)
            rate, wal, reads = _insert(target, table, make, args.inserts, args.clients)
            print(f"  {kind:<20} {rate:>8,.0f} {wal:>14,.0f} {reads:>16,.2f}")
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def _load(target: str, table: str, id_sql: str, rows: int) -> None:
    with psycopg.connect(target, autocommit=True) as connection:
        connection.execute(TABLE_SQL.format(table=table))
        connection.execute(
            f"INSERT INTO {table} SELECT {id_sql}, gen_random_uuid(), 'step', 'completed', "
            "now() - make_interval(secs => n) FROM generate_series(1, %s) AS n",
            [rows],
        )
        connection.execute(f"VACUUM ANALYZE {table}")


def _insert(target: str, table: str, make, inserts: int, clients: int):
    sql = (
        f"INSERT INTO {table} (id, execution_id, step_name, status, started_at) "
        "VALUES (%s, %s, 'step', 'running', now())"
    )
    with psycopg.connect(target, autocommit=True) as connection:
        connection.execute("CHECKPOINT")
        wal_before = connection.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        reads_before = _blocks_read(connection)
        started = time.perf_counter()
        threads = [
            threading.Thread(target=_client, args=(target, sql, make, inserts // clients))
            for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        wal = connection.execute(
            "SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", [wal_before]
        ).fetchone()[0]
        connection.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.6)  # the statistics collector's flush
        reads = _blocks_read(connection) - reads_before
    done = inserts // clients * clients
    return done / seconds, float(wal) / done, reads / done


def _client(target: str, sql: str, make, count: int) -> None:
    with psycopg.connect(target, autocommit=True) as connection:
        for _ in range(count):
            connection.execute(sql, [make(), uuid.uuid4()])


def _blocks_read(connection) -> int:
    return connection.execute(
        "SELECT blks_read FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()[0]


if __name__ == "__main__":
    main()
