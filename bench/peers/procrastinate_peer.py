#!/usr/bin/env python
"""procrastinate doing what bench/suite.py asks of django-durable: one job = one step.

A K-step chain is a job `bench_step` with `remaining=K` that, when it runs, defers the
next job with `remaining=K-1` (so a chain is as sequential as a workflow's steps). The
task is async and does nothing else, which is procrastinate's fastest kind of task. Run
by bench/suite.py, one sub-command per process:

    procrastinate_peer.py URL schema          apply procrastinate's schema
    procrastinate_peer.py URL worker NAME C   a worker with concurrency C on the queue
                                              `bench`, LISTEN/NOTIFY on; runs until
                                              SIGTERM (procrastinate's own handler)
    procrastinate_peer.py URL defer N K       N chains of K steps, in one statement
                                              (batch_defer); prints JSON timings

URL is a PostgreSQL URL of a scratch database. Nothing here is imported by
django-durable; procrastinate comes from the `bench` extra only.
"""

import json
import logging
import sys
import time

import procrastinate

QUEUE = "bench"


def build_app(url: str) -> tuple[procrastinate.App, procrastinate.tasks.Task]:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench_step", queue=QUEUE)
    async def bench_step(remaining: int) -> None:
        if remaining > 1:
            await bench_step.defer_async(remaining=remaining - 1)

    return app, bench_step


def main() -> int:
    url, command, *rest = sys.argv[1:]
    # The tasks are registered by build_app in every process (worker included), so the
    # "app in the __main__ module" warning does not apply.
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app, bench_step = build_app(url)
    if command == "schema":
        with app.open():
            app.schema_manager.apply_schema()
    elif command == "worker":
        name, concurrency = rest[0], int(rest[1])
        app.run_worker(
            queues=[QUEUE],
            name=name,
            concurrency=concurrency,
            wait=True,
            listen_notify=True,
            delete_jobs="never",
        )
    elif command == "defer":
        n, k = int(rest[0]), int(rest[1])
        with app.open():
            began = time.perf_counter()
            bench_step.batch_defer(*({"remaining": k} for _ in range(n)))
            print(json.dumps({"defer_seconds": time.perf_counter() - began}), flush=True)
    else:
        sys.exit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
