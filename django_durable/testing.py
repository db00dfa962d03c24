"""Run workflows inside a test, without a worker process.

`run_until_idle` claims and runs executions through the same engine code as the worker;
`advance_clock` moves the engine's clock so retry delays and timeouts pass at once.
"""

from datetime import timedelta

from . import claims, clock, engine, ids, timers
from .durations import to_timedelta

WORKER_NAME = "testing"


def run_until_idle(*, max_steps: int = 10_000) -> int:
    """Run everything runnable at the engine clock's current time; returns the attempts run."""
    attempts = 0
    while attempts < max_steps:
        timers.run_timers()
        claimed = claims.claim_and_start(WORKER_NAME, None, ids.time_ordered())
        if claimed is None:
            break
        attempts += engine.run_claimed(
            claimed,
            worker=WORKER_NAME,
            queues=None,
            keep_going=_within(max_steps - attempts),
        )
    return attempts


def _within(budget: int):
    return lambda ran: ran < budget


def advance_clock(delta: timedelta | int | float) -> None:
    """Move the engine clock forward by `delta` (a timedelta or seconds)."""
    clock.advance(to_timedelta(delta, "advance_clock delta"))


def reset_clock() -> None:
    """Put the engine clock back to the wall clock."""
    clock.reset()
