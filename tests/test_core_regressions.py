"""Regression tests for defects found by review and a chaos run of the first core.

Each test failed before its fix: the chained step's context, a commit whose reply was
lost, a release that skipped a locked row, unbounded releases, colliding wait keys,
and a database failure inside a wait counted as the step's own failure.
"""

import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.db import OperationalError, connection, connections, transaction

import django_durable as durable
from django_durable import (
    Retry,
    claims,
    clock,
    engine,
    events,
    executions,
    releases,
    starting,
    step,
    timers,
    workflow,
)
from django_durable.dsl import Goto
from django_durable.models import StepExecution, Wait, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import wait_for_all, wait_for_any, wait_for_event
from django_durable.worker import Worker
from tests.calls import calls, count_call
from tests.worker_support import IS_POSTGRES

PARIS_NOON = datetime(2024, 3, 6, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
SEEN: list[dict] = []


def makes_values(ctx):
    return {"pair": (1, 2), "when": PARIS_NOON, "nested": {"t": ("x",)}}


def reads_values(ctx):
    SEEN.append(
        {
            "pair": ctx["pair"],
            "when": ctx["when"],
            "tzinfo": ctx["when"].tzinfo,
            "nested": ctx["nested"]["t"],
        }
    )
    if count_call("reads_values") == 1 and ctx.get("fail_first"):
        raise RuntimeError("once")
    return ctx


def marks_fail_first(ctx):
    return {**makes_values(ctx), "fail_first": True}


chained = workflow("regress.chained", [makes_values, reads_values])
retried = workflow(
    "regress.retried",
    [marks_fail_first, step(reads_values, retry=Retry(max_attempts=2, backoff="constant", base=1))],
)


@pytest.fixture(autouse=True)
def _clear_seen():
    SEEN.clear()


@pytest.mark.django_db
def test_a_chained_step_receives_what_was_stored_not_the_previous_steps_objects():
    chained.start({})
    run_until_idle()
    [seen] = SEEN
    assert seen["pair"] == [1, 2] and seen["nested"] == ["x"]  # tuples are stored as lists
    assert seen["when"] == PARIS_NOON
    assert seen["tzinfo"] == timezone(timedelta(hours=1))  # the stored offset, not the zone
    assert not isinstance(seen["tzinfo"], ZoneInfo)


@pytest.mark.django_db
def test_a_chained_step_and_its_retry_receive_the_same_context():
    retried.start({})
    run_until_idle()
    advance_clock(2)
    run_until_idle()
    chained_run, retry_run = SEEN
    assert chained_run == retry_run
    assert type(chained_run["pair"]) is list


# -- a commit whose reply was lost -------------------------------------------------------


def first(ctx):
    count_call("first")
    return {**ctx, "first": True}


def second(ctx):
    count_call("second")
    return {**ctx, "second": True}


two_steps = workflow("regress.two_steps", [first, second])


def run_like_a_worker(worker: Worker, execution: WorkflowExecution) -> None:
    """One of the worker's threads taking a claimed execution (releases on errors)."""
    worker._run_execution(execution, worker.slots["default"])


@contextmanager
def reply_of_the_chained_step_lost(monkeypatch):
    """The chain from step 1 to step 2 commits on the server, then the connection dies:
    on PostgreSQL it is one autocommitted statement, elsewhere a transaction's COMMIT."""
    lost = OperationalError("server closed the connection unexpectedly")
    if IS_POSTGRES:

        def lose_the_reply(execute, sql, params, many, context):
            result = execute(sql, params, many, context)
            if sql.startswith("WITH advanced"):
                raise lost
            return result

        with connection.execute_wrapper(lose_the_reply):
            yield
        return
    real_commit = connection.commit
    commits = []

    def commit_then_lose_the_reply():
        real_commit()
        commits.append(1)
        if len(commits) == 2:  # 1: the first attempt's row, 2: step 1 recorded
            raise lost

    monkeypatch.setattr(connection, "commit", commit_then_lose_the_reply)
    yield
    monkeypatch.undo()


@pytest.mark.django_db(transaction=True)
def test_a_commit_whose_reply_was_lost_does_not_leave_the_execution_running(monkeypatch):
    """The server committed the chain to step 2 (a new run token) but the connection died
    before the client heard: the worker must release the claim the database kept, not
    leave it `running` until its lease lapses (regression)."""
    eid = two_steps.start({})
    worker = Worker(["default"], name="w-lost-reply")
    [claimed] = claims.claim(worker.name, ["default"], 1)
    with reply_of_the_chained_step_lost(monkeypatch):
        run_like_a_worker(worker, claimed)

    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.current_step, execution.locked_by) == (
        "pending",
        "second",
        None,
    )
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"first": True, "second": True}
    completed = StepExecution.objects.filter(execution_id=eid, status="completed")
    assert sorted(completed.values_list("step_name", flat=True)) == ["first", "second"]


# -- releasing -------------------------------------------------------------------------


@contextmanager
def held_in_another_transaction(action, seconds: float = 0.5):
    """Run `action` in a transaction on another connection that stays open (its locks
    held, its changes uncommitted) for `seconds` while the body runs."""
    done = threading.Event()

    def hold():
        with transaction.atomic():
            action()
            done.set()
            time.sleep(seconds)
        connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert done.wait(10)
    try:
        yield
    finally:
        holder.join(10)


@pytest.mark.skipif(not IS_POSTGRES, reason="row locks are PostgreSQL's (SQLite has one writer)")
@pytest.mark.django_db(transaction=True)
def test_a_release_waits_for_a_row_lock_instead_of_skipping_the_row():
    """`send_event` holds the execution's row lock for a moment; a worker releasing the
    execution then must wait for it, not skip it and leave it `running` (regression)."""
    eid = two_steps.start({})
    claims.claim("w1", None, 1)

    def lock_the_row():
        WorkflowExecution.objects.select_for_update().get(id=eid)

    with held_in_another_transaction(lock_the_row):
        assert releases.release("w1", "WorkerStopped", "shutting down") == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.locked_by) == ("pending", None)


@pytest.mark.django_db
def test_lapsed_leases_are_reclaimed_in_batches(monkeypatch):
    monkeypatch.setattr(releases, "RELEASE_BATCH", 3)
    ids = [two_steps.start({}) for _ in range(5)]
    assert len(claims.claim("w1", None, 5)) == 5
    WorkflowExecution.objects.update(locked_until=clock.now() - timedelta(seconds=1))
    assert timers.reclaim_expired_leases() == 3
    assert timers.reclaim_expired_leases() == 2
    assert timers.reclaim_expired_leases() == 0
    assert set(WorkflowExecution.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        "pending"
    }


# -- wait keys -------------------------------------------------------------------------


def two_similar_waits(ctx):
    comma = wait_for_any(["a,b"])
    pair = wait_for_any(["a", "b"])
    return {"comma": list(comma), "pair": list(pair)}


LONG_NAMES = [f"{index}-" + "x" * 190 for index in range(5)]


def many_long_names(ctx):
    return {"got": sorted(wait_for_all(LONG_NAMES))}


def too_long_a_name(ctx):
    return {"got": wait_for_event("x" * 201)}


similar_waits = workflow("regress.similar_waits", [two_similar_waits])
long_names = workflow("regress.long_names", [many_long_names])
too_long = workflow("regress.too_long", [too_long_a_name])


@pytest.mark.django_db
def test_wait_keys_of_similar_name_lists_do_not_collide():
    eid = similar_waits.start({})
    run_until_idle()
    durable.send_event(eid, "a,b", 1)
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"  # ["a", "b"] still waits
    durable.send_event(eid, "b", 2)
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.context == {"comma": ["a,b", 1], "pair": ["b", 2]}
    assert Wait.objects.filter(execution_id=eid).count() == 2


@pytest.mark.django_db
def test_a_wait_for_many_long_names_fits_its_column():
    eid = long_names.start({})
    run_until_idle()
    key = Wait.objects.get(execution_id=eid).key
    assert len(key) <= Wait._meta.get_field("key").max_length
    for name in LONG_NAMES:
        durable.send_event(eid, name, None)
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).context == {"got": sorted(LONG_NAMES)}


@pytest.mark.django_db
def test_an_event_name_longer_than_its_column_is_refused_where_it_is_given():
    eid = too_long.start({})
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "WorkflowDefinitionError"
    assert "the limit is 200" in execution.error["message"]
    with pytest.raises(durable.InvalidEventName, match="limit is 200"):
        durable.send_event(eid, "y" * 201)


# -- the database failing inside a wait --------------------------------------------------


def waits_for_go(ctx):
    count_call("waits_for_go")
    return {**ctx, "go": wait_for_event("go")}


single_attempt = workflow("regress.single_attempt", [waits_for_go])  # Retry(): one attempt


@pytest.mark.django_db(transaction=True)
def test_a_database_failure_inside_a_wait_interrupts_instead_of_failing_the_step(monkeypatch):
    """The engine's own query inside a wait loses the connection: that is no fault of
    the step, so it must not spend the step's only attempt (regression: it failed the
    execution for good)."""
    eid = single_attempt.start({})
    real_offer = events.offer_events
    failures = [OperationalError("terminating connection due to administrator command")]

    def offer_or_fail(wait):
        if failures:
            raise failures.pop()
        return real_offer(wait)

    monkeypatch.setattr(events, "offer_events", offer_or_fail)
    worker = Worker(["default"], name="w-wait-db")
    [claimed] = claims.claim(worker.name, ["default"], 1)
    run_like_a_worker(worker, claimed)

    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.attempt, execution.error) == ("pending", 1, None)
    [interrupted] = StepExecution.objects.filter(execution_id=eid)
    assert (interrupted.status, interrupted.error["type"]) == ("failed", "WorkerError")

    run_until_idle()
    durable.send_event(eid, "go", "now")
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.context) == ("completed", {"go": "now"})


@pytest.mark.django_db(transaction=True)
def test_after_an_outage_every_runner_reconnects_before_its_next_work(monkeypatch):
    """One failover kills every thread's connection at once. A runner must not find out
    by failing its next execution (each such failure used to count as an interruption,
    so ten threads failed an execution with TooManyInterruptions): once any thread saw
    the database go, every runner drops its connection before it takes more work."""
    from django.db.backends.base.base import BaseDatabaseWrapper

    worker = Worker(["default"], name="w-outage")
    slot = worker.slots["default"]
    journal = []
    real_close = BaseDatabaseWrapper.close

    def close(self):
        journal.append(("close", threading.get_ident()))
        return real_close(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "close", close)
    monkeypatch.setattr(
        worker,
        "_track_attempt",
        lambda attempt, step: journal.append(("attempt", threading.get_ident())),
    )
    runner = worker._spawn(worker._run_slot, "durable-default-0", slot)

    def run_one() -> None:
        eid = two_steps.start({})
        worker._offer(slot)
        deadline = time.monotonic() + 20
        while WorkflowExecution.objects.get(id=eid).status != "completed":
            assert time.monotonic() < deadline, "the runner did not finish its execution"
            time.sleep(0.02)

    run_one()
    worker._lost_connection()  # as the dispatcher does when its claim hits a dead server
    run_one()
    slot.inbox.put(None)
    runner.join(10)

    ident = runner.ident
    mine = [event for event, thread in journal if thread == ident]
    first_work = mine.index("attempt")
    second_work = mine.index("attempt", first_work + 2)  # two steps per execution
    assert "close" in mine[first_work:second_work]


# -- review findings ---------------------------------------------------------------------


@pytest.mark.skipif(not IS_POSTGRES, reason="row locks are PostgreSQL's (SQLite has one writer)")
@pytest.mark.django_db(transaction=True)
def test_an_attempt_waits_for_a_cancel_that_has_not_committed_yet():
    """The first attempt's check of its claim must not read past a cancel still in
    flight: it waits for it, then finds the claim gone and does not start."""
    eid = two_steps.start({})
    [claimed] = claims.claim("w1", None, 1)

    def cancel():
        executions.finish(executions.lock(eid), "cancelled", fenced=False)

    with held_in_another_transaction(cancel):
        assert engine.run_claimed(claimed, worker="w1", queues=None) == 0
    assert calls["first"] == 0
    assert not StepExecution.objects.filter(execution_id=eid).exists()
    assert WorkflowExecution.objects.get(id=eid).status == "cancelled"


@pytest.mark.django_db
def test_the_run_parked_on_a_wait_is_resumed_even_if_one_claim_never_started():
    eid = single_attempt.start({})
    run_until_idle()
    durable.send_event(eid, "go", "now")
    [claimed] = claims.claim("w1", None, 1)
    assert claimed.claimed_from == "waiting"
    assert releases.release("w1", "WorkerError", "lost", eid, [claimed.run_token]) == 1
    run_until_idle()  # claimed from pending this time
    rows = StepExecution.objects.filter(execution_id=eid).order_by("started_at")
    assert [row.status for row in rows] == ["resumed", "completed"]
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


@pytest.mark.django_db
def test_claiming_a_compensating_execution_keeps_the_error_that_started_it():
    eid = two_steps.start({})
    [running] = claims.claim("w1", None, 1)
    error = {"type": "RuntimeError", "message": "charge failed", "traceback": ""}
    executions.finish(running, "compensating", error=error, run_at=clock.now())
    [held] = claims.claim("w2", None, 1)
    assert held.error == error
    engine.run_claimed(held, worker="w2", queues=None)  # this worker has no compensations
    assert WorkflowExecution.objects.get(id=eid).error == error


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_reply_was_lost_is_given_back_without_waiting_for_its_lease(monkeypatch):
    """The claim committed on the server, but the worker never heard: the rows leased to
    it must not sit `running` for LEASE_SECONDS; once reconnected it gives back what no
    thread of it works on, and runs it."""
    eid = two_steps.start({})
    real_claim = claims.claim_and_start
    replies = []

    def claim_and_lose_the_first_reply(worker, queues, token):
        claimed = real_claim(worker, queues, token)
        if claimed is not None:  # another runner may look too, and find nothing
            replies.append(claimed)
            if len(replies) == 1:
                raise OperationalError("server closed the connection unexpectedly")
        return claimed

    monkeypatch.setattr(claims, "claim_and_start", claim_and_lose_the_first_reply)
    monkeypatch.setattr("django_durable.worker.RECONNECT_SECONDS", 0.05)
    worker = Worker(["default"], name="w-lost-claim", burst=True)
    worker.run()

    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.recoveries) == ("completed", 0)
    assert replies[0].id == eid  # the lost claim took it
    first_attempts = StepExecution.objects.filter(execution_id=eid, step_name="first")
    assert [row.status for row in first_attempts] == ["completed"]  # never ran twice


class Checkpoint:
    """A node of a kind the engine does not know: it looks at the context it routes on
    and lets the execution go on to the node after it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def compile(self, graph, prefix, follow):
        return graph.add(prefix + self.name, self, follow)

    def enter(self, graph, node_id, context):
        ctx = context()
        SEEN.append({"routed_on": ctx, "tzinfo": ctx["when"].tzinfo})
        return graph.resolve(graph.follows[node_id], context)


@pytest.fixture
def with_checkpoint():
    from django_durable import registry
    from django_durable.dsl import Workflow

    definition = Workflow(
        "regress.checkpoint", [step(makes_values), Checkpoint("check"), step(reads_values)]
    )
    registry.register(definition)
    yield definition
    registry.unregister(definition.name)


@pytest.mark.django_db
def test_a_node_that_routes_sees_the_stored_context_and_needs_no_engine_change(with_checkpoint):
    eid = starting.start(with_checkpoint, {})
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "completed"
    routed, ran = SEEN
    assert routed["routed_on"]["pair"] == [1, 2]
    assert routed["tzinfo"] == timezone(timedelta(hours=1))
    assert ran["pair"] == [1, 2]
    steps = StepExecution.objects.filter(execution_id=eid).order_by("started_at")
    assert [row.step_name for row in steps] == ["makes_values", "reads_values"]


def counts(ctx):
    return {**ctx, "rounds": ctx.get("rounds", 0) + 1}


class Again:
    """A node that jumps back to `counts` until it ran three times (a decision's loop)."""

    name = "again"

    def compile(self, graph, prefix, follow):
        return graph.add(prefix + self.name, self, follow)

    def enter(self, graph, node_id, context):
        ctx = context()
        if ctx["rounds"] < 3:
            return Goto("counts", {**ctx, "jumped": ctx.get("jumped", 0) + 1})
        return graph.resolve(graph.follows[node_id], context)


@pytest.fixture
def looping():
    from django_durable import registry
    from django_durable.dsl import Workflow

    definition = Workflow("regress.looping", [step(counts), Again(), step(noop_step)])
    registry.register(definition)
    yield definition
    registry.unregister(definition.name)


def noop_step(ctx):
    return ctx


@pytest.mark.django_db
def test_a_goto_runs_the_named_step_next_on_the_context_it_carries(looping):
    eid = starting.start(looping, {})
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.context) == ("completed", {"rounds": 3, "jumped": 2})
    steps = StepExecution.objects.filter(execution_id=eid).order_by("started_at")
    assert [row.step_name for row in steps] == ["counts", "counts", "counts", "noop_step"]
