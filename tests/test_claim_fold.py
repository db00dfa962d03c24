"""The claim that opens its first attempt (`claims.claim_and_start`), as worker threads
and `run_until_idle` claim: one statement on PostgreSQL, the attempt's id is the run
token, a parked run is resumed, and an attempt that never began leaves no trace."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import django_durable as durable
from django_durable import claims, engine, executions, registry, workflow
from django_durable.models import StepExecution, WorkflowExecution
from django_durable.testing import run_until_idle
from django_durable.waits import wait_for_event
from tests.worker_support import IS_POSTGRES


def greet(ctx):
    return {**ctx, "greeted": True}


def waits_for_go(ctx):
    return {**ctx, "go": wait_for_event("go")}


one_step = workflow("fold.one_step", [greet])
waiting = workflow("fold.waiting", [waits_for_go])


@pytest.mark.django_db
def test_the_claim_opens_the_first_attempt_under_its_token():
    eid = one_step.start({})
    token = uuid.uuid4()
    with CaptureQueriesContext(connection) as queries:
        claimed = claims.claim_and_start("w1", None, token)
    assert (claimed.id, claimed.run_token, claimed.status) == (eid, token, "running")
    if IS_POSTGRES:
        assert len(queries) == 1  # the claim and the attempt's INSERT together
        [row] = StepExecution.objects.filter(execution_id=eid)
        assert (row.id, row.step_name, row.attempt, row.status, row.worker) == (
            token,
            "greet",
            1,
            "running",
            "w1",
        )
        assert claimed.opened_attempt.id == token
    else:
        assert not StepExecution.objects.filter(execution_id=eid).exists()
    assert engine.run_claimed(claimed, worker="w1", queues=None) == 1
    [row] = StepExecution.objects.filter(execution_id=eid)
    assert (row.id, row.status) == (token, "completed")
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


@pytest.mark.django_db
def test_nothing_runnable_claims_nothing():
    assert claims.claim_and_start("w1", None, uuid.uuid4()) is None
    one_step.start({}, queue="elsewhere")
    assert claims.claim_and_start("w1", ["default"], uuid.uuid4()) is None


@pytest.mark.skipif(not IS_POSTGRES, reason="the attempt is in the claim on PostgreSQL only")
@pytest.mark.django_db
def test_running_a_one_step_workflow_inserts_no_attempt_of_its_own():
    eid = one_step.start({})
    with CaptureQueriesContext(connection) as queries:
        assert run_until_idle() == 1
    inserts = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert inserts == []  # the attempt came with the claim, a WITH ... statement
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


@pytest.mark.skipif(not IS_POSTGRES, reason="more_ready is PostgreSQL's claim")
@pytest.mark.django_db
def test_the_claim_says_whether_more_work_looked_runnable():
    one_step.start({})
    one_step.start({})
    first = claims.claim_and_start("w1", None, uuid.uuid4())
    assert first.more_ready is True
    second = claims.claim_and_start("w1", None, uuid.uuid4())
    assert second.more_ready is False


@pytest.mark.django_db
def test_the_run_parked_on_a_wait_is_resumed_by_the_claim():
    eid = waiting.start({})
    run_until_idle()
    durable.send_event(eid, "go", "now")
    claimed = claims.claim_and_start("w1", None, uuid.uuid4())
    assert claimed.claimed_from == "waiting"
    engine.run_claimed(claimed, worker="w1", queues=None)
    rows = StepExecution.objects.filter(execution_id=eid).order_by("started_at")
    assert [row.status for row in rows] == ["resumed", "completed"]
    assert WorkflowExecution.objects.get(id=eid).context == {"go": "now"}


@pytest.mark.django_db
def test_a_compensating_execution_is_claimed_without_an_attempt():
    eid = one_step.start({})
    [running] = claims.claim("w1", None, 1)
    error = {"type": "RuntimeError", "message": "boom", "traceback": ""}
    executions.finish(running, "compensating", error=error, run_at=running.run_at)
    claimed = claims.claim_and_start("w2", None, uuid.uuid4())
    assert (claimed.id, claimed.status) == (eid, "compensating")
    assert getattr(claimed, "opened_attempt", None) is None  # the engine names what it undoes
    assert not StepExecution.objects.filter(execution_id=eid, status="running").exists()


@pytest.mark.django_db
def test_an_opened_attempt_that_cannot_run_here_is_removed():
    eid = one_step.start({})
    claimed = claims.claim_and_start("old-code", None, uuid.uuid4())
    known = registry.get("fold.one_step")
    registry.unregister("fold.one_step")
    try:
        assert engine.run_claimed(claimed, worker="old-code", queues=None) == 0
    finally:
        registry.register(known)
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.locked_by) == ("pending", None)
    assert execution.error["type"] == "UnknownWorkflow"
    assert not StepExecution.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db
def test_a_lost_claim_is_given_back_by_its_token_without_counting_a_recovery():
    from django_durable import releases

    eid = one_step.start({})
    token = uuid.uuid4()
    claims.claim_and_start("w1", None, token)  # committed; say its reply never came
    assert releases.give_back_lost_claim("w1", uuid.uuid4()) == 0  # another token: not ours
    assert releases.give_back_lost_claim("w1", token) == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.locked_by, execution.recoveries) == ("pending", None, 0)
    assert not StepExecution.objects.filter(execution_id=eid).exists()
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


@pytest.mark.django_db
def test_a_claim_that_failed_after_its_reply_is_given_back_and_counted():
    from django_durable import releases

    eid = one_step.start({})
    token = uuid.uuid4()
    claims.claim_and_start("w1", None, token)
    assert releases.give_back_lost_claim("w1", token, counted=True) == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.locked_by, execution.recoveries) == ("pending", None, 1)
    assert not StepExecution.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db(transaction=True)  # the runner drops its connection
def test_a_lost_claim_that_could_not_be_given_back_is_tried_again(monkeypatch):
    """The database stayed away longer than the runner's few reconnects: the claim is
    kept in mind and given back on a later round, not left until its lease lapses."""
    from django.db import OperationalError

    from django_durable import releases
    from django_durable import worker as worker_module
    from django_durable.worker import Worker

    monkeypatch.setattr(worker_module, "RECONNECT_SECONDS", 0)
    worker = Worker(["default"], name="w-away")
    eid = one_step.start({})
    token = uuid.uuid4()
    claims.claim_and_start(worker.name, None, token)
    real = releases.give_back_lost_claim

    def database_away(*args):
        raise OperationalError("the database is away")

    monkeypatch.setattr(releases, "give_back_lost_claim", database_away)
    worker._give_back(token, counted=False)
    assert worker._unreturned == {token: False}
    assert WorkflowExecution.objects.get(id=eid).locked_by == worker.name
    monkeypatch.setattr(releases, "give_back_lost_claim", real)
    worker._give_back_unreturned()
    assert worker._unreturned == {}
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.locked_by, execution.recoveries) == ("pending", None, 0)
