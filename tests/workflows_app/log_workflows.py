"""Workflows whose steps log and print, for tests/test_log_capture.py."""

import logging
import threading
import time

from django_durable import parallel, step, workflow

log = logging.getLogger("tests.log_workflows")


def chatty(ctx):
    log.info("charging %s", ctx.get("order", "?"))
    print("printed line")
    print("no newline at the end", end="")
    return ctx


def quiet(ctx):
    return {**ctx, "quiet": True}


def flaky(ctx):
    try:
        raise ValueError("card declined")
    except ValueError:
        log.exception("payment failed")
        raise


def flood(ctx):
    for line in range(1500):
        print(f"line {line}")
    log.warning("x" * 20_000)
    return ctx


def branch_body(name: str):
    def body(ctx):
        # Both branches are inside their step at the same time, on two worker threads.
        barrier_file = ctx["dir"] + f"/{name}.started"
        open(barrier_file, "w").close()
        other = "left" if name == "right" else "right"
        give_up = time.monotonic() + 30
        while not _exists(ctx["dir"] + f"/{other}.started") and time.monotonic() < give_up:
            time.sleep(0.01)
        for index in range(20):
            log.info("%s %d on %s", name, index, threading.current_thread().name)
            print(f"{name} printed {index}")
            time.sleep(0.001)
        return ctx

    body.__name__ = f"{name}_body"
    return step(body, name=f"{name}_body")


def _exists(path: str) -> bool:
    try:
        open(path).close()
    except FileNotFoundError:
        return False
    return True


logged = workflow("logs.logged", [chatty, quiet])
failing = workflow("logs.failing", [step(flaky)])
flooded = workflow("logs.flooded", [flood])
side_by_side = workflow(
    "logs.side_by_side",
    [parallel(branch_body("left"), branch_body("right"), name="both")],
)
