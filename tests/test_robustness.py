"""Bad values and lost claims: nothing may loop forever, crash a worker, or write late.

Each test here pins down a defect found in review: a step whose outcome cannot be
stored, a step that raises SystemExit, a user dict that looks like a typed value, an
attempt whose claim was revoked before or while it ran.
"""

import uuid
from datetime import timedelta

import pytest
from django.db import DataError, OperationalError

import django_durable as durable
from django_durable import (
    Retry,
    claims,
    clock,
    codec,
    engine,
    executions,
    recording,
    releases,
    step,
    timers,
    workflow,
)
from django_durable.models import PendingInput, StepExecution, Wait, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import wait_for_event, wait_for_input
from django_durable.worker import Attempt, Worker
from tests.calls import calls, count_call
from tests.worker_support import WorkerPool


def self_referencing(ctx):
    count_call("self_referencing")
    looped = {"a": 1}
    looped["self"] = looped
    return looped


def nul_in_output(ctx):
    count_call("nul_in_output")
    return {"text": "before\x00after"}


def nul_in_error(ctx):
    count_call("nul_in_error")
    raise ValueError("bad byte \x00 here")


def exits(ctx):
    count_call("exits")
    raise SystemExit(3)


retrying = Retry(max_attempts=5, backoff="constant", base=1)
self_ref_wf = workflow("robust.self_ref", [step(self_referencing, retry=retrying)])
nul_output_wf = workflow("robust.nul_output", [step(nul_in_output, retry=retrying)])
nul_error_wf = workflow("robust.nul_error", [nul_in_error])
exits_wf = workflow("robust.exits", [exits])


@pytest.mark.django_db
def test_a_context_that_cannot_be_encoded_fails_the_step_once():
    execution_id = durable.start(self_ref_wf)
    assert run_until_idle() == 1
    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert execution.error["type"] == "RecursionError"
    assert calls == {"self_referencing": 1}


@pytest.mark.django_db
def test_a_nul_character_in_a_context_is_not_serializable_on_every_database():
    execution_id = durable.start(nul_output_wf)
    assert run_until_idle() == 1
    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert execution.error["type"] == "ContextNotSerializable"
    assert "'text'" in execution.error["message"]
    with pytest.raises(durable.InvalidWorkflowInput):
        durable.start(nul_output_wf, {"name": "a\x00b"})
    assert WorkflowExecution.objects.count() == 1


@pytest.mark.django_db
def test_a_nul_character_in_an_error_message_is_stored_escaped():
    execution_id = durable.start(nul_error_wf)
    run_until_idle()
    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert execution.error["message"] == "bad byte \\x00 here"


@pytest.mark.django_db
def test_system_exit_in_a_step_fails_that_step_only():
    execution_id = durable.start(exits_wf)
    assert run_until_idle() == 1
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.error["type"]) == ("failed", "SystemExit")


@pytest.mark.django_db
def test_an_outcome_the_database_refuses_fails_the_step_instead_of_rerunning_it(monkeypatch):
    def refuse(*args, **kwargs):
        raise DataError("value too long for type character varying(255)")

    monkeypatch.setattr(recording, "_step_completed", refuse)
    execution_id = durable.start("tests.hello")
    assert run_until_idle() == 1
    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert execution.error["type"] == "DataError"
    assert "could not be stored" in execution.error["message"]


def test_retry_delays_do_not_overflow_for_many_attempts():
    policy = Retry(max_attempts=200, backoff="exponential", base=1, max_backoff=timedelta(hours=1))
    assert policy.delay_after(199) == timedelta(hours=1)


def test_user_dicts_that_look_like_typed_values_round_trip_unchanged():
    look_alikes = [
        {"__durable__": "uuid", "value": "not-a-uuid"},
        {"__durable__": "uuid", "value": str(uuid.UUID(int=7))},
        {"__durable__": "dict", "value": {"a": 1}},
        {"__durable__": "decimal", "value": "1.5", "extra": True},
    ]
    for value in look_alikes:
        assert codec.decode(codec.encode({"payload": value})) == {"payload": value}


def test_a_malformed_tagged_value_in_the_database_is_returned_as_it_is():
    stored = {"__durable__": "decimal", "value": "not a number"}
    assert codec.decode(stored) == stored


@pytest.mark.django_db
def test_a_webhook_body_that_looks_typed_does_not_break_the_execution():
    execution_id = durable.start(
        "tests.hello", {"name": "x", "body": {"__durable__": "uuid", "value": "nope"}}
    )
    run_until_idle()
    execution = durable.get_execution(execution_id)
    assert execution.status == "completed"
    assert execution.context["body"] == {"__durable__": "uuid", "value": "nope"}


def slow_then_wait(ctx):
    execution = WorkflowExecution.objects.get(id=ctx["me"])
    executions.cancel(execution.id, "changed my mind")  # revoked while the step body runs
    return {**ctx, "answer": wait_for_input("answer")}


cancelled_mid_step = workflow("robust.cancelled_mid_step", [slow_then_wait])


@pytest.mark.django_db
def test_an_attempt_cancelled_while_running_records_no_wait():
    execution_id = durable.start(cancelled_mid_step)
    WorkflowExecution.objects.filter(id=execution_id).update(context={"me": str(execution_id)})
    run_until_idle()
    assert durable.get_execution(execution_id).status == "cancelled"
    assert not PendingInput.objects.filter(execution_id=execution_id).exists()
    [row] = StepExecution.objects.filter(execution_id=execution_id)
    assert (row.status, row.error["type"]) == ("failed", "Cancelled")


def takes_event(ctx):
    count_call("takes_event")
    return {**ctx, "got": wait_for_event("go")}


event_taker = workflow("robust.event_taker", [takes_event])


@pytest.mark.django_db
def test_a_stale_attempt_cannot_take_an_event_meant_for_the_current_one():
    execution_id = durable.start(event_taker)
    [stale] = claims.claim("stale-worker", None, 1)
    durable.send_event(execution_id, "go", "for the real attempt")
    executions.cancel(execution_id)
    executions.resume(execution_id)
    engine.run_claimed(stale, worker="stale-worker", queues=None)  # revoked before it ran
    assert not Wait.objects.filter(execution_id=execution_id, step_seq=stale.step_seq).exists()
    run_until_idle()
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.context["got"]) == ("completed", "for the real attempt")


@pytest.mark.django_db
def test_an_attempt_revoked_before_it_started_does_not_run():
    """A cancel landing between the claim and the attempt's start: the attempt's row is
    inserted only while the claim holds, so the step never runs (regression: it did)."""
    execution_id = durable.start(event_taker)
    [claimed] = claims.claim("w1", None, 1)
    executions.cancel(execution_id)
    assert engine.run_claimed(claimed, worker="w1", queues=None) == 0
    assert calls["takes_event"] == 0
    assert not StepExecution.objects.filter(execution_id=execution_id).exists()
    assert durable.get_execution(execution_id).status == "cancelled"


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_sqlite_without_immediate_transactions_gets_a_warning_from_manage_py_check(settings):
    from django.core.checks import run_checks

    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "dev.sqlite3"}
    settings.DATABASES = {**settings.DATABASES, "dev": sqlite}
    assert "durable.W001" in [message.id for message in run_checks()]
    settings.DATABASES = {
        **settings.DATABASES,
        "dev": {**sqlite, "OPTIONS": {"transaction_mode": "IMMEDIATE"}},
    }
    assert "durable.W001" not in [message.id for message in run_checks()]


def test_a_step_timeout_check_that_hits_a_database_error_is_tried_again(monkeypatch):
    worker = Worker(["default"], name="timeouts")
    attempt = Attempt(
        execution_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        started_at=clock.now() - timedelta(seconds=10),
        timeout=timedelta(seconds=1),
    )
    worker._attempts[1] = attempt
    outcomes = [OperationalError("connection lost"), True]

    def time_out_attempt(execution_id, run_id):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(timers, "time_out_attempt", time_out_attempt)
    with pytest.raises(OperationalError):
        worker._time_out_overrunning_attempts()
    assert worker._attempts == {1: attempt}  # kept, so the next tick tries again
    worker._time_out_overrunning_attempts()
    assert worker._attempts == {}


@pytest.mark.django_db(transaction=True)
def test_system_exit_in_a_step_does_not_stall_a_real_worker(tmp_path):
    pool = WorkerPool(tmp_path)
    try:
        exiting = durable.start("worker_tests.exits")
        normal = durable.start("tests.hello", {"name": "after"})
        worker = pool.start(concurrency=1, burst=True)
        assert worker.wait() == 0, pool.report()
    finally:
        pool.close()
    assert durable.get_execution(exiting).error["type"] == "SystemExit"
    assert durable.get_execution(normal).status == "completed"


@pytest.mark.django_db
def test_a_worker_that_does_not_know_the_workflow_gives_the_execution_back(monkeypatch):
    execution_id = durable.start("tests.hello")
    [claimed] = claims.claim("old-code", None, 1)
    from django_durable import registry

    known = registry.get("tests.hello")
    registry.unregister("tests.hello")
    try:
        assert engine.run_claimed(claimed, worker="old-code", queues=None) == 0
    finally:
        registry.register(known)
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.locked_by) == ("pending", None)
    assert execution.error["type"] == "UnknownWorkflow"  # why it waits, for the admin
    assert execution.run_at > clock.now()  # not runnable again at once
    assert not StepExecution.objects.filter(execution_id=execution_id).exists()
    advance_clock(engine.UNKNOWN_RETRY)
    run_until_idle()
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.error) == ("completed", None)


def waits_inside_atomic(ctx):
    from django.db import transaction

    count_call("waits_inside_atomic")
    with transaction.atomic():
        return {**ctx, "got": wait_for_event("never")}


atomic_wait = workflow("robust.atomic_wait", [step(waits_inside_atomic, retry=retrying)])


@pytest.mark.django_db
def test_a_wait_inside_the_steps_own_transaction_fails_the_step_clearly():
    execution_id = durable.start(atomic_wait)
    assert run_until_idle() == 1
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.error["type"]) == ("failed", "WaitInsideTransaction")
    assert calls == {"waits_inside_atomic": 1}  # not retried, not looping
    assert not Wait.objects.filter(execution_id=execution_id).exists()


def bad_query(ctx):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_here")
    return ctx


db_error = workflow("robust.db_error", [bad_query])


@pytest.mark.django_db
def test_a_database_error_in_a_step_under_a_test_transaction_is_recorded():
    execution_id = durable.start(db_error)
    assert run_until_idle() == 1
    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert "no_such_table_here" in execution.error["message"]
    assert durable.start("tests.hello")  # the test's own transaction is still usable


@pytest.mark.django_db
def test_values_the_database_cannot_hold_get_the_documented_errors():
    with pytest.raises(durable.InvalidWorkflowInput, match="surrogate"):
        durable.start("tests.hello", {"name": "\ud800"})
    with pytest.raises(durable.InvalidWorkflowInput, match="32 bits"):
        durable.start("tests.hello", priority=2**40)
    execution_id = durable.start(event_taker)
    with pytest.raises(durable.InvalidEventName):
        durable.send_event(execution_id, "go\x00")
    with pytest.raises(durable.InvalidEventName):
        durable.send_event(execution_id, "x" * 201)
    with pytest.raises(durable.ContextNotSerializable):
        durable.send_event(execution_id, "go", {"text": "\ud800"})
    assert not durable.get_execution(execution_id, include_steps=True).steps


def asks_for_text(ctx):
    return {**ctx, "text": wait_for_input("note")}


text_input = workflow("robust.text_input", [asks_for_text])


@pytest.mark.django_db
def test_answers_the_database_cannot_hold_are_invalid_input():
    execution_id = durable.start(text_input)
    run_until_idle()
    with pytest.raises(durable.InvalidInput, match="NUL"):
        durable.provide_input(execution_id, "note", "a\x00b")
    with pytest.raises(durable.InvalidInput, match="responded_by"):
        durable.provide_input(execution_id, "note", "fine", responded_by="x" * 300)
    with pytest.raises(durable.InvalidInput, match="NUL"):
        durable.provide_input(execution_id, "note", "fine", responded_by="a\x00")
    assert PendingInput.objects.get(execution_id=execution_id).status == "pending"


def asks_for_amount(ctx):
    form = wait_for_input("amount", type="form", fields=[{"name": "n", "type": "number"}])
    return {**ctx, "form": form}


amount_input = workflow("robust.amount_input", [asks_for_amount])


@pytest.mark.django_db
def test_absurdly_large_numbers_are_refused_at_once():
    execution_id = durable.start(amount_input)
    run_until_idle()
    for value in ("1e2000000", "1e5000", 10**400):
        with pytest.raises(durable.InvalidInput, match="within"):
            durable.provide_input(execution_id, "amount", {"n": value})
    assert durable.provide_input(execution_id, "amount", {"n": "1e3"}) == {"n": 1000}


@pytest.mark.django_db
def test_releasing_one_claim_needs_its_run_token():
    execution_id = durable.start("tests.hello")
    [claimed] = claims.claim("w1", None, 1)
    assert releases.release("w1", "WorkerError", "x", execution_id, [uuid.uuid4()]) == 0
    assert durable.get_execution(execution_id).status == "running"
    tokens = [uuid.uuid4(), claimed.run_token]  # e.g. a next attempt's token that never committed
    assert releases.release("w1", "WorkerError", "x", execution_id, tokens) == 1
    assert durable.get_execution(execution_id).status == "pending"


def test_a_failing_heartbeat_duty_does_not_stop_the_others():
    worker = Worker(["default"], name="guarded")
    ran = []

    def broken():
        raise RuntimeError("timeout bookkeeping broke")

    def beat():
        ran.append("beat")

    assert worker._guarded(broken) is False
    assert worker._guarded(beat) is True
    assert ran == ["beat"]
    assert worker.state == "running"


def crash_inside_the_step(worker: str) -> None:
    """Claim the only runnable execution and die while its step runs: the attempt's row
    is `running` and the lease is left to lapse, as after a SIGKILL."""

    class Killed(BaseException):
        pass

    def die(attempt, step):
        raise Killed

    [claimed] = claims.claim(worker, None, 1)
    with pytest.raises(Killed):
        engine.run_claimed(claimed, worker=worker, queues=None, on_attempt=die)


@pytest.mark.django_db
def test_a_claim_lost_before_its_attempt_started_is_not_an_interruption(settings):
    """A worker that lost the database between claiming and starting the attempt (every
    thread of a pool after a failover) gives the claim back without counting it: one
    outage must not add up to TooManyInterruptions (regression)."""
    settings.DURABLE = {**settings.DURABLE, "MAX_RECOVERIES": 2}
    execution_id = durable.start("tests.hello")
    for round in range(5):
        [claimed] = claims.claim(f"lost-{round}", None, 1)
        assert (
            releases.release(f"lost-{round}", "WorkerError", "x", claimed.id, [claimed.run_token])
            == 1
        )
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.recoveries) == ("pending", 0)
    run_until_idle()
    assert durable.get_execution(execution_id).status == "completed"


@pytest.mark.django_db
def test_a_step_interrupted_again_and_again_fails_after_max_recoveries(settings):
    settings.DURABLE = {**settings.DURABLE, "MAX_RECOVERIES": 3}
    execution_id = durable.start("tests.hello")
    for interruption in range(1, 4):
        crash_inside_the_step(f"crashing-{interruption}")
        WorkflowExecution.objects.filter(id=execution_id).update(
            locked_until=clock.now() - timedelta(seconds=1)
        )
        assert timers.reclaim_expired_leases() == 1
        execution = durable.get_execution(execution_id)
        if interruption < 3:
            assert (execution.status, execution.recoveries) == ("pending", interruption)
    assert (execution.status, execution.error["type"]) == ("failed", "TooManyInterruptions")
    assert execution.locked_by is None
    assert StepExecution.objects.filter(execution_id=execution_id, status="running").count() == 0

    durable.resume(execution_id)  # a person decides to try once more
    run_until_idle()
    assert durable.get_execution(execution_id).status == "completed"


@pytest.mark.django_db
def test_a_completed_attempt_resets_the_interruption_count(settings):
    settings.DURABLE = {**settings.DURABLE, "MAX_RECOVERIES": 2}
    execution_id = durable.start("tests.hello")
    crash_inside_the_step("crashing")
    WorkflowExecution.objects.filter(id=execution_id).update(
        locked_until=clock.now() - timedelta(seconds=1)
    )
    timers.reclaim_expired_leases()
    assert durable.get_execution(execution_id).recoveries == 1
    run_until_idle()
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.recoveries) == ("completed", 0)


def first_of_two(ctx):
    return {**ctx, "first": True}


def second_of_two(ctx):
    return {**ctx, "second": True}


two_steps = workflow("robust.two_steps", [first_of_two, second_of_two])


@pytest.mark.django_db
def test_a_refusal_after_the_execution_row_was_updated_still_fails_the_step(monkeypatch):
    """The database refuses the next attempt's row after the execution's UPDATE went
    through in the same (rolled back) transaction or statement: the failure is still
    recorded."""
    original_save = StepExecution.save

    def refuse_second(self, *args, **kwargs):
        if self.step_name == "second_of_two":
            raise DataError("simulated refusal of the next attempt's row")
        return original_save(self, *args, **kwargs)

    def refuse_the_chain(*args, **kwargs):  # PostgreSQL: the chain is one statement
        raise DataError("simulated refusal of the next attempt's row")

    monkeypatch.setattr(StepExecution, "save", refuse_second)
    monkeypatch.setattr(claims, "hand_over", refuse_the_chain)
    execution_id = durable.start(two_steps)
    assert run_until_idle() == 1
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.current_step) == ("failed", "first_of_two")
    assert execution.error["type"] == "DataError"
    assert execution.locked_by is None
    [row] = StepExecution.objects.filter(execution_id=execution_id)
    assert (row.step_name, row.status) == ("first_of_two", "failed")
