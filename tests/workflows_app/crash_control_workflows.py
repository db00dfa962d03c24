"""Workflows for tests/test_control_flow_processes.py: a parallel block and a saga run by
real `durable_worker` processes, one of which the test kills with SIGKILL.

Worker and test are different processes, so every call of a step (or compensation)
appends one JSON line to `runs.jsonl` in `ctx["marks"]` when it starts: its name and
pid (O_APPEND and one small write, so lines never interleave). The slow ones then wait
for the `release` file the test creates, so the first worker is killed while it is
inside them and the next one runs them straight through.
"""

import json
import os
import time
from pathlib import Path

from django_durable import parallel, step, workflow
from django_durable.helpers import assign

RELEASE_WAIT_SECONDS = 60


def _ran(ctx: dict, name: str) -> None:
    line = (json.dumps({"name": name, "pid": os.getpid()}) + "\n").encode()
    fd = os.open(Path(ctx["marks"]) / "runs.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_runs(directory) -> list[dict]:
    """Every call recorded under `directory`, in the order they started (a line still
    being written is skipped)."""
    try:
        text = (Path(directory) / "runs.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def _wait_for_release(ctx: dict) -> None:
    release = Path(ctx["marks"]) / "release"
    give_up_at = time.monotonic() + RELEASE_WAIT_SECONDS
    while not release.exists():
        if time.monotonic() > give_up_at:
            raise RuntimeError(f"{release} never appeared")
        time.sleep(0.05)


# -- a parallel block with one slow branch -------------------------------------------------


def _branch(ctx: dict, name: str) -> dict:
    _ran(ctx, name)
    return {"branch": name, "pid": os.getpid()}


def fast_a(ctx):
    return _branch(ctx, "fast_a")


def fast_b(ctx):
    return _branch(ctx, "fast_b")


def fast_c(ctx):
    return _branch(ctx, "fast_c")


def slow_branch(ctx):
    _ran(ctx, "slow_branch")
    _wait_for_release(ctx)
    return {"branch": "slow_branch", "pid": os.getpid()}


def after_join(ctx):
    _ran(ctx, "after_join")
    return assign(ctx, "joined", sorted(ctx["__results__"]))


crash_parallel = workflow(
    "tests.crash.parallel",
    [parallel(fast_a, fast_b, slow_branch, fast_c, name="fan"), after_join],
)


# -- a saga whose middle compensation is slow ---------------------------------------------


def undo_one(ctx):
    _ran(ctx, "undo_one")


def undo_two(ctx):
    _ran(ctx, "undo_two")
    _wait_for_release(ctx)


def undo_three(ctx):
    _ran(ctx, "undo_three")


@step(compensate=undo_one)
def do_one(ctx):
    _ran(ctx, "do_one")
    return assign(ctx, "one", True)


@step(compensate=undo_two)
def do_two(ctx):
    _ran(ctx, "do_two")
    return assign(ctx, "two", True)


@step(compensate=undo_three)
def do_three(ctx):
    _ran(ctx, "do_three")
    return assign(ctx, "three", True)


def fail_last(ctx):
    _ran(ctx, "fail_last")
    raise RuntimeError("the last step fails")


crash_saga = workflow("tests.crash.saga", [do_one, do_two, do_three, fail_last])
