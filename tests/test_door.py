"""The one door: every way an execution ends goes through `executions.finish` and leaves
the same state (SPEC §5a), and every change of status follows the status machine.

Each ending is reached the way users reach it (through the engine, the timers, the
public API), with a spy on `finish` proving the door was used, and the same invariants
checked afterwards: no lease, no attempt `running` or `waiting`, no open wait or input.
"""

from datetime import timedelta

import pytest

import django_durable as durable
from django_durable import (
    NonRetryableError,
    Retry,
    claims,
    clock,
    engine,
    executions,
    releases,
    step,
    timers,
    workflow,
)
from django_durable.errors import InvalidTransition
from django_durable.models import (
    CLAIMED_AS,
    FINAL_STATUSES,
    RELEASED_AS,
    TRANSITIONS,
    ExecutionStatus,
    PendingInput,
    StepExecution,
    Wait,
    WorkflowExecution,
)
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import wait_for_approval, wait_for_event
from tests.calls import count_call


def waits_for_go(ctx):
    count_call("waits_for_go")
    return {**ctx, "go": wait_for_event("go")}


def asks(ctx):
    return {**ctx, "answer": wait_for_approval("proceed")}


def works(ctx):
    return {**ctx, "worked": True}


def fails(ctx):
    raise RuntimeError("broken")


def fails_for_good(ctx):
    raise NonRetryableError("card declined")


def runs_too_long(ctx):
    clock.advance(timedelta(seconds=5))  # the attempt takes 5 s of engine time
    return ctx


def cancels_itself(ctx):
    durable.cancel(ctx["self"], reason="from inside")
    return ctx


twice = Retry(max_attempts=2, backoff="constant", base=1)
completes = workflow("door.completes", [waits_for_go, works])
out_of_retries = workflow("door.out_of_retries", [waits_for_go, step(fails, retry=twice)])
not_retryable = workflow("door.not_retryable", [step(fails_for_good, retry=twice)])
step_timeout = workflow("door.step_timeout", [step(runs_too_long, timeout=1, retry=twice)])
deadline = workflow("door.deadline", [asks, works], timeout=60)
waits = workflow("door.waits", [waits_for_go, works])
asking = workflow("door.asking", [asks, works])
self_cancelling = workflow("door.self_cancelling", [cancels_itself, works])
single = workflow("door.single", [works])


@pytest.fixture
def finished(monkeypatch):
    """(execution id, status) of every call of the door's `finish`."""
    seen = []
    real_finish = executions.finish

    def spy(execution, status, **kwargs):
        seen.append((execution.id, status))
        return real_finish(execution, status, **kwargs)

    monkeypatch.setattr(executions, "finish", spy)
    return seen


def assert_ended_cleanly(execution_id, status, error_type=None):
    execution = WorkflowExecution.objects.get(id=execution_id)
    assert execution.status == status
    assert (execution.locked_by, execution.locked_until, execution.run_token) == (None, None, None)
    assert execution.completed_at is not None
    if error_type is not None:
        assert execution.error["type"] == error_type
    open_attempts = StepExecution.objects.filter(
        execution_id=execution_id, status__in=["running", "waiting"]
    )
    assert list(open_attempts.values_list("step_name", "status")) == []
    assert not Wait.objects.filter(execution_id=execution_id, status="waiting").exists()
    assert not PendingInput.objects.filter(execution_id=execution_id, status="pending").exists()


@pytest.mark.django_db
def test_completes(finished):
    eid = completes.start({})
    run_until_idle()
    durable.send_event(eid, "go", 1)
    run_until_idle()
    assert_ended_cleanly(eid, "completed")
    assert finished == [(eid, "completed")]
    statuses = StepExecution.objects.filter(execution_id=eid).order_by("started_at")
    assert [row.status for row in statuses] == ["resumed", "completed", "completed"]


@pytest.mark.django_db
def test_fails_out_of_retries(finished):
    eid = out_of_retries.start({})
    run_until_idle()
    durable.send_event(eid, "go", 1)
    run_until_idle()
    advance_clock(2)
    run_until_idle()
    assert_ended_cleanly(eid, "failed", "RuntimeError")
    assert finished == [(eid, "failed")]
    fails_rows = StepExecution.objects.filter(execution_id=eid, step_name="fails")
    assert sorted(row.attempt for row in fails_rows) == [1, 2]


@pytest.mark.django_db
def test_a_non_retryable_error(finished):
    eid = not_retryable.start({})
    run_until_idle()
    assert_ended_cleanly(eid, "failed", "NonRetryableError")
    assert finished == [(eid, "failed")]


@pytest.mark.django_db
def test_step_timeout_out_of_retries(finished):
    eid = step_timeout.start({})
    run_until_idle()
    advance_clock(2)
    run_until_idle()
    assert_ended_cleanly(eid, "failed", "StepTimeout")
    assert finished == [(eid, "failed")]
    assert StepExecution.objects.filter(execution_id=eid, status="failed").count() == 2


@pytest.mark.django_db
def test_workflow_deadline_while_waiting(finished):
    eid = deadline.start({})
    run_until_idle()
    assert PendingInput.objects.get(execution_id=eid).status == "pending"
    advance_clock(timedelta(minutes=2))
    run_until_idle()
    assert_ended_cleanly(eid, "failed", "WorkflowTimeout")
    assert finished == [(eid, "failed")]
    assert PendingInput.objects.get(execution_id=eid).status == "cancelled"
    [parked] = StepExecution.objects.filter(execution_id=eid)
    assert (parked.status, parked.error["type"]) == ("failed", "WorkflowTimeout")


@pytest.mark.django_db
def test_cancel_while_pending(finished):
    eid = single.start({})
    durable.cancel(eid, reason="not needed")
    assert_ended_cleanly(eid, "cancelled")
    assert finished == [(eid, "cancelled")]
    assert not StepExecution.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db
def test_cancel_while_running(finished):
    eid = self_cancelling.start({})
    WorkflowExecution.objects.filter(id=eid).update(context={"self": str(eid)})
    run_until_idle()
    assert_ended_cleanly(eid, "cancelled")
    assert finished == [(eid, "cancelled")]
    [attempt] = StepExecution.objects.filter(execution_id=eid)
    assert (attempt.status, attempt.error["type"]) == ("failed", "Cancelled")
    assert "from inside" in attempt.error["message"]


@pytest.mark.django_db
def test_cancel_while_waiting_for_an_event(finished):
    eid = waits.start({})
    run_until_idle()
    durable.cancel(eid)
    assert_ended_cleanly(eid, "cancelled")
    assert finished == [(eid, "cancelled")]
    assert Wait.objects.get(execution_id=eid).status == "cancelled"
    [parked] = StepExecution.objects.filter(execution_id=eid)
    assert (parked.status, parked.error["type"]) == ("failed", "Cancelled")


@pytest.mark.django_db
def test_cancel_while_waiting_for_input(finished):
    eid = asking.start({})
    run_until_idle()
    durable.cancel(eid)
    assert_ended_cleanly(eid, "cancelled")
    assert finished == [(eid, "cancelled")]
    assert PendingInput.objects.get(execution_id=eid).status == "cancelled"
    with pytest.raises(durable.ExecutionNotActive):
        durable.provide_input(eid, "proceed", True)


@pytest.mark.django_db
def test_too_many_interruptions(finished, settings):
    settings.DURABLE = {**settings.DURABLE, "MAX_RECOVERIES": 1}
    eid = single.start({})

    class Killed(BaseException):
        pass

    def die(attempt, step):
        raise Killed

    [claimed] = claims.claim("doomed", None, 1)
    with pytest.raises(Killed):
        engine.run_claimed(claimed, worker="doomed", queues=None, on_attempt=die)
    WorkflowExecution.objects.filter(id=eid).update(locked_until=clock.now() - timedelta(seconds=1))
    assert timers.reclaim_expired_leases() == 1
    assert_ended_cleanly(eid, "failed", "TooManyInterruptions")
    assert finished == [(eid, "failed")]


# -- the status machine ------------------------------------------------------------------


def test_the_status_machine_covers_every_status():
    assert set(TRANSITIONS) == set(ExecutionStatus.values)
    for status in FINAL_STATUSES:
        assert TRANSITIONS[status] <= {ExecutionStatus.PENDING}  # only resume leads out
    for before, after in CLAIMED_AS.items():
        assert after in TRANSITIONS[before]
    for before, after in RELEASED_AS.items():
        assert after in TRANSITIONS[before]


@pytest.mark.django_db
def test_the_door_refuses_what_the_machine_does_not_allow():
    eid = single.start({})
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    with pytest.raises(InvalidTransition, match="from completed to failed"):
        executions.finish(execution, ExecutionStatus.FAILED, fenced=False)
    pending = WorkflowExecution.objects.get(id=single.start({}))
    with pytest.raises(InvalidTransition, match="finish"):
        executions.transition(pending, ExecutionStatus.CANCELLED, fenced=False)
    with pytest.raises(InvalidTransition, match="from pending to waiting"):
        executions.transition(pending, ExecutionStatus.WAITING, fenced=False)
    assert WorkflowExecution.objects.get(id=pending.id).status == "pending"


@pytest.mark.django_db
def test_a_compensating_execution_is_claimed_leased_and_fenced_and_keeps_its_phase():
    eid = single.start({})
    [running] = claims.claim("w1", None, 1)
    executions.finish(running, ExecutionStatus.COMPENSATING, run_at=clock.now())
    assert WorkflowExecution.objects.get(id=eid).locked_by is None

    [held] = claims.claim("w2", None, 1)
    assert (held.id, held.status, held.claimed_from) == (eid, "compensating", "compensating")
    assert held.locked_by == "w2" and held.run_token is not None
    assert claims.claim("w3", None, 1) == []  # held: nobody else takes it
    assert claims.renew_leases("w2", [eid]) == 1

    WorkflowExecution.objects.filter(id=eid).update(locked_until=clock.now() - timedelta(seconds=1))
    assert timers.reclaim_expired_leases() == 1
    released = WorkflowExecution.objects.get(id=eid)
    assert (released.status, released.locked_by, released.run_token) == ("compensating", None, None)

    [again] = claims.claim("w4", None, 1)
    assert again.status == "compensating"
    stale = WorkflowExecution.objects.get(id=eid)
    stale.run_token = held.run_token  # the first holder's token no longer writes
    with pytest.raises(executions.LeaseLost):
        executions.transition(stale, ExecutionStatus.COMPENSATING, recoveries=5)
    assert releases.release("w4", "WorkerStopped", "bye", eid, [again.run_token]) == 1
    assert WorkflowExecution.objects.get(id=eid).status == "compensating"


@pytest.mark.django_db
def test_a_worker_that_cannot_run_a_phase_gives_it_back_unchanged():
    """Compensations arrive in a later release; a worker without them must not turn a
    compensating execution into something else."""
    eid = single.start({})
    [running] = claims.claim("w1", None, 1)
    executions.finish(running, ExecutionStatus.COMPENSATING, run_at=clock.now())
    [held] = claims.claim("old-worker", None, 1)
    assert engine.run_claimed(held, worker="old-worker", queues=None) == 0
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.locked_by) == ("compensating", None)
    assert execution.run_at >= clock.now() + engine.UNKNOWN_RETRY - timedelta(seconds=1)


@pytest.mark.django_db
def test_a_compensation_interrupted_too_often_ends_compensation_failed(settings):
    settings.DURABLE = {**settings.DURABLE, "MAX_RECOVERIES": 1}
    eid = single.start({})
    [running] = claims.claim("w1", None, 1)
    executions.finish(running, ExecutionStatus.COMPENSATING, run_at=clock.now())
    [held] = claims.claim("w2", None, 1)
    StepExecution.objects.create(  # an attempt that started, as a compensation will
        id=held.run_token,
        execution_id=eid,
        step_name="works",
        status="running",
        started_at=clock.now(),
        is_compensation=True,
    )
    WorkflowExecution.objects.filter(id=eid).update(locked_until=clock.now() - timedelta(seconds=1))
    assert timers.reclaim_expired_leases() == 1
    assert_ended_cleanly(eid, "compensation_failed", "TooManyInterruptions")


# -- ready work apart from timers --------------------------------------------------------


def ready(execution_id) -> bool:
    return WorkflowExecution.objects.get(id=execution_id).ready


@pytest.mark.django_db
def test_only_work_runnable_now_is_ready_and_timers_make_the_rest_ready():
    now = clock.now()
    at_once = single.start({})
    later = single.start({}, scheduled_at=now + timedelta(hours=1))
    parked = waits.start({})
    assert (ready(at_once), ready(later), ready(parked)) == (True, False, True)
    run_until_idle()  # at_once completes, parked parks on its event without a time
    assert not any(ready(eid) for eid in (at_once, later, parked))

    advance_clock(timedelta(hours=1))
    assert claims.claim("w1", None, 10) == []  # due, but the timers have not seen it
    timers.run_timers()
    assert ready(later)
    [claimed] = claims.claim("w1", None, 10)
    assert (claimed.id, claimed.ready) == (later, False)
    assert not ready(parked)

    durable.send_event(parked, "go", 1)
    assert ready(parked)


@pytest.mark.django_db
def test_the_door_keeps_ready_in_step_with_status_lease_and_time():
    eid = out_of_retries.start({})
    run_until_idle()
    durable.send_event(eid, "go", 1)
    run_until_idle()  # the step fails; its retry is due in a second
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.ready) == ("pending", False)
    assert execution.run_at > clock.now()
    [held] = claims.claim("w1", None, 1) or [None]
    assert held is None
    advance_clock(2)
    timers.run_timers()
    [held] = claims.claim("w1", None, 1)
    assert not ready(eid)
    assert releases.release("w1", "WorkerStopped", "bye") == 1
    assert ready(eid)
    durable.cancel(eid)
    assert not ready(eid)


@pytest.mark.django_db
def test_rows_marked_ready_by_older_code_are_never_claimed_and_get_unmarked():
    """During a rolling deploy a process that predates `ready` leaves it set on rows it
    claims or finishes; claims must skip them, not fail or take held work."""
    held = single.start({})
    done = single.start({})
    claims.claim("old-worker", None, 2)
    WorkflowExecution.objects.filter(id=done).update(status="completed", locked_by=None)
    WorkflowExecution.objects.filter(id__in=[held, done]).update(ready=True)
    assert claims.claim("new-worker", None, 10) == []
    assert claims.unmark_unclaimable() == 2
    assert not WorkflowExecution.objects.filter(ready=True).exists()
