"""What the current thread is running: the step visit that waits belong to, and the
rules every wait follows (recorded once, written only by the attempt that owns the
execution, and never blamed on the step when the database itself fails)."""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction

from . import clock
from .errors import NotInStep, WaitInsideTransaction
from .models import WorkflowExecution

DATABASE_ERRORS = (OperationalError, InterfaceError)


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


class Interrupted(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """The database failed while a wait talked to it: an infrastructure error, not the
    step's. The engine re-raises `error` so the worker releases the attempt instead of
    spending one of the step's retries on it."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


@dataclass
class StepScope:
    execution_id: object
    run_token: object
    step_name: str
    step_seq: int
    root_id: object = None
    atomic_depth: int = 0
    sleeps: int = 0
    children: set = field(default_factory=set)  # child keys called in this run

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


def engine_call(wait: Callable) -> Callable:
    """Mark a wait function: a database failure inside it interrupts the attempt."""

    @functools.wraps(wait)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return wait(*args, **kwargs)
        except DATABASE_ERRORS as exc:
            raise Interrupted(exc) from exc

    return guarded


def record_once(scope: StepScope, model, key: dict, *, on_created=None, **values):
    """The row this step visit recorded under `key`, created (by its owner only) on the
    first run that reaches the wait; later runs of the step find it again. `on_created`
    is called with the row in the transaction that creates it."""
    key = {"execution_id": scope.execution_id, "step_seq": scope.step_seq, **key}
    found = model.objects.filter(**key).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            check_still_owner(scope)
            row = model.objects.create(
                **key, root_id=scope.root_id, step_name=scope.step_name, **values
            )
            if on_created is not None:
                on_created(row)
            return row
    except IntegrityError:
        return model.objects.get(**key)


def check_still_owner(scope: StepScope) -> None:
    """Stop an attempt that lost its execution before it records a wait or takes an
    event that belongs to whoever runs the step now (call inside a transaction)."""
    owns = (
        WorkflowExecution.objects.select_for_update()
        .filter(id=scope.execution_id, run_token=scope.run_token)
        .exists()
    )
    if not owns:
        raise Superseded(scope.execution_id)


def is_due(when: datetime | None) -> bool:
    return when is not None and when <= clock.now()
