"""Workflows run by the `durable_worker` process of tests/test_failover.py.

Each kind keeps an execution busy in a different way while the test cuts the worker's
database connections: a chain of quick steps, a step that sleeps in its thread, a step
parked on an event, a durable sleep, and a step that fails its first call and is
retried. Every step adds its name to `ctx["done"]` (only a recorded attempt's output
reaches the context) and appends one JSON line to `calls.jsonl` in `ctx["dir"]` each
time it is called through to its end (the worker is another process, so files, not
memory, say what ran).
"""

import json
import os
import time
from pathlib import Path

from django_durable import Retry, step, workflow


def _called(ctx: dict, name: str, **extra) -> dict:
    record = {"key": ctx["key"], "step": name, "pid": os.getpid()}
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(Path(ctx["dir"]) / "calls.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return {**ctx, **extra, "done": [*ctx.get("done", []), name]}


def read_calls(directory) -> list[dict]:
    """Every step call recorded under `directory` (a line still being written is skipped)."""
    try:
        text = (Path(directory) / "calls.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def prepare(ctx):
    return _called(ctx, "prepare")


def finish(ctx):
    return _called(ctx, "finish")


# -- a chain of quick steps ---------------------------------------------------------------


def link_1(ctx):
    time.sleep(0.05)
    return _called(ctx, "link_1")


def link_2(ctx):
    time.sleep(0.05)
    return _called(ctx, "link_2")


def link_3(ctx):
    time.sleep(0.05)
    return _called(ctx, "link_3")


chain = workflow("failover_tests.chain", [prepare, link_1, link_2, link_3, finish])


# -- a step that keeps its thread busy for a second -----------------------------------------


def nap(ctx):
    time.sleep(1)
    return _called(ctx, "nap")


napping = workflow("failover_tests.napping", [prepare, nap, finish])


# -- a step parked on an event ------------------------------------------------------------


def await_go(ctx):
    from django_durable.waits import wait_for_event

    go = wait_for_event("go")
    return _called(ctx, "await_go", go=go)


awaiting = workflow("failover_tests.awaiting", [prepare, await_go, finish])


# -- a durable sleep ----------------------------------------------------------------------


def doze(ctx):
    from django_durable.waits import sleep

    sleep(1)
    return _called(ctx, "doze")


dozing = workflow("failover_tests.dozing", [prepare, doze, finish])


# -- a step that fails its first call and succeeds when retried ---------------------------


def flaky(ctx):
    """The first call (per execution: a marker file named after its key) raises."""
    try:
        fd = os.open(Path(ctx["dir"]) / f"flaky-{ctx['key']}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return _called(ctx, "flaky")
    os.close(fd)
    raise RuntimeError("the first call fails on purpose")


flaky_once = workflow(
    "failover_tests.flaky_once",
    [prepare, step(flaky, retry=Retry(max_attempts=3, backoff="constant", base=0.2)), finish],
)
