"""Human input: the questions steps ask (`wait_for_input` and its wrappers), checking
answers against them, and answering (`provide_input`).

An answer is checked against the input's type before anything is written, so a bad
value raises `InvalidInput` and changes nothing. Answering and timing out are both
conditional updates of the pending row, so exactly one of them wins. Inputs are
answered through the workflow execution: one asked inside a parallel branch or a
foreach item is found through the `root` its row carries.
"""

import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import QuerySet

from . import clock, codec, executions, signals
from .dsl.names import INPUT_NAME, checked_name
from .durations import to_timedelta
from .errors import (
    ContextNotSerializable,
    InputNotPending,
    InputTimedOut,
    InvalidInput,
    WaitCancelled,
    WorkflowDefinitionError,
)
from .models import InputStatus, InputType, PendingInput
from .scope import Suspend, current, engine_call, is_due, record_once

KEY_PREFIX = "input:"
ON_TIMEOUT = ("resume", "fail")

MAX_EXPONENT = 300
FIELD_TYPES = ("text", "textarea", "number", "boolean", "select", "date", "email")
APPROVAL_VALUES = {
    True: "approved",
    False: "rejected",
    "approved": "approved",
    "rejected": "rejected",
}


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
    checked_name(name, "An input name", INPUT_NAME)
    if type not in InputType.values:
        raise WorkflowDefinitionError(
            f"Input type {type!r} is unknown; use one of {', '.join(InputType.values)}."
        )
    if on_timeout not in ON_TIMEOUT:
        raise WorkflowDefinitionError("on_timeout must be 'resume' or 'fail'.")
    fields = normalise_fields(fields) if type == InputType.FORM else []
    choices = normalise_choices(choices) if "choice" in type else []
    delta = to_timedelta(timeout, "input timeout")
    asked = (prompt, metadata, fields, choices)
    return _ask(scope, name, type, *asked, delta, on_timeout, timeout_value)


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


@engine_call
def _ask(scope, name, kind, prompt, metadata, fields, choices, timeout, on_timeout, timeout_value):
    now = clock.now()
    pending = record_once(
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
        on_created=_announce_request,
    )
    if pending.status == InputStatus.PENDING and is_due(pending.timeout_at):
        PendingInput.objects.filter(id=pending.id, status=InputStatus.PENDING).update(
            status=InputStatus.TIMED_OUT
        )
        pending.refresh_from_db()
    if pending.status == InputStatus.COMPLETED:
        return pending.response
    if pending.status == InputStatus.WITHDRAWN:
        raise WaitCancelled((pending.response or {}).get("reason", "cancelled"))
    if pending.status == InputStatus.TIMED_OUT:
        if on_timeout == "fail":
            raise InputTimedOut(f"Input {name!r} was not answered by {pending.timeout_at:%c}.")
        return timeout_value
    raise Suspend(KEY_PREFIX + name, pending.timeout_at)


def _announce_request(pending: PendingInput) -> None:
    signals.emit(signals.input_requested, PendingInput, pending_input=pending)


def answered(execution_id: Any, step_seq: int, key: str) -> bool:
    """Whether the input a step just parked on was answered (or timed out) meanwhile."""
    return (
        PendingInput.objects.filter(
            execution_id=execution_id, step_seq=step_seq, input_name=key[len(KEY_PREFIX) :]
        )
        .exclude(status=InputStatus.PENDING)
        .exists()
    )


def provide_input(
    execution_id: "uuid.UUID | str", name: str, value: Any, *, responded_by: str | None = None
) -> Any:
    """Answer a pending input; the waiting step resumes with the (normalised) value.

    The input may have been asked anywhere in the execution's tree; if several are open
    under one name, the one asked first is answered.
    """
    _check_responder(responded_by)
    with transaction.atomic():
        root = executions.lock_root(execution_id, "receive input")
        execution, pending = open_input(root, name)
        if pending is None:
            raise InputNotPending(
                f"Execution {root.id} has no pending input named {name!r} (it was never "
                "asked, is already answered, or timed out)."
            )
        return _answer(execution, pending, value, responded_by)


def answer(pending_id: int, value: Any, *, responded_by: str | None = None) -> Any:
    """Answer one pending input by its id (the admin's inbox does), even when others
    of its tree share its name. Same checks and errors as `provide_input`."""
    _check_responder(responded_by)
    with transaction.atomic():
        asked = PendingInput.objects.filter(id=pending_id).values_list("root_id", "execution_id")
        if not asked:
            raise InputNotPending(f"No pending input with id {pending_id!r}.")
        [(root_id, execution_id)] = asked
        root = executions.lock_root(root_id, "receive input")
        execution = executions.lock_member(root, execution_id)
        pending = PendingInput.objects.get(id=pending_id)
        if pending.status != InputStatus.PENDING or pending.step_seq != execution.step_seq:
            raise InputNotPending(f"Input {pending.input_name!r} is no longer pending.")
        return _answer(execution, pending, value, responded_by)


def _answer(execution, pending: PendingInput, value: Any, responded_by: str | None) -> Any:
    """Record a validated answer and wake the step that asked (inside the caller's
    transaction, its rows locked)."""
    now = clock.now()
    if pending.timeout_at is not None and pending.timeout_at <= now:
        # Too late: the step (already due at timeout_at) takes its timeout path.
        raise InputNotPending(f"Input {pending.input_name!r} timed out at {pending.timeout_at:%c}.")
    cleaned = clean_response(pending, value)
    answered = PendingInput.objects.filter(id=pending.id, status=InputStatus.PENDING).update(
        status=InputStatus.COMPLETED,
        response=cleaned,
        responded_by=responded_by,
        responded_at=now,
    )
    if not answered:
        raise InputNotPending(f"Input {pending.input_name!r} was answered or timed out meanwhile.")
    executions.wake(execution)
    pending.status, pending.response = InputStatus.COMPLETED, cleaned
    pending.responded_by, pending.responded_at = responded_by, now
    signals.emit(
        signals.input_provided,
        PendingInput,
        pending_input=pending,
        value=cleaned,
        responded_by=responded_by,
    )
    return cleaned


def open_input(root, name: str):
    """The oldest input named `name` still open in `root`'s tree, with its execution
    (locked after the root); an input left by an earlier visit to a step is skipped."""
    candidates = PendingInput.objects.filter(
        root=root, input_name=name, status=InputStatus.PENDING
    ).order_by("created_at", "id")
    for pending in candidates:
        execution = executions.lock_member(root, pending.execution_id)
        if pending.step_seq == execution.step_seq:
            return execution, pending
    return root, None


def list_pending_inputs(
    status: str | None = InputStatus.PENDING,
    workflow: Any = None,
    timeout_before: datetime | None = None,
) -> QuerySet:
    """Inputs waiting for people (or with another `status`), oldest first."""
    inputs = PendingInput.objects.select_related("execution").order_by("created_at")
    if status is not None:
        inputs = inputs.filter(status=status)
    if workflow is not None:
        inputs = inputs.filter(execution__workflow_name=getattr(workflow, "name", workflow))
    if timeout_before is not None:
        inputs = inputs.filter(timeout_at__lt=timeout_before)
    return inputs


# -- describing inputs (at the wait) ---------------------------------------------------


def normalise_choices(choices: Any) -> list[dict]:
    """Choices as `[{"value", "label"}]`; plain values are their own labels."""
    if not choices:
        raise WorkflowDefinitionError("A choice input needs a non-empty list of choices.")
    normalised = []
    for choice in choices:
        if isinstance(choice, dict):
            if "value" not in choice:
                raise WorkflowDefinitionError(f"Choice {choice!r} has no 'value'.")
            normalised.append(
                {"value": choice["value"], "label": choice.get("label", str(choice["value"]))}
            )
        else:
            normalised.append({"value": choice, "label": str(choice)})
    return normalised


def normalise_fields(fields: Any) -> list[dict]:
    """Form fields with their defaults filled in, checked for type and options."""
    if not fields:
        raise WorkflowDefinitionError("A form input needs a non-empty list of fields.")
    normalised = []
    for spec in fields:
        if not isinstance(spec, dict) or not spec.get("name"):
            raise WorkflowDefinitionError(f"Form field {spec!r} needs a 'name'.")
        kind = spec.get("type", "text")
        if kind not in FIELD_TYPES:
            raise WorkflowDefinitionError(
                f"Form field {spec['name']!r} has type {kind!r}; "
                f"use one of {', '.join(FIELD_TYPES)}."
            )
        field = {
            "name": spec["name"],
            "type": kind,
            "label": spec.get("label", spec["name"].replace("_", " ").capitalize()),
            "required": bool(spec.get("required", False)),
        }
        if kind == "select":
            field["options"] = [
                choice["value"] for choice in normalise_choices(spec.get("options"))
            ]
        normalised.append(field)
    return normalised


# -- checking answers ------------------------------------------------------------------


def clean_response(pending: PendingInput, value: Any) -> Any:
    """The value to store for `pending`, or InvalidInput saying what is wrong."""
    cleaned = _CLEANERS[pending.input_type](pending, value)
    try:
        codec.encode(cleaned, pending.input_name)
    except ContextNotSerializable as exc:
        raise InvalidInput(str(exc)) from None
    return cleaned


def _check_responder(responded_by: Any) -> None:
    if responded_by is None:
        return
    if not isinstance(responded_by, str) or len(responded_by) > 255:
        raise InvalidInput("responded_by must be a string of at most 255 characters.")
    try:
        codec.encode(responded_by, "responded_by")
    except ContextNotSerializable as exc:
        raise InvalidInput(str(exc)) from None


def _clean_text(pending: PendingInput, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(
            f"Input {pending.input_name!r} expects text, not {type(value).__name__}."
        )
    return value


def _clean_approval(pending: PendingInput, value: Any) -> str:
    # Only str and bool: 1 == True and 0 == False, so a plain lookup would accept 1/0.
    if isinstance(value, (str, bool)) and value in APPROVAL_VALUES:
        return APPROVAL_VALUES[value]
    raise InvalidInput(
        f"Input {pending.input_name!r} expects 'approved' or 'rejected' (or True/False), "
        f"not {value!r}."
    )


def _clean_single_choice(pending: PendingInput, value: Any) -> Any:
    offered = [choice["value"] for choice in pending.choices]
    if not _offered(value, offered):
        raise InvalidInput(f"Input {pending.input_name!r}: {value!r} is not one of {offered!r}.")
    return value


def _clean_multi_choice(pending: PendingInput, value: Any) -> list:
    offered = [choice["value"] for choice in pending.choices]
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(f"Input {pending.input_name!r} expects a list of choices.")
    unknown = [item for item in value if not _offered(item, offered)]
    if unknown:
        raise InvalidInput(f"Input {pending.input_name!r}: {unknown!r} not among {offered!r}.")
    if len(set(map(repr, value))) != len(value):
        raise InvalidInput(f"Input {pending.input_name!r}: a choice is given twice.")
    return list(value)


def _offered(value: Any, options: list) -> bool:
    """Whether `value` is one of `options`; True and False are not the choices 1 and 0."""
    return any(
        option == value and isinstance(option, bool) == isinstance(value, bool)
        for option in options
    )


def _clean_form(pending: PendingInput, value: Any) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"Input {pending.input_name!r} expects a dict of form fields.")
    known = {field["name"] for field in pending.fields}
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidInput(f"Input {pending.input_name!r}: unknown field(s) {unknown}.")
    cleaned = {}
    for field in pending.fields:
        raw = value.get(field["name"])
        if raw is None or raw == "":
            if field["required"]:
                raise InvalidInput(
                    f"Input {pending.input_name!r}: field {field['name']!r} is required."
                )
            continue
        cleaned[field["name"]] = _clean_field(pending.input_name, field, raw)
    return cleaned


def _clean_field(input_name: str, field: dict, raw: Any) -> Any:
    kind, name = field["type"], field["name"]

    def invalid(expected: str) -> InvalidInput:
        return InvalidInput(
            f"Input {input_name!r}: field {name!r} expects {expected}, got {raw!r}."
        )

    if kind in ("text", "textarea"):
        if not isinstance(raw, str):
            raise invalid("text")
        return raw
    if kind == "email":
        try:
            validate_email(raw)
        except (ValidationError, TypeError):
            raise invalid("an email address") from None
        return raw
    if kind == "number":
        return _clean_number(raw, invalid)
    if kind == "boolean":
        if not isinstance(raw, bool):
            raise invalid("true or false")
        return raw
    if kind == "select":
        if not _offered(raw, field["options"]):
            raise invalid(f"one of {field['options']!r}")
        return raw
    return _clean_date(raw, invalid)


def _clean_number(raw: Any, invalid) -> int | float | Decimal:
    if isinstance(raw, bool):
        raise invalid("a number")
    if isinstance(raw, int):
        if abs(raw) >= 10**MAX_EXPONENT:
            raise invalid(f"a number within 1e±{MAX_EXPONENT}")
        return raw
    if isinstance(raw, (float, Decimal)):
        # NaN and infinities cannot be stored (and "NaN" != "NaN"), so they are refused.
        if not Decimal(raw).is_finite():
            raise invalid("a finite number")
        return raw
    if isinstance(raw, str):
        try:
            number = Decimal(raw.strip())
        except InvalidOperation:
            raise invalid("a number") from None
        if not number.is_finite():
            raise invalid("a finite number")
        if abs(number.adjusted()) > MAX_EXPONENT:
            # int(Decimal("1e2000000")) would hold the execution's lock for minutes.
            raise invalid(f"a number within 1e±{MAX_EXPONENT}")
        return int(number) if number == number.to_integral_value() else number
    raise invalid("a number")


def _clean_date(raw: Any, invalid) -> date:
    if isinstance(raw, datetime):
        raise invalid("a date")
    if isinstance(raw, date):
        return raw
    try:
        return date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise invalid("a date (YYYY-MM-DD)") from None


_CLEANERS = {
    InputType.FREE_TEXT: _clean_text,
    InputType.APPROVAL: _clean_approval,
    InputType.SINGLE_CHOICE: _clean_single_choice,
    InputType.MULTI_CHOICE: _clean_multi_choice,
    InputType.FORM: _clean_form,
}
