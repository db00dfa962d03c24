"""Human input: `wait_for_input` and its wrappers, `provide_input`, `list_pending_inputs`
(SPEC §3 and §4).

A step asking for input creates a `PendingInput` and suspends; `provide_input` checks
the answer against the input's type before changing anything, and the step runs again
and gets the (normalised) answer. Time only moves through the engine clock.
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

import django_durable as durable
from django_durable import (
    ExecutionNotActive,
    ExecutionNotFound,
    InputNotPending,
    InvalidInput,
    Retry,
    step,
    workflow,
)
from django_durable.helpers import hours, minutes
from django_durable.models import PendingInput, StepExecution, WorkflowExecution
from django_durable.scope import current
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import (
    wait_for_approval,
    wait_for_choice,
    wait_for_form,
    wait_for_input,
    wait_for_text,
)
from tests.calls import calls

WEDNESDAY_NOON = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)


def load(execution_id) -> WorkflowExecution:
    return WorkflowExecution.objects.get(id=execution_id)


def pending(execution_id, name: str) -> PendingInput:
    return PendingInput.objects.get(execution_id=execution_id, input_name=name)


def asked(wf, name: str, input=None):
    """Start `wf`, run it up to its input `name`; returns the execution id."""
    eid = wf.start(input or {})
    run_until_idle()
    assert load(eid).status == "waiting"
    assert pending(eid, name).status == "pending"
    return eid


def answered(wf, name: str, value, **options):
    """Ask, answer with `value`, run to the end; returns the final context."""
    eid = asked(wf, name)
    durable.provide_input(eid, name, value, **options)
    run_until_idle()
    execution = load(eid)
    assert execution.status == "completed", execution.error
    return execution.context


def assert_refused_and_unchanged(eid, name: str, value) -> None:
    """`value` is refused with InvalidInput and neither the input nor the execution moves."""
    execution = load(eid)
    with pytest.raises(InvalidInput):
        durable.provide_input(eid, name, value, responded_by="mallory")
    row = pending(eid, name)
    assert row.status == "pending"
    assert (row.response, row.responded_by, row.responded_at) == (None, None, None)
    after = load(eid)
    assert (after.status, after.run_at) == ("waiting", execution.run_at)
    assert run_until_idle() == 0


# -- workflows -----------------------------------------------------------------------------


def approve(ctx):
    calls["approve"] += 1
    decision = wait_for_approval(
        "manager",
        prompt="Approve the refund?",
        metadata={"amount": Decimal("12.50"), "order": "A-1"},
        timeout=hours(2),
    )
    return {**ctx, "decision": decision}


approval = workflow("inputs.approval", [approve])


def pick_size(ctx):
    size = wait_for_choice(
        "size", choices=[{"value": "s", "label": "Small"}, {"value": "m", "label": "Medium"}]
    )
    return {**ctx, "size": size}


choice = workflow("inputs.choice", [pick_size])


def pick_colour(ctx):
    return {**ctx, "colour": wait_for_choice("colour", ["red", "green", 3])}


plain_choice = workflow("inputs.plain_choice", [pick_colour])


def pick_toppings(ctx):
    return {
        **ctx,
        "toppings": wait_for_choice("toppings", ["cheese", "ham", "olives"], multiple=True),
    }


multi_choice = workflow("inputs.multi_choice", [pick_toppings])


def pick_number(ctx):
    one = wait_for_choice("one", [0, 1])
    many = wait_for_choice("many", [0, 1, 2], multiple=True)
    form = wait_for_form("form", [{"name": "n", "type": "select", "options": [0, 1]}])
    return {**ctx, "one": one, "many": many, "form": form}


numeric_choice = workflow("inputs.numeric_choice", [pick_number])


def comment(ctx):
    return {**ctx, "comment": wait_for_text("comment", prompt="Anything to add?")}


text = workflow("inputs.text", [comment])


def raw_question(ctx):
    return {**ctx, "raw": wait_for_input("raw")}


generic = workflow("inputs.generic", [raw_question])


def unknown_type(ctx):
    return {**ctx, "raw": wait_for_input("raw", type="telepathy")}


bad_type = workflow("inputs.bad_type", [unknown_type])

FORM_FIELDS = [
    {"name": "name", "type": "text", "label": "Your name", "required": True},
    {"name": "notes", "type": "textarea"},
    {"name": "qty", "type": "number", "required": True},
    {"name": "gift", "type": "boolean"},
    {"name": "size", "type": "select", "options": ["s", {"value": "m", "label": "Medium"}]},
    {"name": "deliver_on", "type": "date"},
    {"name": "email", "type": "email"},
]


def fill_in(ctx):
    form = wait_for_form("details", fields=FORM_FIELDS)
    return {**ctx, "form": form, "deliver_on_is_date": type(form.get("deliver_on")) is date}


form = workflow("inputs.form", [fill_in])


def note_or_default(ctx):
    calls["note_or_default"] += 1
    return {**ctx, "note": wait_for_text("note", timeout=hours(1), timeout_value="(none)")}


resume_on_timeout = workflow("inputs.resume_on_timeout", [note_or_default])


@step(retry=Retry(max_attempts=3, backoff="constant", base=1))
def must_answer(ctx):
    calls["must_answer"] += 1
    return {**ctx, "ok": wait_for_approval("ok", timeout=hours(1), on_timeout="fail")}


fail_on_timeout = workflow("inputs.fail_on_timeout", [must_answer])


def answer_while_parking(ctx):
    """The answer comes after the wait decided to suspend, before the engine parked."""
    calls["parking"] += 1
    try:
        value = wait_for_text("note")
    except BaseException:
        if calls["parking"] == 1:
            durable.provide_input(current("test").execution_id, "note", "quick")
        raise
    return {**ctx, "note": value}


parking_race = workflow("inputs.parking_race", [answer_while_parking])


# -- asking --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_asking_stores_the_pending_input(frozen):
    eid = approval.start({})
    run_until_idle()

    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at == frozen + hours(2)  # woken at the timeout at the latest
    row = pending(eid, "manager")
    assert row.input_type == "approval"
    assert row.status == "pending"
    assert row.step_name == "approve"
    assert row.prompt == "Approve the refund?"
    assert row.metadata == {"amount": Decimal("12.50"), "order": "A-1"}
    assert row.timeout_at == frozen + hours(2)
    assert (row.response, row.responded_by, row.responded_at) == (None, None, None)
    assert StepExecution.objects.get(execution_id=eid).status == "waiting"


@pytest.mark.django_db
def test_choices_and_form_fields_are_stored_normalised():
    eid = asked(choice, "size")
    assert pending(eid, "size").choices == [
        {"value": "s", "label": "Small"},
        {"value": "m", "label": "Medium"},
    ]
    assert pending(eid, "size").input_type == "single_choice"
    assert pending(eid, "size").timeout_at is None

    eid = asked(plain_choice, "colour")
    assert pending(eid, "colour").choices == [
        {"value": "red", "label": "red"},
        {"value": "green", "label": "green"},
        {"value": 3, "label": "3"},
    ]

    eid = asked(multi_choice, "toppings")
    assert pending(eid, "toppings").input_type == "multi_choice"

    eid = asked(form, "details")
    row = pending(eid, "details")
    assert row.input_type == "form"
    by_name = {field["name"]: field for field in row.fields}
    assert [field["name"] for field in row.fields] == [f["name"] for f in FORM_FIELDS]
    assert by_name["name"] == {
        "name": "name",
        "type": "text",
        "label": "Your name",
        "required": True,
    }
    assert by_name["notes"]["type"] == "textarea"
    assert by_name["notes"]["required"] is False
    assert by_name["deliver_on"]["label"] == "Deliver on"
    assert by_name["size"]["options"] == ["s", "m"]


@pytest.mark.django_db
def test_an_unknown_input_type_fails_the_step():
    eid = bad_type.start({})
    run_until_idle()

    execution = load(eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "WorkflowDefinitionError"
    assert not PendingInput.objects.filter(execution_id=eid).exists()


# -- answering -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_answer_resumes_the_step_with_responded_by_and_at(frozen):
    eid = asked(approval, "manager")
    advance_clock(minutes(10))

    returned = durable.provide_input(eid, "manager", "approved", responded_by="alice")

    assert returned == "approved"
    row = pending(eid, "manager")
    assert row.status == "completed"
    assert row.response == "approved"
    assert row.responded_by == "alice"
    assert row.responded_at == frozen + minutes(10)
    assert load(eid).run_at == frozen + minutes(10)  # runnable now, not at the timeout

    run_until_idle()
    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"decision": "approved"}
    assert calls["approve"] == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value, expected",
    [("approved", "approved"), ("rejected", "rejected"), (True, "approved"), (False, "rejected")],
)
def test_approval_answers_are_normalised(value, expected):
    assert answered(approval, "manager", value) == {"decision": expected}
    assert PendingInput.objects.get(input_name="manager").response == expected


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["yes", "Approved", 1, 0, None, ["approved"], {}])
def test_other_approval_answers_are_refused(value):
    eid = asked(approval, "manager")
    assert_refused_and_unchanged(eid, "manager", value)

    durable.provide_input(eid, "manager", "rejected")
    run_until_idle()
    assert load(eid).context == {"decision": "rejected"}


@pytest.mark.django_db
def test_a_choice_must_be_one_of_the_choices():
    eid = asked(choice, "size")
    for value in ("l", "Small", None, ["s"]):
        assert_refused_and_unchanged(eid, "size", value)

    durable.provide_input(eid, "size", "m")
    run_until_idle()
    assert load(eid).context == {"size": "m"}


@pytest.mark.django_db
def test_plain_string_choices_are_accepted():
    assert answered(plain_choice, "colour", "green") == {"colour": "green"}
    assert answered(plain_choice, "colour", 3) == {"colour": 3}

    eid = asked(plain_choice, "colour")
    assert_refused_and_unchanged(eid, "colour", "blue")


@pytest.mark.django_db
def test_multiple_choices_take_a_list():
    assert answered(multi_choice, "toppings", ["ham", "cheese"]) == {"toppings": ["ham", "cheese"]}
    assert answered(multi_choice, "toppings", []) == {"toppings": []}

    eid = asked(multi_choice, "toppings")
    for value in ("ham", ["ham", "pineapple"], ["ham", "ham"], None):
        assert_refused_and_unchanged(eid, "toppings", value)


@pytest.mark.django_db
def test_booleans_are_not_numeric_choices():
    # True == 1 and False == 0 in Python, but an answer True is not the choice 1.
    eid = asked(numeric_choice, "one")
    assert_refused_and_unchanged(eid, "one", True)
    assert_refused_and_unchanged(eid, "one", False)
    durable.provide_input(eid, "one", 1)
    run_until_idle()

    assert_refused_and_unchanged(eid, "many", [True])
    assert_refused_and_unchanged(eid, "many", [0, False])
    durable.provide_input(eid, "many", [0, 2])
    run_until_idle()

    assert_refused_and_unchanged(eid, "form", {"n": True})
    durable.provide_input(eid, "form", {"n": 0})
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"one": 1, "many": [0, 2], "form": {"n": 0}}


@pytest.mark.django_db
def test_text_must_be_a_string():
    assert answered(text, "comment", "all good") == {"comment": "all good"}

    eid = asked(text, "comment")
    assert pending(eid, "comment").prompt == "Anything to add?"
    for value in (42, None, ["x"], {"text": "x"}, True):
        assert_refused_and_unchanged(eid, "comment", value)


@pytest.mark.django_db
def test_wait_for_input_defaults_to_free_text():
    eid = asked(generic, "raw")
    assert pending(eid, "raw").input_type == "free_text"
    assert_refused_and_unchanged(eid, "raw", 1)

    durable.provide_input(eid, "raw", "hello")
    run_until_idle()
    assert load(eid).context == {"raw": "hello"}


@pytest.mark.django_db
def test_a_valid_form_round_trips_with_types():
    answer = {
        "name": "Ada",
        "notes": "ring twice",
        "qty": "3",
        "gift": True,
        "size": "m",
        "deliver_on": "2024-03-08",
        "email": "ada@example.com",
    }
    context = answered(form, "details", answer)

    assert context["form"] == {**answer, "qty": 3, "deliver_on": date(2024, 3, 8)}
    assert context["deliver_on_is_date"] is True
    assert PendingInput.objects.get(input_name="details").response["deliver_on"] == date(2024, 3, 8)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "qty, expected", [(2, 2), (2.5, 2.5), ("7", 7), (" 2.50 ", Decimal("2.50")), ("-1", -1)]
)
def test_form_numbers_accept_numbers_and_numeric_strings(qty, expected):
    context = answered(form, "details", {"name": "Ada", "qty": qty})
    assert context["form"] == {"name": "Ada", "qty": expected}
    assert type(context["form"]["qty"]) is type(expected)


@pytest.mark.django_db
def test_optional_form_fields_may_be_left_out():
    context = answered(form, "details", {"name": "Ada", "qty": 1, "notes": "", "email": None})
    assert context["form"] == {"name": "Ada", "qty": 1}
    assert context["deliver_on_is_date"] is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"qty": 1}, id="required-missing"),
        pytest.param({"name": "", "qty": 1}, id="required-empty"),
        pytest.param({"name": "Ada"}, id="required-number-missing"),
        pytest.param({"name": "Ada", "qty": 1, "colour": "red"}, id="unknown-field"),
        pytest.param({"name": 5, "qty": 1}, id="text-not-str"),
        pytest.param({"name": "Ada", "qty": "three"}, id="number-not-numeric"),
        pytest.param({"name": "Ada", "qty": True}, id="number-bool"),
        pytest.param({"name": "Ada", "qty": [1]}, id="number-list"),
        pytest.param({"name": "Ada", "qty": "Infinity"}, id="number-infinity-str"),
        pytest.param({"name": "Ada", "qty": "NaN"}, id="number-nan-str"),
        pytest.param({"name": "Ada", "qty": "sNaN"}, id="number-snan-str"),
        pytest.param({"name": "Ada", "qty": float("inf")}, id="number-infinity"),
        pytest.param({"name": "Ada", "qty": float("nan")}, id="number-nan"),
        pytest.param({"name": "Ada", "qty": Decimal("NaN")}, id="number-nan-decimal"),
        pytest.param({"name": "Ada", "qty": 1, "gift": "yes"}, id="boolean-str"),
        pytest.param({"name": "Ada", "qty": 1, "gift": 1}, id="boolean-int"),
        pytest.param({"name": "Ada", "qty": 1, "size": "xl"}, id="select-unknown"),
        pytest.param({"name": "Ada", "qty": 1, "size": "Medium"}, id="select-label"),
        pytest.param({"name": "Ada", "qty": 1, "deliver_on": "08/03/2024"}, id="date-format"),
        pytest.param({"name": "Ada", "qty": 1, "deliver_on": "2024-02-30"}, id="date-invalid"),
        pytest.param({"name": "Ada", "qty": 1, "deliver_on": 20240308}, id="date-int"),
        pytest.param({"name": "Ada", "qty": 1, "email": "not-an-email"}, id="email-invalid"),
        pytest.param({"name": "Ada", "qty": 1, "email": "a@b@c.com"}, id="email-two-at"),
        pytest.param({"name": "Ada", "qty": 1, "email": 42}, id="email-int"),
        pytest.param(["Ada", 1], id="not-a-dict"),
        pytest.param("Ada", id="a-string"),
    ],
)
def test_invalid_forms_are_refused_and_change_nothing(answer):
    eid = asked(form, "details")
    assert_refused_and_unchanged(eid, "details", answer)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_provide_input_to_an_unknown_execution():
    with pytest.raises(ExecutionNotFound):
        durable.provide_input("00000000-0000-0000-0000-000000000000", "manager", "approved")
    with pytest.raises(ExecutionNotFound):
        durable.provide_input("nope", "manager", "approved")


@pytest.mark.django_db
def test_provide_input_to_a_finished_execution():
    eid = asked(approval, "manager")
    durable.provide_input(eid, "manager", "approved")
    run_until_idle()
    assert load(eid).status == "completed"

    with pytest.raises(ExecutionNotActive):
        durable.provide_input(eid, "manager", "rejected")

    assert pending(eid, "manager").response == "approved"


@pytest.mark.django_db
def test_provide_input_for_an_input_never_asked():
    eid = asked(approval, "manager")

    with pytest.raises(InputNotPending):
        durable.provide_input(eid, "director", "approved")

    assert pending(eid, "manager").status == "pending"
    assert not PendingInput.objects.filter(input_name="director").exists()


@pytest.mark.django_db
def test_an_input_is_answered_only_once():
    eid = asked(approval, "manager")
    durable.provide_input(eid, "manager", "approved", responded_by="alice")

    with pytest.raises(InputNotPending):
        durable.provide_input(eid, "manager", "rejected", responded_by="bob")

    row = pending(eid, "manager")
    assert (row.response, row.responded_by) == ("approved", "alice")
    run_until_idle()
    assert load(eid).context == {"decision": "approved"}


@pytest.mark.django_db
def test_an_answer_before_the_step_asked_is_refused():
    eid = approval.start({})  # pending: the step has not run yet

    with pytest.raises(InputNotPending):
        durable.provide_input(eid, "manager", "approved")

    run_until_idle()
    assert pending(eid, "manager").status == "pending"


# -- timeouts ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_on_timeout_resume_returns_the_timeout_value(frozen):
    eid = asked(resume_on_timeout, "note")
    assert load(eid).run_at == frozen + hours(1)

    advance_clock(minutes(59))
    assert run_until_idle() == 0

    advance_clock(minutes(1))
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"note": "(none)"}
    row = pending(eid, "note")
    assert (row.status, row.response, row.responded_at) == ("timed_out", None, None)


@pytest.mark.django_db
def test_on_timeout_fail_fails_the_step_without_retrying():
    eid = asked(fail_on_timeout, "ok")

    advance_clock(hours(1))
    run_until_idle()
    advance_clock(hours(1))  # any retry delay would have passed long ago
    run_until_idle()

    execution = load(eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "InputTimedOut"
    assert execution.attempt == 1
    runs = StepExecution.objects.filter(execution_id=eid).order_by("started_at", "completed_at")
    assert [run.status for run in runs] == ["resumed", "failed"]
    assert runs.last().error["type"] == "InputTimedOut"
    assert calls["must_answer"] == 2
    assert pending(eid, "ok").status == "timed_out"


@pytest.mark.django_db
def test_an_answer_after_the_timeout_passed_loses_to_the_timeout():
    eid = asked(resume_on_timeout, "note")
    advance_clock(hours(1) + timedelta(seconds=1))

    # The timeout time has passed but the step has not run again yet.
    with pytest.raises(InputNotPending):
        durable.provide_input(eid, "note", "too late", responded_by="carol")

    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"note": "(none)"}
    row = pending(eid, "note")
    assert (row.status, row.response, row.responded_by) == ("timed_out", None, None)
    assert calls["note_or_default"] == 2


@pytest.mark.django_db
def test_an_answer_before_the_timeout_wins_even_if_the_step_runs_after_it():
    eid = asked(resume_on_timeout, "note")
    advance_clock(minutes(59))
    durable.provide_input(eid, "note", "just in time")

    advance_clock(hours(5))
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"note": "just in time"}
    row = pending(eid, "note")
    assert (row.status, row.response) == ("completed", "just in time")


@pytest.mark.django_db
def test_an_answer_given_while_the_step_is_parking_is_not_lost():
    eid = parking_race.start({})

    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed", (execution.status, execution.run_at)
    assert execution.context == {"note": "quick"}
    assert calls["parking"] == 2


# -- cancelling and listing ----------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_marks_pending_inputs_cancelled():
    eid = asked(approval, "manager")

    durable.cancel(eid, reason="no longer needed")

    assert load(eid).status == "cancelled"
    assert pending(eid, "manager").status == "cancelled"
    assert durable.list_pending_inputs().count() == 0
    with pytest.raises(ExecutionNotActive):
        durable.provide_input(eid, "manager", "approved")


@pytest.mark.django_db
def test_list_pending_inputs_filters(frozen):
    first = asked(approval, "manager")  # times out at +2h
    advance_clock(minutes(1))
    second = asked(resume_on_timeout, "note")  # times out at +1h01
    advance_clock(minutes(1))
    third = asked(text, "comment")  # never times out
    advance_clock(minutes(1))
    answered_one = asked(approval, "manager")
    durable.provide_input(answered_one, "manager", "approved")

    def ids(queryset):
        return [row.execution_id for row in queryset]

    assert ids(durable.list_pending_inputs()) == [first, second, third]
    assert ids(durable.list_pending_inputs(status="pending")) == [first, second, third]
    assert ids(durable.list_pending_inputs(status="completed")) == [answered_one]
    assert ids(durable.list_pending_inputs(status=None)) == [first, second, third, answered_one]
    assert ids(durable.list_pending_inputs(workflow="inputs.approval")) == [first]
    assert ids(durable.list_pending_inputs(workflow=approval)) == [first]
    assert ids(durable.list_pending_inputs(workflow="inputs.unknown")) == []
    assert ids(durable.list_pending_inputs(timeout_before=frozen + hours(1))) == []
    assert ids(durable.list_pending_inputs(timeout_before=frozen + hours(1) + minutes(2))) == [
        second
    ]
    assert ids(durable.list_pending_inputs(timeout_before=frozen + hours(3))) == [first, second]
    assert ids(
        durable.list_pending_inputs(workflow=approval, timeout_before=frozen + hours(3))
    ) == [first]
