"""Events: the waits that want them, sending them, and matching one to the other.

An event is stored first and consumed later, so it is never lost: by a wait already
parked on it (at `send_event`), or by the first matching wait the step reaches
(`wait_for_*`). Consumption is a conditional update on the event row, so one event
satisfies exactly one wait.

Events are addressed to a workflow execution and stored on it; a wait anywhere in its
tree (its own steps, its parallel branches and foreach items) hears them, because each
wait row carries the `root` it listens to.
"""

import hashlib
import json
import uuid
from typing import Any

from django.db import transaction

from . import clock, codec, executions
from .dsl.names import EVENT_NAME, checked_name
from .durations import to_timedelta
from .errors import (
    ContextNotSerializable,
    InvalidEventName,
    WaitCancelled,
    WorkflowDefinitionError,
)
from .models import Event, Wait, WaitStatus
from .scope import Suspend, check_still_owner, current, engine_call, is_due, record_once

MAX_KEY_LENGTH = Wait._meta.get_field("key").max_length


def wait_for_event(name: str, *, timeout: Any = None, timeout_value: Any = None) -> Any:
    """The payload of the next event called `name` (or `timeout_value` after `timeout`)."""
    return _wait_for_events(Wait.Kind.EVENT, [name], timeout, timeout_value, "wait_for_event")


def wait_for_any(names: list[str], *, timeout: Any = None, timeout_value: Any = None) -> Any:
    """`(name, payload)` of the first of `names` to arrive (or `timeout_value`)."""
    timed_out = object()
    result = _wait_for_events(Wait.Kind.ANY, names, timeout, timed_out, "wait_for_any")
    return timeout_value if result is timed_out else tuple(result)


def wait_for_all(names: list[str], *, timeout: Any = None, timeout_value: Any = None) -> Any:
    """`{name: payload}` once every one of `names` arrived (or `timeout_value`)."""
    return _wait_for_events(Wait.Kind.ALL, names, timeout, timeout_value, "wait_for_all")


def send_event(execution_id: "uuid.UUID | str", name: str, payload: Any = None) -> None:
    """Deliver an event; a wait parked on it, anywhere in the execution's tree, resumes."""
    try:
        checked_name(name, "An event name", EVENT_NAME)
        codec.encode(name, "name")
    except (WorkflowDefinitionError, ContextNotSerializable) as exc:
        raise InvalidEventName(str(exc)) from None
    codec.encode(payload, "payload")
    with transaction.atomic():
        root = executions.lock_root(execution_id, "receive events")
        Event.objects.create(execution=root, name=name, payload=payload, received_at=clock.now())
        parked = (
            Wait.objects.filter(root=root, status=WaitStatus.WAITING)
            .exclude(kind=Wait.Kind.SLEEP)
            .order_by("created_at", "id")
        )
        for wait in parked:
            if name not in wait.event_names:
                continue
            owner = executions.lock_member(root, wait.execution_id)
            if wait.step_seq != owner.step_seq:
                continue  # left behind by an earlier visit to a step; nobody listens
            if offer_events(wait) == WaitStatus.RESOLVED:
                executions.wake(owner)
                break


def offer_events(wait: Wait) -> str:
    """Give a parked wait the oldest unconsumed events it wants; returns its new status.
    Inside the caller's transaction when there is one (no savepoint: a failure here
    fails the caller too)."""
    with transaction.atomic(savepoint=False):
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


def end_wait(wait: Wait, status: str) -> None:
    """End a parked wait (conditionally: an event may have resolved it first)."""
    Wait.objects.filter(id=wait.id, status=WaitStatus.WAITING).update(
        status=status, resolved_at=clock.now()
    )


def wait_key(kind: str, names: list[str]) -> str:
    """The key of an event wait within its step visit: distinct for distinct name lists
    (`["a,b"]` is not `["a", "b"]`), and never longer than the column."""
    if kind == Wait.Kind.EVENT:
        return f"{kind}:{names[0]}"
    spelled = f"{kind}:{json.dumps(names, ensure_ascii=False, separators=(',', ':'))}"
    if len(spelled) <= MAX_KEY_LENGTH:
        return spelled
    return f"{kind}:#{hashlib.sha256(spelled.encode()).hexdigest()}"


# -- internals ---------------------------------------------------------------------------


@engine_call
def _wait_for_events(kind: str, names: Any, timeout: Any, timeout_value: Any, what: str) -> Any:
    scope = current(what)
    names = _checked_names(names, what)
    delta = to_timedelta(timeout, f"{what} timeout")
    now = clock.now()
    wait = record_once(
        scope,
        Wait,
        {"key": wait_key(kind, names)},
        kind=kind,
        event_names=names,
        wake_at=now + delta if delta else None,
        created_at=now,
    )
    if wait.status == WaitStatus.WAITING:
        with transaction.atomic():
            check_still_owner(scope)
            offer_events(wait)
        wait.refresh_from_db()
    if wait.status == WaitStatus.WAITING and is_due(wait.wake_at):
        end_wait(wait, WaitStatus.TIMED_OUT)
        wait.refresh_from_db()
    if wait.status == WaitStatus.RESOLVED:
        return wait.result
    if wait.status == WaitStatus.TIMED_OUT:
        return timeout_value
    if wait.status == WaitStatus.WITHDRAWN:
        raise WaitCancelled((wait.result or {}).get("reason", "cancelled"))
    raise Suspend(wait.key, wait.wake_at)


def _checked_names(names: Any, what: str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise WorkflowDefinitionError(f"{what}() needs event names (non-empty strings).")
    return [checked_name(name, f"{what}(): an event name", EVENT_NAME) for name in names]


def _collected(wait: Wait) -> dict:
    """What a wait_for_all has gathered so far."""
    return dict(wait.result or {}) if wait.kind == Wait.Kind.ALL else {}


def _missing(wait: Wait) -> list[str]:
    collected = _collected(wait)
    return [name for name in wait.event_names if name not in collected]


def _unconsumed(wait: Wait, names: list[str]):
    return Event.objects.filter(
        execution_id=wait.root_id, name__in=names, consumed_at__isnull=True
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
