"""Workflows run by real `durable_worker` processes in tests/test_worker_processes.py.

The worker and the test are different processes, so steps report what they did through
files in the directory named by `ctx["dir"]` (the test's tmp_path): every step call
appends one JSON line to `trace.jsonl` (O_APPEND, one small write, so lines from
several processes never interleave), and slow steps wait for marker files the test
creates, instead of sleeping for a guessed time.
"""

import json
import os
import time
from pathlib import Path

from django_durable import Retry, step, workflow

MARKER_WAIT_SECONDS = 60


def _append(path: Path, record: dict) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_records(path) -> list[dict]:
    """The JSON lines appended to `path` so far (a line still being written is skipped)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def read_trace(directory) -> list[dict]:
    """Every step call recorded under `directory`, in the order they finished."""
    return read_records(Path(directory) / "trace.jsonl")


def _traced(name: str, ctx: dict, work=None) -> dict:
    """Run `work()` inside a recorded call: the pid and the entry and exit times."""
    entered = time.time()
    extra = work() if work is not None else {}
    if ctx.get("sleep"):
        time.sleep(ctx["sleep"])
    record = {
        "key": ctx.get("key"),
        "step": name,
        "pid": os.getpid(),
        "enter": entered,
        "exit": time.time(),
    }
    _append(Path(ctx["dir"]) / "trace.jsonl", record)
    return {**ctx, **extra, "trace": [*ctx.get("trace", []), record]}


def _wait_for_marker(path: Path) -> None:
    give_up_at = time.monotonic() + MARKER_WAIT_SECONDS
    while not path.exists():
        if time.monotonic() > give_up_at:
            raise RuntimeError(f"marker {path} never appeared")
        time.sleep(0.05)


# -- three quick steps -------------------------------------------------------------------


def first(ctx):
    return _traced("first", ctx)


def second(ctx):
    return _traced("second", ctx)


def third(ctx):
    return _traced("third", ctx)


three_steps = workflow("worker_tests.three_steps", [first, second, third])


# -- a step that runs until the test lets it finish --------------------------------------


def hold(ctx):
    """Say it has started (`entered` gets this pid), then wait for the `release` file."""
    directory = Path(ctx["dir"])
    _append(directory / "entered", {"pid": os.getpid(), "at": time.time()})
    _wait_for_marker(directory / "release")
    return _traced("hold", ctx, lambda: {"held_by": os.getpid()})


def after_hold(ctx):
    return _traced("after_hold", ctx)


held = workflow("worker_tests.held", [hold, after_hold])


# -- a step that overruns its timeout once ------------------------------------------------


@step(timeout=1, retry=Retry(max_attempts=2, backoff="constant", base=0.2))
def overrun_once(ctx):
    """The first call takes 3 s (past the 1 s timeout) and returns "first"; the retry
    returns "second" at once. `first-done` appears when the late first call returns."""
    directory = Path(ctx["dir"])
    try:
        fd = os.open(directory / "first-attempt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return _traced("overrun_once", ctx, lambda: {"value": "second"})
    os.close(fd)
    time.sleep(3)
    result = _traced("overrun_once", ctx, lambda: {"value": "first"})
    (directory / "first-done").touch()
    return result


overrun = workflow("worker_tests.overrun", [overrun_once])


# -- a step that fails once and is retried two seconds later -------------------------------


@step(retry=Retry(max_attempts=2, backoff="constant", base=2))
def fail_once(ctx):
    directory = Path(ctx["dir"])
    try:
        fd = os.open(directory / "failed-once", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return _traced("fail_once", ctx, lambda: {"recovered": True})
    os.close(fd)
    raise RuntimeError("first attempt fails on purpose")


retried = workflow("worker_tests.retried", [fail_once])


def exit_process(ctx):
    raise SystemExit(2)  # e.g. an argparse-based helper called from a step


exits = workflow("worker_tests.exits", [exit_process])


def on_reports(ctx):
    return {**ctx, "ran_on": "reports"}


reports = workflow("worker_tests.reports", [on_reports], queue="reports")
gpu_step = workflow("worker_tests.gpu_step", [step(on_reports, queue="gpu")])
