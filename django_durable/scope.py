"""What the current thread is running: the execution and step visit that waits belong to."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from .errors import NotInStep, WaitInsideTransaction


class Suspend(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a wait that cannot be satisfied yet; the engine parks the execution.

    It derives from BaseException so that a step's `except Exception:` cannot swallow it.
    """

    def __init__(self, key: str, wake_at: datetime | None):
        super().__init__(key)
        self.key = key
        self.wake_at = wake_at


class Superseded(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised when the running attempt finds it no longer owns its execution (it was
    cancelled, timed out or reclaimed meanwhile): it stops before writing anything."""


@dataclass
class StepScope:
    execution_id: object
    run_token: object
    step_name: str
    step_seq: int
    atomic_depth: int = 0
    sleeps: int = 0

    def next_sleep_key(self) -> str:
        """Sleeps have no name, so they are told apart by their order in the step."""
        key = f"sleep:{self.sleeps}"
        self.sleeps += 1
        return key


_current: ContextVar[StepScope | None] = ContextVar("durable_step_scope", default=None)


def current(what: str) -> StepScope:
    scope = _current.get()
    if scope is None:
        raise NotInStep(f"{what}() can only be called inside a running workflow step.")
    if len(connection.atomic_blocks) > scope.atomic_depth:
        raise WaitInsideTransaction(
            f"{what}() was called inside transaction.atomic(); parking the step would roll "
            "back the wait itself. Call it outside the atomic block."
        )
    return scope


@contextmanager
def entered(scope: StepScope) -> Iterator[StepScope]:
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)
