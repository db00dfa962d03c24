"""Events sent to executions, and how they are matched to the waits that want them.

An event is stored first and consumed later, so it is never lost: by a wait already
parked on it (at `send_event`), or by the first matching wait the step reaches
(`waits.wait_for_*`). Consumption is a conditional update on the event row, so one
event satisfies exactly one wait.
"""

import uuid
from typing import Any

from django.db import transaction

from . import claims, clock, codec
from .errors import ContextNotSerializable, ExecutionNotActive, InvalidEventName
from .models import ACTIVE_STATUSES, Event, ExecutionStatus, Wait, WaitStatus, WorkflowExecution

MAX_NAME_LENGTH = Event._meta.get_field("name").max_length


def send_event(execution_id: "uuid.UUID | str", name: str, payload: Any = None) -> None:
    """Deliver an event; a wait parked on it resumes the execution at once."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidEventName(
            f"An event name must be a string of 1 to {MAX_NAME_LENGTH} characters, not {name!r}."
        )
    try:
        codec.encode(name, "name")
    except ContextNotSerializable as exc:
        raise InvalidEventName(str(exc)) from None
    codec.encode(payload, "payload")
    with transaction.atomic():
        execution = lock_active_execution(execution_id, "receive events")
        Event.objects.create(
            execution=execution, name=name, payload=payload, received_at=clock.now()
        )
        parked = Wait.objects.filter(
            execution=execution, step_seq=execution.step_seq, status=WaitStatus.WAITING
        ).exclude(kind=Wait.Kind.SLEEP)
        for wait in parked:
            if name in wait.event_names and offer_events(wait) == WaitStatus.RESOLVED:
                wake(execution)
                break


def lock_active_execution(execution_id: "uuid.UUID | str", action: str) -> WorkflowExecution:
    """Lock an execution row for a change sent from outside, or explain why not."""
    execution = WorkflowExecution.objects.select_for_update().by_id(execution_id)
    if execution.status not in ACTIVE_STATUSES:
        raise ExecutionNotActive(
            f"Execution {execution.id} is {execution.status}, so it cannot {action}."
        )
    return execution


def wake(execution: WorkflowExecution) -> None:
    """Make a parked execution runnable now (a running one re-checks when it parks)."""
    if execution.status == ExecutionStatus.WAITING:
        WorkflowExecution.objects.filter(id=execution.id, status=ExecutionStatus.WAITING).update(
            run_at=clock.now()
        )
        claims.notify(execution.run_queue)


def offer_events(wait: Wait) -> str:
    """Give a parked wait the oldest unconsumed events it wants; returns its new status."""
    with transaction.atomic():
        wait = Wait.objects.select_for_update().get(id=wait.id)
        if wait.status != WaitStatus.WAITING:
            return wait.status
        collected = _collected(wait)
        for event in _unconsumed(wait, _missing(wait)):
            if wait.kind == Wait.Kind.ALL and event.name in collected:
                continue
            if not _consume(event, wait):
                continue
            if wait.kind == Wait.Kind.EVENT:
                return _resolve(wait, event.payload)
            if wait.kind == Wait.Kind.ANY:
                return _resolve(wait, [event.name, event.payload])
            collected[event.name] = event.payload
            if len(collected) == len(wait.event_names):
                return _resolve(wait, collected)
        if collected:
            Wait.objects.filter(id=wait.id).update(result=collected)
        return wait.status


def has_unconsumed(wait: Wait) -> bool:
    """Whether events a parked wait still wants are stored (sent while it was parking)."""
    return _unconsumed(wait, _missing(wait)).exists()


def _collected(wait: Wait) -> dict:
    """What a wait_for_all has gathered so far."""
    return dict(wait.result or {}) if wait.kind == Wait.Kind.ALL else {}


def _missing(wait: Wait) -> list[str]:
    collected = _collected(wait)
    return [name for name in wait.event_names if name not in collected]


def _unconsumed(wait: Wait, names: list[str]):
    return Event.objects.filter(
        execution_id=wait.execution_id, name__in=names, consumed_at__isnull=True
    ).order_by("id")


def _consume(event: Event, wait: Wait) -> bool:
    return bool(
        Event.objects.filter(id=event.id, consumed_at__isnull=True).update(
            consumed_by=wait, consumed_at=clock.now()
        )
    )


def _resolve(wait: Wait, result: Any) -> str:
    Wait.objects.filter(id=wait.id, status=WaitStatus.WAITING).update(
        status=WaitStatus.RESOLVED, result=result, resolved_at=clock.now()
    )
    return WaitStatus.RESOLVED
