#!/usr/bin/env python
"""DBOS Transact (the `dbos` package) doing what bench/suite.py asks of django-durable.

Two workflows of no-op `@DBOS.step`s: `bench_one` (1 step) and `bench_chain10` (10
steps). Run by bench/suite.py, one sub-command per process:

    dbos_peer.py URL migrate                   create the system database's schema
    dbos_peer.py URL worker NAME C POLL        a worker: the queue `bench`, at most C
                                               workflows at once in this process, polled
                                               every POLL seconds; runs until SIGTERM
    dbos_peer.py URL enqueue N K               N workflows of K steps onto `bench`, in
                                               one transaction (DBOSClient)
    dbos_peer.py URL direct N K T              no queue: T threads of this process call
                                               N workflows directly; prints JSON timings

URL is the system database (a PostgreSQL URL of a scratch database). Nothing here is
imported by django-durable; `dbos` comes from the `bench` extra only.
"""

import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dbos import DBOS, DBOSClient

APP = "durable-bench"
VERSION = "bench-1"
QUEUE = "bench"
WORKFLOWS = {1: "bench_one", 10: "bench_chain10"}


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow(name="bench_one")
def bench_one() -> int:
    return noop(1)


@DBOS.workflow(name="bench_chain10")
def bench_chain10() -> int:
    for i in range(10):
        noop(i)
    return 10


def sqlalchemy_url(url: str) -> str:
    """DBOS takes a SQLAlchemy URL; use the psycopg 3 driver the project already has."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else url


def launch(url: str, executor: str) -> None:
    DBOS(
        config={
            "name": APP,
            "system_database_url": sqlalchemy_url(url),
            "application_version": VERSION,
            "executor_id": executor,
            "log_level": "WARNING",
            "sys_db_pool_size": 20,
        }
    )
    DBOS.launch()


def worker(url: str, name: str, concurrency: int, poll: float) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    launch(url, name)
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        polling_interval_sec=poll,
        on_conflict="always_update",
    )
    print("ready", flush=True)
    stop.wait()
    DBOS.destroy(destroy_registry=True)


def enqueue(url: str, n: int, k: int) -> None:
    client = DBOSClient(system_database_url=sqlalchemy_url(url), application_name=APP)
    options = {"queue_name": QUEUE, "workflow_name": WORKFLOWS[k], "app_version": VERSION}
    began = time.perf_counter()
    with client._sys_db.engine.begin() as connection:
        for _ in range(n):
            client.enqueue_in_transaction(connection, dict(options))
    print(json.dumps({"enqueue_seconds": time.perf_counter() - began}), flush=True)
    client.destroy()


def direct(url: str, n: int, k: int, threads: int) -> None:
    launch(url, "direct")
    workflow = {1: bench_one, 10: bench_chain10}[k]
    for _ in range(5):  # warm-up: connections, caches
        workflow()
    cpu = time.process_time()
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(workflow) for _ in range(n)]:
            future.result()
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu}), flush=True)
    DBOS.destroy(destroy_registry=True)


def migrate(url: str) -> None:
    launch(url, "migrate")
    DBOS.destroy(destroy_registry=True)


def main() -> int:
    url, command, *rest = sys.argv[1:]
    os.environ.setdefault("DBOS__CLOUD", "false")
    if command == "migrate":
        migrate(url)
    elif command == "worker":
        worker(url, rest[0], int(rest[1]), float(rest[2]))
    elif command == "enqueue":
        enqueue(url, int(rest[0]), int(rest[1]))
    elif command == "direct":
        direct(url, int(rest[0]), int(rest[1]), int(rest[2]))
    else:
        sys.exit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
