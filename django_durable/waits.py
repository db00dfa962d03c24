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

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F

from . import clock, events, executions, forks, inputs, orchestration, registry
from .durations import to_timedelta
from .errors import NoOpenWait, WorkflowDefinitionError
from .events import wait_for_all, wait_for_any, wait_for_event
from .inputs import (
    wait_for_approval,
    wait_for_choice,
    wait_for_form,
    wait_for_input,
    wait_for_text,
)
from .models import InputStatus, PendingInput, Wait, WaitStatus
from .scope import StepScope, Suspend, current, engine_call, is_due, record_once

__all__ = [
    "cancel_wait",
    "list_pending_events",
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


EVENT_KINDS = (Wait.Kind.EVENT, Wait.Kind.ANY, Wait.Kind.ALL)


def list_pending_events(event_name: str | None = None, workflow: Any = None) -> list[Wait]:
    """The event waits steps are parked on now (oldest first), with their execution:
    `event_names` says what each waits for, `wake_at` when it times out. Waits left
    behind by an earlier visit to a step are not listed."""
    waits = (
        Wait.objects.filter(status=WaitStatus.WAITING, kind__in=EVENT_KINDS)
        .filter(step_seq=F("execution__step_seq"))
        .select_related("execution")
        .order_by("created_at", "id")
    )
    if workflow is not None:
        waits = waits.filter(root__workflow_name=registry.get(workflow).name)
    return [wait for wait in waits if event_name is None or event_name in wait.event_names]


def cancel_wait(execution_id: "uuid.UUID | str", name: str, reason: str = "cancelled") -> None:
    """Withdraw the open wait named `name` (an event wait for that event, else a pending
    input of that name) anywhere in an active execution's tree, oldest first: the step
    runs again and its wait call raises `WaitCancelled(reason)`."""
    with transaction.atomic():
        root = executions.lock_root(execution_id, "have a wait cancelled")
        now = clock.now()
        for wait in Wait.objects.filter(
            root=root, status=WaitStatus.WAITING, kind__in=EVENT_KINDS
        ).order_by("created_at", "id"):
            if name not in wait.event_names:
                continue
            owner = executions.lock_member(root, wait.execution_id)
            if wait.step_seq == owner.step_seq:
                Wait.objects.filter(id=wait.id, status=WaitStatus.WAITING).update(
                    status=WaitStatus.WITHDRAWN, result={"reason": reason}, resolved_at=now
                )
                executions.wake(owner)
                return
        owner, pending = inputs.open_input(root, name)
        if pending is None:
            raise NoOpenWait(
                f"Execution {root.id} has no open event wait or pending input named {name!r}."
            )
        PendingInput.objects.filter(id=pending.id, status=InputStatus.PENDING).update(
            status=InputStatus.WITHDRAWN, response={"reason": reason}, responded_at=now
        )
        executions.wake(owner)


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
