"""Waiting inside a step: sleeps, schedules and events (SPEC §3, `send_event` in §4).

A wait that cannot be satisfied suspends the execution (status `waiting`, the worker is
freed); once it can be satisfied the step runs again from its top and the wait returns.
Steps count their calls in `calls`, so the tests see exactly what ran and how often.
Time only moves through the engine clock: `frozen` pins it to a known instant and
`advance_clock` moves it on.
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

import django_durable as durable
from django_durable import ExecutionNotActive, NotInStep, workflow
from django_durable.helpers import days, hours, minutes
from django_durable.models import Event, StepExecution, Wait, WorkflowExecution
from django_durable.scope import current
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import (
    schedule_at,
    sleep,
    wait_for_all,
    wait_for_any,
    wait_for_approval,
    wait_for_choice,
    wait_for_event,
    wait_for_form,
    wait_for_input,
    wait_for_text,
)
from tests.calls import calls

WEDNESDAY_NOON = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)


def load(execution_id) -> WorkflowExecution:
    return WorkflowExecution.objects.get(id=execution_id)


def step_statuses(execution_id, step_name: str) -> list[str]:
    return list(
        StepExecution.objects.filter(execution_id=execution_id, step_name=step_name)
        .order_by("started_at", "attempt", "completed_at")
        .values_list("status", flat=True)
    )


def own_execution_id():
    return current("test").execution_id


# -- sleeps ------------------------------------------------------------------------------


def nap(ctx):
    calls["nap.before"] += 1
    sleep(ctx["seconds"] if "seconds" in ctx else hours(1))
    calls["nap.after"] += 1
    return {**ctx, "napped": True}


sleep_once = workflow("waits.sleep_once", [nap])


def long_nap(ctx):
    calls["long_nap.before"] += 1
    sleep(days(3))
    return {**ctx, "napped": True}


sleep_days = workflow("waits.sleep_days", [long_nap])


def nap_twice(ctx):
    calls["nap_twice.top"] += 1
    sleep(hours(1))
    calls["nap_twice.middle"] += 1
    sleep(hours(2))
    calls["nap_twice.end"] += 1
    return {**ctx, "napped": "twice"}


sleep_twice = workflow("waits.sleep_twice", [nap_twice])


def wake_at(ctx):
    calls["wake_at"] += 1
    when = datetime(2030, 1, 1, 9, 0) if ctx.get("naive") else ctx["when"]
    schedule_at(when)
    return {**ctx, "woke": True}


scheduled = workflow("waits.schedule_at", [wake_at])


@pytest.mark.django_db
def test_sleep_parks_the_execution_until_its_time(frozen):
    eid = sleep_once.start({})

    assert run_until_idle() == 1
    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at == frozen + hours(1)
    assert execution.locked_by is None and execution.run_token is None
    assert step_statuses(eid, "nap") == ["waiting"]
    wait = Wait.objects.get(execution_id=eid)
    assert (wait.kind, wait.status, wait.wake_at) == ("sleep", "waiting", frozen + hours(1))

    advance_clock(minutes(59))
    assert run_until_idle() == 0
    assert load(eid).status == "waiting"
    assert calls["nap.after"] == 0

    advance_clock(minutes(1))
    assert run_until_idle() == 1
    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"napped": True}
    # The code before the sleep ran again; the code after it once.
    assert calls == {"nap.before": 2, "nap.after": 1}
    assert step_statuses(eid, "nap") == ["resumed", "completed"]
    assert Wait.objects.get(execution_id=eid).status == "resolved"


@pytest.mark.django_db
def test_sleep_accepts_seconds(frozen):
    eid = sleep_once.start({"seconds": 90})
    run_until_idle()
    assert load(eid).run_at == frozen + timedelta(seconds=90)

    advance_clock(89)
    assert run_until_idle() == 0
    advance_clock(1)
    run_until_idle()
    assert load(eid).status == "completed"


@pytest.mark.django_db
def test_sleeping_three_days_passes_at_once_with_advance_clock():
    eid = sleep_days.start({})
    run_until_idle()
    assert load(eid).status == "waiting"

    advance_clock(days(3))
    run_until_idle()

    assert load(eid).status == "completed"
    assert calls["long_nap.before"] == 2


@pytest.mark.django_db
def test_two_sleeps_in_one_step_each_wait_once(frozen):
    eid = sleep_twice.start({})

    run_until_idle()
    assert load(eid).run_at == frozen + hours(1)
    assert calls == {"nap_twice.top": 1}

    advance_clock(hours(1))
    run_until_idle()
    execution = load(eid)
    assert execution.status == "waiting"
    # The first sleep is passed; the second starts counting now.
    assert execution.run_at == frozen + hours(3)
    assert calls == {"nap_twice.top": 2, "nap_twice.middle": 1}

    advance_clock(hours(2))
    run_until_idle()
    assert load(eid).status == "completed"
    assert calls == {"nap_twice.top": 3, "nap_twice.middle": 2, "nap_twice.end": 1}
    keys = Wait.objects.filter(execution_id=eid).values_list("key", "status")
    assert sorted(keys) == [("sleep:0", "resolved"), ("sleep:1", "resolved")]


@pytest.mark.django_db
def test_schedule_at_waits_until_the_given_time(frozen):
    when = frozen + days(2) + hours(3)
    eid = scheduled.start({"when": when})

    run_until_idle()
    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at == when

    advance_clock(days(2) + hours(3) - timedelta(seconds=1))
    assert run_until_idle() == 0
    advance_clock(timedelta(seconds=1))
    run_until_idle()
    assert load(eid).status == "completed"
    assert calls["wake_at"] == 2


@pytest.mark.django_db
def test_schedule_at_a_past_time_returns_at_once(frozen):
    eid = scheduled.start({"when": frozen - hours(1)})

    assert run_until_idle() == 1

    assert load(eid).status == "completed"
    assert calls["wake_at"] == 1
    assert step_statuses(eid, "wake_at") == ["completed"]


@pytest.mark.django_db
def test_schedule_at_a_naive_datetime_fails_the_step():
    eid = scheduled.start({"naive": True})

    run_until_idle()

    execution = load(eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "WorkflowDefinitionError"
    assert "aware" in execution.error["message"]
    assert not Wait.objects.filter(execution_id=eid).exists()


# -- events ------------------------------------------------------------------------------


def await_payment(ctx):
    calls["await_payment"] += 1
    return {**ctx, "paid": wait_for_event("paid")}


event_once = workflow("waits.event_once", [await_payment])


def first_tick(ctx):
    return {**ctx, "first": wait_for_event("tick")}


def second_tick(ctx):
    return {**ctx, "second": wait_for_event("tick")}


two_ticks = workflow("waits.two_ticks", [first_tick, second_tick])


def await_payment_or_give_up(ctx):
    calls["await_payment_or_give_up"] += 1
    return {**ctx, "paid": wait_for_event("paid", timeout=hours(1), timeout_value="no-show")}


event_timeout = workflow("waits.event_timeout", [await_payment_or_give_up])


def step_a(ctx):
    calls["step_a"] += 1
    return {**ctx, "a": wait_for_event("a")}


def step_b(ctx):
    calls["step_b"] += 1
    return {**ctx, "b": wait_for_event("b")}


a_then_b = workflow("waits.a_then_b", [step_a, step_b])


def both_in_one_step(ctx):
    calls["top"] += 1
    a = wait_for_event("a")
    calls["between"] += 1
    b = wait_for_event("b")
    calls["end"] += 1
    return {**ctx, "a": a, "b": b}


two_names = workflow("waits.two_names", [both_in_one_step])


@pytest.mark.django_db
def test_wait_for_event_returns_the_payload():
    eid = event_once.start({})
    run_until_idle()
    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at is None  # nothing but the event can wake it
    assert step_statuses(eid, "await_payment") == ["waiting"]

    payload = {"amount": Decimal("9.99"), "on": date(2024, 3, 6), "ok": True}
    durable.send_event(eid, "paid", payload)
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"paid": payload}
    assert calls["await_payment"] == 2
    event = Event.objects.get(execution_id=eid)
    assert event.consumed_at is not None
    assert event.consumed_by == Wait.objects.get(execution_id=eid)


@pytest.mark.django_db
def test_an_event_sent_before_the_wait_is_reached_is_kept_and_consumed():
    eid = event_once.start({})
    durable.send_event(eid, "paid", {"amount": 5})
    assert Event.objects.get(execution_id=eid).consumed_at is None

    assert run_until_idle() == 1

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"paid": {"amount": 5}}
    assert calls["await_payment"] == 1  # never had to suspend
    assert Event.objects.get(execution_id=eid).consumed_at is not None


@pytest.mark.django_db
def test_events_of_one_name_are_consumed_in_order():
    eid = two_ticks.start({})
    durable.send_event(eid, "tick", 1)
    durable.send_event(eid, "tick", 2)

    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"first": 1, "second": 2}
    assert Event.objects.filter(execution_id=eid, consumed_at__isnull=True).count() == 0


@pytest.mark.django_db
def test_events_sent_one_by_one_go_to_successive_waits():
    eid = two_ticks.start({})
    run_until_idle()
    durable.send_event(eid, "tick", "one")
    run_until_idle()
    assert load(eid).status == "waiting"
    assert load(eid).current_step == "second_tick"
    durable.send_event(eid, "tick", "two")
    run_until_idle()

    assert load(eid).context == {"first": "one", "second": "two"}


@pytest.mark.django_db
def test_wait_for_event_times_out_with_the_timeout_value(frozen):
    eid = event_timeout.start({})
    run_until_idle()
    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at == frozen + hours(1)

    advance_clock(hours(1))
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"paid": "no-show"}
    assert Wait.objects.get(execution_id=eid).status == "timed_out"


@pytest.mark.django_db
def test_a_duplicate_event_after_the_wait_completed_changes_nothing():
    eid = a_then_b.start({})
    run_until_idle()
    durable.send_event(eid, "a", "first")
    run_until_idle()
    execution = load(eid)
    assert (execution.status, execution.current_step) == ("waiting", "step_b")
    before = calls.copy()

    durable.send_event(eid, "a", "duplicate")

    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at is None
    assert run_until_idle() == 0
    assert calls == before
    duplicate = Event.objects.get(execution_id=eid, payload="duplicate")
    assert duplicate.consumed_at is None
    assert execution.context == {"a": "first"}

    durable.send_event(eid, "b", "bee")
    run_until_idle()
    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"a": "first", "b": "bee"}
    assert calls["step_a"] == 2  # the duplicate never re-ran step_a
    assert Event.objects.get(id=duplicate.id).consumed_at is None


@pytest.mark.django_db
def test_an_event_nobody_waits_for_does_not_wake_the_execution(frozen):
    eid = event_timeout.start({})
    run_until_idle()
    run_at = load(eid).run_at

    durable.send_event(eid, "refunded", {"x": 1})

    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at == run_at == frozen + hours(1)
    assert run_until_idle() == 0
    assert calls["await_payment_or_give_up"] == 1
    assert Event.objects.get(execution_id=eid).consumed_at is None


@pytest.mark.django_db
def test_several_waits_in_one_step_are_matched_by_name():
    eid = two_names.start({})
    run_until_idle()
    durable.send_event(eid, "a", "A")
    run_until_idle()
    execution = load(eid)
    assert execution.status == "waiting"
    assert calls == {"top": 2, "between": 1}

    durable.send_event(eid, "b", "B")
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"a": "A", "b": "B"}
    assert calls == {"top": 3, "between": 2, "end": 1}
    waits = dict(Wait.objects.filter(execution_id=eid).values_list("key", "status"))
    assert waits == {"event:a": "resolved", "event:b": "resolved"}
    assert Event.objects.filter(execution_id=eid, consumed_at__isnull=True).count() == 0


@pytest.mark.django_db
def test_several_waits_in_one_step_with_events_sent_in_reverse_order():
    eid = two_names.start({})
    durable.send_event(eid, "b", "B")
    durable.send_event(eid, "a", "A")

    assert run_until_idle() == 1

    assert load(eid).context == {"a": "A", "b": "B"}


@pytest.mark.django_db
def test_send_event_to_a_finished_execution_is_refused():
    eid = event_once.start({})
    durable.send_event(eid, "paid", 1)
    run_until_idle()
    assert load(eid).status == "completed"

    with pytest.raises(ExecutionNotActive):
        durable.send_event(eid, "paid", 2)

    assert Event.objects.filter(execution_id=eid).count() == 1


@pytest.mark.django_db
def test_send_event_to_an_unknown_execution_is_refused():
    with pytest.raises(durable.ExecutionNotFound):
        durable.send_event("00000000-0000-0000-0000-000000000000", "paid")
    with pytest.raises(durable.ExecutionNotFound):
        durable.send_event("not-a-uuid", "paid")


# -- wait_for_any / wait_for_all -----------------------------------------------------------


def decide(ctx):
    calls["decide"] += 1
    result = wait_for_any(["approved", "rejected"], timeout=hours(1), timeout_value="timeout")
    return {**ctx, "result": result, "type": type(result).__name__}


any_of = workflow("waits.any", [decide])


def gather(ctx):
    calls["gather"] += 1
    result = wait_for_all(["a", "b"], timeout=hours(1), timeout_value="timeout")
    return {**ctx, "result": result}


all_of = workflow("waits.all", [gather])


def decide_with_list_default(ctx):
    result = wait_for_any(["a", "b"], timeout=minutes(5), timeout_value=["none", None])
    return {**ctx, "type": type(result).__name__, "result": result}


any_list_default = workflow("waits.any_list_default", [decide_with_list_default])


@pytest.mark.django_db
def test_wait_for_any_returns_the_first_event_as_a_tuple():
    eid = any_of.start({})
    run_until_idle()
    assert load(eid).status == "waiting"

    durable.send_event(eid, "rejected", {"why": "too expensive"})
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context["type"] == "tuple"
    assert execution.context["result"] == ["rejected", {"why": "too expensive"}]


@pytest.mark.django_db
def test_wait_for_any_with_two_buffered_events_takes_the_older():
    eid = any_of.start({})
    durable.send_event(eid, "rejected", "older")
    durable.send_event(eid, "approved", "newer")

    run_until_idle()

    assert load(eid).context["result"] == ["rejected", "older"]
    left = Event.objects.get(execution_id=eid, consumed_at__isnull=True)
    assert (left.name, left.payload) == ("approved", "newer")


@pytest.mark.django_db
def test_wait_for_any_times_out(frozen):
    eid = any_of.start({})
    run_until_idle()
    assert load(eid).run_at == frozen + hours(1)

    advance_clock(hours(1))
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"result": "timeout", "type": "str"}


@pytest.mark.django_db
def test_wait_for_any_returns_a_list_timeout_value_unchanged():
    eid = any_list_default.start({})
    run_until_idle()
    advance_clock(minutes(5))
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"type": "list", "result": ["none", None]}


@pytest.mark.django_db
def test_wait_for_all_resumes_only_when_every_event_arrived():
    eid = all_of.start({})
    run_until_idle()

    durable.send_event(eid, "b", "bee")
    execution = load(eid)
    assert execution.status == "waiting"
    assert execution.run_at == Wait.objects.get(execution_id=eid).wake_at  # not woken
    assert run_until_idle() == 0
    assert calls["gather"] == 1

    durable.send_event(eid, "a", "ay")
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"result": {"a": "ay", "b": "bee"}}
    assert calls["gather"] == 2


@pytest.mark.django_db
def test_wait_for_all_with_buffered_events_uses_the_first_of_each_name():
    eid = all_of.start({})
    durable.send_event(eid, "a", 1)
    durable.send_event(eid, "a", 2)
    durable.send_event(eid, "b", 3)

    assert run_until_idle() == 1

    assert load(eid).context == {"result": {"a": 1, "b": 3}}
    left = Event.objects.get(execution_id=eid, consumed_at__isnull=True)
    assert (left.name, left.payload) == ("a", 2)


@pytest.mark.django_db
def test_wait_for_all_times_out_when_one_event_is_missing(frozen):
    eid = all_of.start({})
    run_until_idle()
    durable.send_event(eid, "a", 1)

    advance_clock(hours(1))
    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"result": "timeout"}
    assert Wait.objects.get(execution_id=eid).status == "timed_out"


# -- suspension is not an ordinary exception -----------------------------------------------


def careless(ctx):
    try:
        value = wait_for_event("x")
    except Exception:  # a user's broad handler must not swallow the suspension
        calls["swallowed"] += 1
        return {**ctx, "swallowed": True}
    return {**ctx, "x": value}


swallow = workflow("waits.swallow", [careless])


@pytest.mark.django_db
def test_except_exception_around_a_wait_does_not_swallow_the_suspension():
    eid = swallow.start({})
    run_until_idle()

    assert load(eid).status == "waiting"
    assert calls["swallowed"] == 0

    durable.send_event(eid, "x", 42)
    run_until_idle()
    assert load(eid).context == {"x": 42}
    assert calls["swallowed"] == 0


def test_waits_outside_a_step_raise_not_in_step():
    for call in (
        lambda: sleep(1),
        lambda: schedule_at(WEDNESDAY_NOON),
        lambda: wait_for_event("x"),
        lambda: wait_for_any(["x", "y"]),
        lambda: wait_for_all(["x", "y"]),
        lambda: wait_for_input("x"),
        lambda: wait_for_approval("x"),
        lambda: wait_for_choice("x", ["a"]),
        lambda: wait_for_text("x"),
        lambda: wait_for_form("x", [{"name": "a"}]),
    ):
        with pytest.raises(NotInStep):
            call()


# -- events that arrive while the step is running (lost wake-ups) ---------------------------


def signal_myself_first(ctx):
    calls["signal_myself_first"] += 1
    if calls["signal_myself_first"] == 1:
        durable.send_event(own_execution_id(), "x", "from inside")
    return {**ctx, "x": wait_for_event("x")}


early_event = workflow("waits.early_event", [signal_myself_first])


def event_arrives_while_parking(ctx):
    """The event comes after the wait decided to suspend, before the engine parked."""
    calls["parking"] += 1
    try:
        value = wait_for_event("x")
    except BaseException:
        if calls["parking"] == 1:
            durable.send_event(own_execution_id(), "x", "while parking")
        raise
    return {**ctx, "x": value}


late_event = workflow("waits.late_event", [event_arrives_while_parking])


@pytest.mark.django_db
def test_an_event_sent_while_the_step_runs_before_its_wait_is_not_lost():
    eid = early_event.start({})

    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed"
    assert execution.context == {"x": "from inside"}


@pytest.mark.django_db
def test_an_event_sent_while_the_step_is_parking_is_not_lost():
    eid = late_event.start({})

    run_until_idle()

    execution = load(eid)
    assert execution.status == "completed", (execution.status, execution.run_at)
    assert execution.context == {"x": "while parking"}
    assert calls["parking"] == 2
    assert step_statuses(eid, "event_arrives_while_parking") == ["resumed", "completed"]


def must_answer_in_time(ctx):
    return {**ctx, "answer": wait_for_input("deadline_answer", timeout=hours(1), on_timeout="fail")}


answer_in_time = workflow("waits.answer_in_time", [must_answer_in_time])


@pytest.mark.django_db
def test_resume_after_an_input_timed_out_asks_again():
    from django_durable.models import PendingInput

    execution_id = durable.start(answer_in_time)
    run_until_idle()
    advance_clock(hours(2))
    run_until_idle()
    failed = durable.get_execution(execution_id)
    assert (failed.status, failed.error["type"]) == ("failed", "InputTimedOut")

    durable.resume(execution_id)
    run_until_idle()
    assert durable.get_execution(execution_id).status == "waiting"
    statuses = list(
        PendingInput.objects.filter(execution_id=execution_id)
        .order_by("created_at")
        .values_list("status", flat=True)
    )
    assert statuses == ["timed_out", "pending"]
    durable.provide_input(execution_id, "deadline_answer", "in time now")
    run_until_idle()
    done = durable.get_execution(execution_id)
    assert (done.status, done.context["answer"]) == ("completed", "in time now")
