"""Waiting inside a step: sleeps and schedules here, and every other wait re-exported.

A wait that cannot be satisfied yet raises `Suspend`: the engine parks the execution
(status `waiting`) and frees the worker thread. When the wait can be satisfied (its
time came, its event or answer arrived, its timeout passed) the step runs again *from
its top*; waits it already passed return their recorded values at once, so code before
a wait runs again but every wait resolves exactly once.

Waits are matched by name within one visit to a step (sleeps and schedules by the order
they are called in), so a step may wait several times. Event waits live beside
`send_event` (`events`), input waits beside `provide_input` (`inputs`).
"""

from datetime import datetime, timedelta
from typing import Any

from . import clock, events, forks, inputs, orchestration
from .durations import to_timedelta
from .errors import WorkflowDefinitionError
from .events import wait_for_all, wait_for_any, wait_for_event
from .inputs import (
    wait_for_approval,
    wait_for_choice,
    wait_for_form,
    wait_for_input,
    wait_for_text,
)
from .models import Wait, WaitStatus
from .scope import StepScope, Suspend, current, engine_call, is_due, record_once

__all__ = [
    "schedule_at",
    "sleep",
    "wait_for_all",
    "wait_for_any",
    "wait_for_approval",
    "wait_for_choice",
    "wait_for_event",
    "wait_for_form",
    "wait_for_input",
    "wait_for_text",
]


def sleep(duration: timedelta | int | float) -> None:
    """Park the execution for `duration` (a timedelta or seconds)."""
    scope = current("sleep")
    delta = to_timedelta(duration, "sleep duration")
    _sleep_until(scope, lambda now: now + delta)


def schedule_at(when: datetime) -> None:
    """Park the execution until `when` (an aware datetime); returns at once if it passed."""
    scope = current("schedule_at")
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise WorkflowDefinitionError("schedule_at() needs a time-zone aware datetime.")
    _sleep_until(scope, lambda now: when)


def can_resume(execution_id: Any, step_seq: int, key: str) -> bool:
    """Whether the wait a step just parked on was satisfied while it was parking."""
    if key.startswith(inputs.KEY_PREFIX):
        return inputs.answered(execution_id, step_seq, key)
    if key == forks.JOIN_KEY:
        return forks.all_joined(execution_id, step_seq)
    wait = Wait.objects.filter(execution_id=execution_id, step_seq=step_seq, key=key).first()
    if wait is None or wait.status != WaitStatus.WAITING:
        return True
    if wait.kind == Wait.Kind.CHILD:
        return orchestration.child_finished(wait)
    return wait.kind != Wait.Kind.SLEEP and events.has_unconsumed(wait)


@engine_call
def _sleep_until(scope: StepScope, wake_at) -> None:
    now = clock.now()
    wait = record_once(
        scope,
        Wait,
        {"key": scope.next_sleep_key()},
        kind=Wait.Kind.SLEEP,
        event_names=[],
        wake_at=wake_at(now),
        created_at=now,
    )
    if wait.status != WaitStatus.WAITING:
        return
    if is_due(wait.wake_at):
        events.end_wait(wait, WaitStatus.RESOLVED)
        return
    raise Suspend(wait.key, wait.wake_at)
