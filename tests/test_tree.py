"""Execution trees: rows under a parent, waits routed through the root, the lock order.

Parallel branches and foreach items (a later release) are rows of their own with
`parent` set and the workflow's `root`; events and inputs addressed to the workflow
must reach waits in them (SPEC §5a). Child workflows are their own root. Cancelling a
tree locks a parent before its children, and so does a child that finishes, so the two
never deadlock.
"""

import threading
from contextlib import contextmanager

import pytest
from django.db import connection, connections, transaction

import django_durable as durable
from django_durable import claims, engine, starting, workflow
from django_durable.models import (
    ExecutionKind,
    PendingInput,
    StepExecution,
    Wait,
    WorkflowExecution,
)
from django_durable.testing import run_until_idle
from django_durable.waits import wait_for_approval, wait_for_event
from tests.races import cancel_while_it_returns, gated, new_gate
from tests.worker_support import IS_POSTGRES, wait_for


def waits_for_paid(ctx):
    return {**ctx, "paid": wait_for_event("paid")}


def asks_ok(ctx):
    return {**ctx, "ok": wait_for_approval("ok")}


def waits_forever(ctx):
    return {**ctx, "never": wait_for_event("never")}


def done(ctx):
    return {**ctx, "done": True}


parked_root = workflow("tree.parked_root", [waits_forever])
branch_waits = workflow("tree.branch_waits", [waits_for_paid, done])
item_asks = workflow("tree.item_asks", [asks_ok, done])
child_waits = workflow("tree.child_waits", [waits_for_paid])
quick_child = workflow("tree.quick_child", [done])


def under(root_id, definition, kind, item_index=None):
    root = WorkflowExecution.objects.get(id=root_id)
    return starting.create_execution(definition, {}, parent=root, kind=kind, item_index=item_index)


def load(execution_id) -> WorkflowExecution:
    return WorkflowExecution.objects.get(id=execution_id)


@pytest.mark.django_db
def test_rows_under_a_workflow_are_addressed_through_its_root():
    root = parked_root.start({})
    branch = under(root, branch_waits, ExecutionKind.BRANCH)
    item = under(root, item_asks, ExecutionKind.ITEM, item_index=3)
    child = under(root, child_waits, ExecutionKind.WORKFLOW)
    assert load(root).root_id == root
    assert (load(branch).root_id, load(branch).parent_id, load(branch).kind) == (
        root,
        root,
        "branch",
    )
    assert (load(item).root_id, load(item).item_index) == (root, 3)
    assert (load(child).root_id, load(child).parent_id) == (child, root)


@pytest.mark.django_db
def test_an_event_sent_to_the_workflow_reaches_a_wait_in_its_branch():
    root = parked_root.start({})
    branch = under(root, branch_waits, ExecutionKind.BRANCH)
    child = under(root, child_waits, ExecutionKind.WORKFLOW)
    run_until_idle()
    assert {load(eid).status for eid in (root, branch, child)} == {"waiting"}
    assert Wait.objects.get(execution_id=branch).root_id == root

    durable.send_event(root, "paid", {"amount": 5})
    run_until_idle()

    assert load(branch).status == "completed"
    assert load(branch).context == {"paid": {"amount": 5}, "done": True}
    assert load(root).status == "waiting"  # its own wait wants another event
    assert load(child).status == "waiting"  # a child workflow is addressed on its own


@pytest.mark.django_db
def test_an_event_sent_before_a_branch_waits_is_kept_for_it():
    root = parked_root.start({})
    durable.send_event(root, "paid", 7)
    branch = under(root, branch_waits, ExecutionKind.BRANCH)
    run_until_idle()
    assert (load(branch).status, load(branch).context["paid"]) == ("completed", 7)


@pytest.mark.django_db
def test_an_event_sent_to_a_branch_goes_to_its_workflow():
    root = parked_root.start({})
    first = under(root, branch_waits, ExecutionKind.BRANCH)
    second = under(root, branch_waits, ExecutionKind.BRANCH)
    run_until_idle()
    durable.send_event(second, "paid", 1)  # addressed to the tree: the oldest wait takes it
    durable.send_event(root, "paid", 2)
    run_until_idle()
    assert (load(first).context["paid"], load(second).context["paid"]) == (1, 2)


@pytest.mark.django_db
def test_input_for_the_workflow_answers_the_question_of_its_item():
    root = parked_root.start({})
    item = under(root, item_asks, ExecutionKind.ITEM, item_index=0)
    run_until_idle()
    assert PendingInput.objects.get(execution_id=item).root_id == root

    assert durable.provide_input(root, "ok", True, responded_by="ada") == "approved"
    run_until_idle()
    assert (load(item).status, load(item).context["ok"]) == ("completed", "approved")
    with pytest.raises(durable.InputNotPending):
        durable.provide_input(root, "ok", True)


@pytest.mark.django_db
def test_cancelling_the_workflow_ends_its_branches_and_withdraws_their_waits():
    root = parked_root.start({})
    branch = under(root, branch_waits, ExecutionKind.BRANCH)
    item = under(root, item_asks, ExecutionKind.ITEM, item_index=0)
    run_until_idle()
    durable.cancel(root, reason="stop")
    for eid in (root, branch, item):
        execution = load(eid)
        assert (execution.status, execution.locked_by, execution.cancel_reason) == (
            "cancelled",
            None,
            "stop",
        )
    assert not Wait.objects.filter(root_id=root, status="waiting").exists()
    assert PendingInput.objects.get(execution_id=item).status == "cancelled"
    with pytest.raises(durable.ExecutionNotActive):
        durable.send_event(root, "paid", 1)


# -- lock order: parent before child -----------------------------------------------------


@pytest.mark.skipif(not IS_POSTGRES, reason="row locks are PostgreSQL's (SQLite has one writer)")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", [ExecutionKind.WORKFLOW, ExecutionKind.BRANCH])
def test_a_finishing_child_locks_its_parent_before_writing_itself(kind):
    """While another transaction holds the parent, the child's ending waits for it
    without having locked (or written) its own row: parent first, then child. A
    completing branch does it inside its ending's one statement."""
    root = parked_root.start({})
    run_until_idle()  # the root parks
    child = under(root, quick_child, kind)
    [claimed] = claims.claim("w1", None, 5)
    with run_while_locked_elsewhere(root, [claimed]):
        wait_for(lambda: waiting_on_a_row_lock() > 0, "the child's ending to wait for its parent")
        with transaction.atomic():  # the child's own row is not locked meanwhile
            still_free = WorkflowExecution.objects.select_for_update(nowait=True).get(id=child)
            assert still_free.status == "running"
    assert load(child).status == "completed"


@contextmanager
def run_while_locked_elsewhere(execution_id, claimed):
    """Hold an execution's row lock in another transaction, run the claimed executions
    in threads of their own meanwhile, and let go of the lock when the block ends (the
    threads are joined after that)."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            WorkflowExecution.objects.select_for_update().get(id=execution_id)
            held.set()
            release.wait(30)
        connections.close_all()

    def run(execution):
        engine.run_claimed(execution, worker="w1", queues=None)
        connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    runners = [threading.Thread(target=run, args=(execution,)) for execution in claimed]
    for runner in runners:
        runner.start()
    try:
        yield
    finally:
        release.set()
        for thread in [holder, *runners]:
            thread.join(10)


def waiting_on_a_row_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


gated_child = workflow("tree.gated_child", [gated])


def race_cancel_against_a_finishing_child(round: int) -> str:
    """Cancel a parked root while its child's step returns, from two connections; the
    child's status afterwards."""
    root = parked_root.start({})
    run_until_idle()
    gate = new_gate(f"tree-{round}")
    parent = WorkflowExecution.objects.get(id=root)
    child = starting.create_execution(gated_child, {"gate": f"tree-{round}"}, parent=parent)
    [claimed] = claims.claim("w1", None, 1)
    cancel_while_it_returns(root, claimed, gate, round)
    assert load(root).status == "cancelled"
    finished = load(child)
    completed_rows = StepExecution.objects.filter(execution_id=child, status="completed")
    if finished.status == "completed":
        assert finished.context["result"] == "kept"  # the child's result survived
        assert completed_rows.count() == 1
    else:
        assert finished.status == "cancelled"
        assert not completed_rows.exists()  # discarded as a whole, never half-written
    assert finished.locked_by is None
    return finished.status


@pytest.mark.skipif(not IS_POSTGRES, reason="row locks are PostgreSQL's (SQLite has one writer)")
@pytest.mark.django_db(transaction=True)
def test_cancelling_a_tree_while_a_child_finishes_neither_deadlocks_nor_loses_the_result():
    outcomes = [race_cancel_against_a_finishing_child(round) for round in range(12)]
    assert "cancelled" in outcomes  # the cancel wins the rounds where it goes first


deadline_root = workflow("tree.deadline_root", [waits_forever], timeout=60)


@pytest.mark.django_db
def test_a_workflow_that_fails_ends_its_branches_but_not_its_child_workflows():
    from datetime import timedelta

    from django_durable.testing import advance_clock

    root = deadline_root.start({})
    branch = under(root, branch_waits, ExecutionKind.BRANCH)
    item = under(root, item_asks, ExecutionKind.ITEM, item_index=0)
    child = under(root, child_waits, ExecutionKind.WORKFLOW)
    run_until_idle()
    advance_clock(timedelta(minutes=2))
    run_until_idle()
    assert load(root).status == "failed"
    for member in (branch, item):
        execution = load(member)
        assert (execution.status, execution.cancel_reason) == (
            "cancelled",
            "its workflow ended (failed)",
        )
    assert not Wait.objects.filter(root_id=root, status="waiting").exists()
    assert PendingInput.objects.get(execution_id=item).status == "cancelled"
    assert load(child).status == "waiting"  # a child workflow lives on its own


@pytest.mark.skipif(not IS_POSTGRES, reason="row locks are PostgreSQL's (SQLite has one writer)")
@pytest.mark.django_db(transaction=True)
def test_branches_ending_at_once_wake_their_parent_once_the_last_one_is_recorded():
    """Both branches of a block end while their parent is locked elsewhere, so each
    waits for it; the one that gets it second must still see the first as ended
    (regression: a check made on the snapshot taken before the wait missed it, and
    nobody woke the parent)."""
    from tests.workflows_app.control_workflows import dashboard

    root = dashboard.start({"user_id": 1})
    assert run_until_idle(max_steps=1) == 1  # the block forks
    branches = claims.claim("w1", None, 5)
    assert len(branches) == 2
    with run_while_locked_elsewhere(root, branches):
        wait_for(lambda: waiting_on_a_row_lock() >= 2, "both branches to wait for the parent")
    parent = load(root)
    assert [load(branch.id).status for branch in branches] == ["completed", "completed"]
    assert (parent.status, parent.ready) == ("waiting", True)
