"""The engine's public API (start, get, list, cancel, resume), queues, and fencing."""

import uuid
from datetime import datetime, timedelta

import pytest

import django_durable as durable
from django_durable import (
    ExecutionNotActive,
    ExecutionNotFound,
    ExecutionNotResumable,
    InvalidWorkflowInput,
    Retry,
    UnknownWorkflow,
    claims,
    clock,
    engine,
    step,
    workflow,
)
from django_durable.helpers import hours, seconds
from django_durable.models import StepExecution, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from tests.calls import calls, count_call

ran: list[str] = []
state: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _reset():
    ran.clear()
    state.clear()


def record(ctx):
    count_call("record")
    ran.append(ctx.get("label", ""))
    return {**ctx, "recorded": True}


single = workflow("engine.single", [record])
other_single = workflow("engine.other_single", [record], queue="bulk")


def first(ctx):
    count_call("first")
    return {**ctx, "steps": [*ctx.get("steps", []), "first"]}


def second(ctx):
    count_call("second")
    return {**ctx, "steps": [*ctx.get("steps", []), "second"]}


def third(ctx):
    count_call("third")
    return {**ctx, "steps": [*ctx.get("steps", []), "third"]}


three_steps = workflow("engine.three_steps", [first, second, third])


# -- start -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_start_by_name_returns_uuid_and_creates_pending_execution():
    eid = durable.start("engine.single", {"label": "a"})
    assert isinstance(eid, uuid.UUID)
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.workflow_name == "engine.single"
    assert execution.workflow_version == "1"
    assert execution.status == "pending"
    assert execution.input == {"label": "a"}
    assert execution.context == {"label": "a"}
    assert execution.queue == "default"
    assert execution.priority == 0
    assert execution.current_step == "record"
    assert execution.parent is None
    assert execution.created_at is not None
    assert execution.completed_at is None


@pytest.mark.django_db
def test_start_with_workflow_object_or_method():
    by_object = durable.start(single, {"label": "obj"})
    by_method = single.start({"label": "method"})
    assert isinstance(by_object, uuid.UUID) and isinstance(by_method, uuid.UUID)
    assert by_object != by_method
    assert set(
        WorkflowExecution.objects.filter(workflow_name="engine.single").values_list("id", flat=True)
    ) == {by_object, by_method}
    assert run_until_idle() == 2
    assert sorted(ran) == ["method", "obj"]


@pytest.mark.django_db
def test_start_without_input_uses_empty_dict():
    eid = durable.start(single)
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.input == {}
    assert execution.context == {}


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [[1, 2], "text", 5, ("a",)])
def test_start_rejects_non_dict_input(bad):
    with pytest.raises(InvalidWorkflowInput, match="must be a dict"):
        durable.start(single, bad)
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad", [{"tags": {"a", "b"}}, {"client": object()}, {"ratio": float("nan")}, {1: "x"}]
)
def test_start_rejects_unstorable_input(bad):
    with pytest.raises(InvalidWorkflowInput, match="cannot be stored"):
        durable.start(single, bad)
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
def test_start_unknown_workflow():
    with pytest.raises(UnknownWorkflow, match="engine.nope"):
        durable.start("engine.nope", {})
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
def test_start_with_queue():
    default_queue = durable.start(single)
    explicit = durable.start(single, queue="special")
    workflow_queue = durable.start(other_single)
    assert WorkflowExecution.objects.get(id=default_queue).queue == "default"
    assert WorkflowExecution.objects.get(id=explicit).queue == "special"
    assert WorkflowExecution.objects.get(id=explicit).run_queue == "special"
    assert WorkflowExecution.objects.get(id=workflow_queue).queue == "bulk"
    # A worker on "special" takes only that execution.
    claimed = claims.claim("w-special", ["special"], 10)
    assert [e.id for e in claimed] == [explicit]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options",
    [{"queue": ""}, {"queue": 5}, {"priority": "high"}, {"priority": True}],
)
def test_start_rejects_bad_options(options):
    with pytest.raises(InvalidWorkflowInput):
        durable.start(single, {}, **options)
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
def test_higher_priority_runs_first():
    low = durable.start(single, {"label": "low"}, priority=0)
    advance_clock(seconds(1))  # low is also the older one
    high = durable.start(single, {"label": "high"}, priority=10)
    assert WorkflowExecution.objects.get(id=high).priority == 10

    assert run_until_idle(max_steps=1) == 1
    assert ran == ["high"]
    assert WorkflowExecution.objects.get(id=high).status == "completed"
    assert WorkflowExecution.objects.get(id=low).status == "pending"

    assert run_until_idle() == 1
    assert ran == ["high", "low"]


@pytest.mark.django_db
def test_equal_priority_runs_oldest_first():
    durable.start(single, {"label": "older"})
    advance_clock(seconds(1))
    durable.start(single, {"label": "newer"})
    assert run_until_idle(max_steps=1) == 1
    assert ran == ["older"]


@pytest.mark.django_db
def test_scheduled_at_delays_the_run():
    when = clock.now() + hours(2)
    eid = durable.start(single, {"label": "later"}, scheduled_at=when)
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.scheduled_at == when
    assert execution.status == "pending"

    assert run_until_idle() == 0
    advance_clock(hours(1))
    assert run_until_idle() == 0
    assert ran == []

    advance_clock(hours(1))
    assert run_until_idle() == 1
    assert ran == ["later"]
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


@pytest.mark.django_db
def test_scheduled_at_in_the_past_runs_now():
    eid = durable.start(single, scheduled_at=clock.now() - hours(1))
    assert run_until_idle() == 1
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [datetime(2030, 1, 1, 9, 0), "2030-01-01T09:00:00Z"])
def test_scheduled_at_must_be_aware_datetime(bad):
    with pytest.raises(InvalidWorkflowInput, match="aware datetime"):
        durable.start(single, {}, scheduled_at=bad)
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
def test_idempotency_key():
    one = durable.start(single, {"label": "a"}, idempotency_key="order-1")
    again = durable.start(single, {"label": "b"}, idempotency_key="order-1")
    assert again == one
    assert WorkflowExecution.objects.filter(workflow_name="engine.single").count() == 1
    assert WorkflowExecution.objects.get(id=one).idempotency_key == "order-1"
    assert WorkflowExecution.objects.get(id=one).input == {"label": "a"}

    elsewhere = durable.start(three_steps, {}, idempotency_key="order-1")
    assert elsewhere != one
    other_key = durable.start(single, {}, idempotency_key="order-2")
    assert other_key != one
    no_key = [durable.start(single), durable.start(single)]
    assert no_key[0] != no_key[1]
    assert WorkflowExecution.objects.count() == 5


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "k" * 256, "nul\x00", 42])
def test_an_idempotency_key_the_column_cannot_hold_is_refused_up_front(key):
    with pytest.raises(InvalidWorkflowInput, match="idempotency_key"):
        durable.start(single, idempotency_key=key)
    assert not WorkflowExecution.objects.exists()
    assert durable.start(single, idempotency_key="k" * 255)


@pytest.mark.django_db
def test_idempotency_key_returns_finished_execution_too():
    one = durable.start(single, idempotency_key="k")
    run_until_idle()
    assert durable.start(single, idempotency_key="k") == one
    assert run_until_idle() == 0
    assert calls["record"] == 1


# -- get_execution / list_executions -----------------------------------------------------


@pytest.mark.django_db
def test_get_execution_with_steps_in_order():
    eid = durable.start(three_steps, {"x": 1})
    run_until_idle()
    execution = durable.get_execution(eid)
    assert isinstance(execution, WorkflowExecution)
    assert execution.id == eid
    assert execution.status == "completed"
    assert execution.context == {"x": 1, "steps": ["first", "second", "third"]}
    assert execution.current_step is None

    with_steps = durable.get_execution(str(eid), include_steps=True)
    assert [s.step_name for s in with_steps.steps] == ["first", "second", "third"]
    assert all(isinstance(s, StepExecution) for s in with_steps.steps)
    assert all(s.status == "completed" and s.attempt == 1 for s in with_steps.steps)
    assert all(s.duration_ms is not None and s.completed_at for s in with_steps.steps)


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [uuid.uuid4(), str(uuid.uuid4()), "garbage", "", None, 12])
def test_get_execution_not_found(bad):
    with pytest.raises(ExecutionNotFound):
        durable.get_execution(bad)


def _new_execution(name, **fields):
    now = clock.now()
    return WorkflowExecution.objects.create(
        workflow_name=name, created_at=now, run_at=now, current_step="record", **fields
    )


@pytest.mark.django_db
def test_list_executions_filters_and_order():
    a = durable.start(single)
    advance_clock(seconds(1))
    b = durable.start(single, queue="bulk")
    advance_clock(seconds(1))
    c = durable.start(three_steps)
    advance_clock(seconds(1))
    child = _new_execution("engine.single", parent_id=a)
    WorkflowExecution.objects.filter(id=b).update(status="failed")
    WorkflowExecution.objects.filter(id=c).update(status="completed")

    def ids(**kwargs):
        return [e.id for e in durable.list_executions(**kwargs)]

    assert ids() == [child.id, c, b, a]
    assert ids(workflow="engine.single") == [child.id, b, a]
    assert ids(workflow=three_steps) == [c]
    assert ids(status="failed") == [b]
    assert ids(status=["failed", "completed"]) == [c, b]
    assert ids(status="pending") == [child.id, a]
    assert ids(queue="bulk") == [b]
    assert ids(parent=a) == [child.id]
    assert ids(parent=str(a)) == [child.id]
    assert ids(limit=2) == [child.id, c]
    assert ids(limit=2, offset=2) == [b, a]
    assert ids(offset=3) == [a]
    assert ids(workflow="engine.single", status="pending", queue="default") == [child.id, a]
    assert ids(workflow="engine.nothing") == []


# -- cancel ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_pending_execution():
    eid = durable.start(single, {"label": "x"})
    cancelled = durable.cancel(eid, reason="customer changed their mind")
    assert isinstance(cancelled, WorkflowExecution)
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "cancelled"
    assert execution.cancel_reason == "customer changed their mind"
    assert execution.completed_at is not None
    assert cancelled.status == "cancelled"
    assert run_until_idle() == 0
    assert ran == []


@pytest.mark.django_db
def test_cancel_finished_execution_is_an_error():
    done = durable.start(single)
    run_until_idle()
    with pytest.raises(ExecutionNotActive):
        durable.cancel(done)
    assert WorkflowExecution.objects.get(id=done).status == "completed"

    stopped = durable.start(single)
    durable.cancel(stopped, reason="first")
    with pytest.raises(ExecutionNotActive):
        durable.cancel(stopped, reason="second")
    assert WorkflowExecution.objects.get(id=stopped).cancel_reason == "first"


@pytest.mark.django_db
def test_cancel_unknown_execution():
    with pytest.raises(ExecutionNotFound):
        durable.cancel(uuid.uuid4())


@pytest.mark.django_db
def test_cancel_parent_cancels_active_children():
    parent = durable.start(single)
    child = _new_execution("engine.single", parent_id=parent)
    grandchild = _new_execution("engine.single", parent_id=child.id, status="waiting")
    finished_child = _new_execution("engine.single", parent_id=parent, status="completed")
    unrelated = _new_execution("engine.single")

    durable.cancel(parent, reason="stop all")

    reasons = {parent: "stop all", child.id: "parent cancelled: stop all"}
    reasons[grandchild.id] = "parent cancelled: stop all"  # the reason its tree went
    for eid, reason in reasons.items():
        execution = WorkflowExecution.objects.get(id=eid)
        assert execution.status == "cancelled"
        assert execution.cancel_reason == reason
        assert execution.completed_at is not None
    assert WorkflowExecution.objects.get(id=finished_child.id).status == "completed"
    assert WorkflowExecution.objects.get(id=unrelated.id).status == "pending"


def cancels_itself(ctx):
    count_call("cancels_itself")
    durable.cancel(state["eid"], reason="while running")
    return {**ctx, "late": True}


self_cancelling = workflow("engine.self_cancelling", [cancels_itself, second])


@pytest.mark.django_db
def test_cancel_while_running_discards_the_result():
    eid = durable.start(self_cancelling, {"n": 1})
    state["eid"] = eid
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "cancelled"
    assert execution.context == {"n": 1}
    assert execution.current_step == "cancels_itself"
    assert calls == {"cancels_itself": 1}
    attempt = StepExecution.objects.get(execution_id=eid)
    assert attempt.status == "failed"
    assert attempt.error["type"] == "Cancelled"


# -- resume ----------------------------------------------------------------------------------


def flaky_middle(ctx):
    n = count_call("flaky_middle")
    if not state.get("fixed"):
        raise RuntimeError(f"broken {n}")
    return {**ctx, "steps": [*ctx.get("steps", []), "flaky_middle"]}


resumable = workflow(
    "engine.resumable",
    [first, step(flaky_middle, retry=Retry(max_attempts=2, backoff="constant", base=10)), third],
)


@pytest.mark.django_db
def test_resume_failed_execution_from_the_failing_step():
    eid = durable.start(resumable, {"x": 1})
    assert run_until_idle() == 2
    advance_clock(seconds(10))
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.current_step == "flaky_middle"
    assert execution.attempt == 2
    assert calls == {"first": 1, "flaky_middle": 2}

    state["fixed"] = True
    resumed = durable.resume(eid)
    assert resumed.status == "pending"
    assert resumed.attempt == 1
    assert resumed.error is None
    assert resumed.completed_at is None
    assert resumed.current_step == "flaky_middle"

    assert run_until_idle() == 2
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"x": 1, "steps": ["first", "flaky_middle", "third"]}
    assert calls == {"first": 1, "flaky_middle": 3, "third": 1}
    steps = durable.get_execution(eid, include_steps=True).steps
    assert [(s.step_name, s.attempt, s.status) for s in steps] == [
        ("first", 1, "completed"),
        ("flaky_middle", 1, "failed"),
        ("flaky_middle", 2, "failed"),
        ("flaky_middle", 1, "completed"),
        ("third", 1, "completed"),
    ]


@pytest.mark.django_db
def test_resumed_execution_gets_its_retries_again():
    eid = durable.start(resumable)
    run_until_idle()
    advance_clock(seconds(10))
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "failed"

    durable.resume(eid)  # still broken: both attempts are available again
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "pending"
    assert execution.attempt == 2
    state["fixed"] = True
    advance_clock(seconds(10))
    assert run_until_idle() == 2
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


@pytest.mark.django_db
def test_resume_cancelled_execution():
    eid = durable.start(three_steps, {"x": 1})
    durable.cancel(eid, reason="pause")
    resumed = durable.resume(eid)
    assert resumed.status == "pending"
    assert run_until_idle() == 3
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context["steps"] == ["first", "second", "third"]


@pytest.mark.django_db
def test_resume_of_completed_or_active_execution_is_an_error():
    done = durable.start(single)
    run_until_idle()
    with pytest.raises(ExecutionNotResumable):
        durable.resume(done)
    pending = durable.start(single)
    with pytest.raises(ExecutionNotResumable):
        durable.resume(pending)
    assert WorkflowExecution.objects.get(id=done).status == "completed"
    assert WorkflowExecution.objects.get(id=pending).status == "pending"
    with pytest.raises(ExecutionNotFound):
        durable.resume(uuid.uuid4())


# -- queues ------------------------------------------------------------------------------


def on_other(ctx):
    count_call("on_other")
    return {**ctx, "other": True}


other_queue_step = workflow("engine.other_queue_step", [first, step(on_other, queue="other")])
other_queue_first = workflow("engine.other_queue_first", [step(on_other, queue="other")])


@pytest.mark.django_db
def test_step_queue_sets_run_queue_not_queue():
    eid = durable.start(other_queue_first)
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.queue == "default"
    assert execution.run_queue == "other"
    assert claims.claim("w-default", ["default"], 10) == []
    assert [e.id for e in claims.claim("w-other", ["other"], 10)] == [eid]


@pytest.mark.django_db
def test_next_step_on_another_queue_moves_the_execution():
    eid = durable.start(other_queue_step)
    assert run_until_idle(max_steps=1) == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "pending"
    assert execution.current_step == "on_other"
    assert execution.run_queue == "other"
    assert execution.queue == "default"

    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"steps": ["first"], "other": True}


@pytest.mark.django_db
def test_worker_on_one_queue_hands_off_to_the_other():
    eid = durable.start(other_queue_step)
    [claimed] = claims.claim("w-default", ["default"], 1)
    assert engine.run_claimed(claimed, worker="w-default", queues=["default"]) == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "pending"
    assert execution.run_queue == "other"
    assert execution.locked_by is None
    assert claims.claim("w-default", ["default"], 1) == []
    [claimed] = claims.claim("w-other", ["other"], 1)
    assert engine.run_claimed(claimed, worker="w-other", queues=["other"]) == 1
    assert WorkflowExecution.objects.get(id=eid).status == "completed"
    assert calls == {"first": 1, "on_other": 1}


# -- fencing -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_attempt_that_lost_its_lease_records_nothing():
    eid = durable.start(three_steps, {"x": 1})
    [execution] = claims.claim("w1", None, 1)
    assert execution.id == eid
    assert execution.status == "running"
    assert execution.locked_by == "w1"
    new_token = uuid.uuid4()

    def lose_the_lease(attempt, step):  # another worker takes over as the attempt starts
        WorkflowExecution.objects.filter(id=eid).update(run_token=new_token, locked_by="w2")

    engine.run_claimed(execution, worker="w1", queues=None, on_attempt=lose_the_lease)

    assert calls == {"first": 1}  # it ran, but nothing it produced was kept
    assert not StepExecution.objects.filter(execution_id=eid, status="completed").exists()
    stored = WorkflowExecution.objects.get(id=eid)
    assert stored.current_step == "first"
    assert stored.context == {"x": 1}
    assert stored.attempt == 1
    assert stored.run_token == new_token
    assert stored.locked_by == "w2"
    assert stored.status == "running"


def always_fails(ctx):
    count_call("always_fails")
    raise RuntimeError("nope")


fenced_failure = workflow(
    "engine.fenced_failure",
    [step(always_fails, retry=Retry(max_attempts=3, backoff="constant", base=1))],
)


@pytest.mark.django_db
def test_failed_attempt_that_lost_its_lease_schedules_nothing():
    eid = durable.start(fenced_failure)
    [execution] = claims.claim("w1", None, 1)

    def lose_the_lease(attempt, step):
        WorkflowExecution.objects.filter(id=eid).update(run_token=uuid.uuid4())

    engine.run_claimed(execution, worker="w1", queues=None, on_attempt=lose_the_lease)
    stored = WorkflowExecution.objects.get(id=eid)
    assert stored.status == "running"
    assert stored.attempt == 1
    assert stored.error is None
    # The stale attempt's own row is closed as superseded; no retry was scheduled.
    [row] = StepExecution.objects.filter(execution_id=eid)
    assert (row.attempt, row.status, row.error["type"]) == (1, "failed", "Superseded")


@pytest.mark.django_db
def test_claimed_execution_is_not_claimed_twice():
    eid = durable.start(single)
    assert [e.id for e in claims.claim("w1", None, 5)] == [eid]
    assert claims.claim("w2", None, 5) == []


# -- autodiscovery ---------------------------------------------------------------------


@pytest.mark.django_db
def test_autodiscovered_workflow_runs_end_to_end():
    eid = durable.start("tests.hello", {"name": "Ada"})
    assert run_until_idle() == 1
    execution = durable.get_execution(eid, include_steps=True)
    assert execution.status == "completed"
    assert execution.context == {"name": "Ada", "greeting": "hello Ada"}
    assert [s.step_name for s in execution.steps] == ["say_hello"]
    assert execution.started_at is not None
    assert execution.completed_at >= execution.started_at


@pytest.mark.django_db
def test_completed_execution_timestamps_and_lease_cleared():
    eid = durable.start(three_steps)
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.locked_by is None
    assert execution.locked_until is None
    assert execution.run_token is None
    assert execution.completed_at - execution.created_at >= timedelta(0)
