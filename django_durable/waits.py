"""Waiting inside a step: sleeps, schedules, events and human input.

A wait that cannot be satisfied yet raises `Suspend`: the engine parks the execution
(status `waiting`) and frees the worker thread. When the wait can be satisfied (its
time came, its event or answer arrived, its timeout passed) the step runs again *from
its top*; waits it already passed return their recorded values at once, so code before
a wait runs again but every wait resolves exactly once.

Waits are matched by name within one visit to a step (sleeps and schedules by the order
they are called in), so a step may wait several times.
"""

from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction

from . import clock, events, inputs
from .durations import to_timedelta
from .errors import InputTimedOut, WorkflowDefinitionError
from .models import InputStatus, InputType, PendingInput, Wait, WaitStatus, WorkflowExecution
from .scope import StepScope, Superseded, Suspend, current

ON_TIMEOUT = ("resume", "fail")


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


def wait_for_input(
    name: str,
    *,
    type: str = InputType.FREE_TEXT,
    prompt: str = "",
    metadata: dict | None = None,
    fields: list[dict] | None = None,
    choices: list | None = None,
    timeout: Any = None,
    timeout_value: Any = None,
    on_timeout: str = "resume",
) -> Any:
    """Ask a person for input (a `PendingInput`) and return their validated answer.

    After `timeout` the call returns `timeout_value`, or with `on_timeout="fail"` fails
    the step with `InputTimedOut`.
    """
    scope = current("wait_for_input")
    if type not in InputType.values:
        raise WorkflowDefinitionError(
            f"Input type {type!r} is unknown; use one of {', '.join(InputType.values)}."
        )
    if on_timeout not in ON_TIMEOUT:
        raise WorkflowDefinitionError("on_timeout must be 'resume' or 'fail'.")
    pending = _pending_input(
        scope,
        name,
        type,
        prompt,
        metadata,
        inputs.normalise_fields(fields) if type == InputType.FORM else [],
        inputs.normalise_choices(choices) if "choice" in type else [],
        to_timedelta(timeout, "input timeout"),
    )
    if pending.status == InputStatus.PENDING and _is_due(pending.timeout_at):
        PendingInput.objects.filter(id=pending.id, status=InputStatus.PENDING).update(
            status=InputStatus.TIMED_OUT
        )
        pending.refresh_from_db()
    if pending.status == InputStatus.COMPLETED:
        return pending.response
    if pending.status == InputStatus.TIMED_OUT:
        if on_timeout == "fail":
            raise InputTimedOut(f"Input {name!r} was not answered by {pending.timeout_at:%c}.")
        return timeout_value
    raise Suspend(input_key(name), pending.timeout_at)


def wait_for_approval(name: str, **options: Any) -> Any:
    """`"approved"` or `"rejected"`."""
    return wait_for_input(name, type=InputType.APPROVAL, **options)


def wait_for_choice(name: str, choices: list, *, multiple: bool = False, **options: Any) -> Any:
    """One of the offered `choices` values (a list of them with `multiple=True`)."""
    kind = InputType.MULTI_CHOICE if multiple else InputType.SINGLE_CHOICE
    return wait_for_input(name, type=kind, choices=choices, **options)


def wait_for_text(name: str, **options: Any) -> Any:
    """Free text."""
    return wait_for_input(name, type=InputType.FREE_TEXT, **options)


def wait_for_form(name: str, fields: list[dict], **options: Any) -> Any:
    """A dict of form values, checked against `fields`."""
    return wait_for_input(name, type=InputType.FORM, fields=fields, **options)


def input_key(name: str) -> str:
    return f"input:{name}"


def can_resume(execution_id: Any, step_seq: int, key: str) -> bool:
    """Whether the wait a step just parked on was satisfied while it was parking."""
    if key.startswith("input:"):
        return (
            PendingInput.objects.filter(
                execution_id=execution_id, step_seq=step_seq, input_name=key[len("input:") :]
            )
            .exclude(status=InputStatus.PENDING)
            .exists()
        )
    wait = Wait.objects.filter(execution_id=execution_id, step_seq=step_seq, key=key).first()
    if wait is None or wait.status != WaitStatus.WAITING:
        return True
    return wait.kind != Wait.Kind.SLEEP and events.has_unconsumed(wait)


# -- internals ---------------------------------------------------------------------------


def _sleep_until(scope: StepScope, wake_at) -> None:
    wait = _wait_row(scope, scope.next_sleep_key(), Wait.Kind.SLEEP, [], wake_at)
    if wait.status != WaitStatus.WAITING:
        return
    if _is_due(wait.wake_at):
        _finish(wait, WaitStatus.RESOLVED)
        return
    raise Suspend(wait.key, wait.wake_at)


def _wait_for_events(kind: str, names: Any, timeout: Any, timeout_value: Any, what: str) -> Any:
    scope = current(what)
    names = _checked_names(names, what)
    delta = to_timedelta(timeout, f"{what} timeout")
    key = f"{kind}:{','.join(names)}"
    wait = _wait_row(scope, key, kind, names, lambda now: now + delta if delta else None)
    if wait.status == WaitStatus.WAITING:
        with transaction.atomic():
            _check_still_owner(scope)
            events.offer_events(wait)
        wait.refresh_from_db()
    if wait.status == WaitStatus.WAITING and _is_due(wait.wake_at):
        _finish(wait, WaitStatus.TIMED_OUT)
        wait.refresh_from_db()
    if wait.status == WaitStatus.RESOLVED:
        return wait.result
    if wait.status == WaitStatus.TIMED_OUT:
        return timeout_value
    raise Suspend(key, wait.wake_at)


def _checked_names(names: Any, what: str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise WorkflowDefinitionError(f"{what}() needs event names (non-empty strings).")
    return names


def _wait_row(scope: StepScope, key: str, kind: str, names: list[str], wake_at) -> Wait:
    """The wait recorded for this step visit under `key`, created on first reach."""
    now = clock.now()
    return _recorded_once(
        scope,
        Wait,
        {"key": key},
        kind=kind,
        event_names=names,
        wake_at=wake_at(now),
        created_at=now,
    )


def _pending_input(scope, name, kind, prompt, metadata, fields, choices, timeout) -> PendingInput:
    now = clock.now()
    return _recorded_once(
        scope,
        PendingInput,
        {"input_name": name},
        input_type=kind,
        prompt=prompt,
        metadata=metadata or {},
        fields=fields,
        choices=choices,
        timeout_at=now + timeout if timeout else None,
        created_at=now,
    )


def _recorded_once(scope: StepScope, model, key: dict, **values):
    """The row this step visit recorded under `key`, created (by its owner only) on the
    first run that reaches the wait; later runs of the step find it again."""
    key = {"execution_id": scope.execution_id, "step_seq": scope.step_seq, **key}
    found = model.objects.filter(**key).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            _check_still_owner(scope)
            return model.objects.create(**key, step_name=scope.step_name, **values)
    except IntegrityError:
        return model.objects.get(**key)


def _check_still_owner(scope: StepScope) -> None:
    """Stop an attempt that lost its execution before it records a wait or takes an
    event that belongs to whoever runs the step now (call inside a transaction)."""
    owns = (
        WorkflowExecution.objects.select_for_update()
        .filter(id=scope.execution_id, run_token=scope.run_token)
        .exists()
    )
    if not owns:
        raise Superseded(scope.execution_id)


def _finish(wait: Wait, status: str) -> None:
    """End a parked wait (conditionally: an event may have resolved it first)."""
    Wait.objects.filter(id=wait.id, status=WaitStatus.WAITING).update(
        status=status, resolved_at=clock.now()
    )


def _is_due(when: datetime | None) -> bool:
    return when is not None and when <= clock.now()
