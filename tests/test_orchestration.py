"""Child workflows: call_workflow, start_workflow, list_children and cascading cancels."""

from datetime import timedelta

import pytest

import django_durable as durable
from django_durable import call_workflow, claims, clock, engine, recording, timers, workflow
from django_durable.events import send_event
from django_durable.models import StepExecution, Wait, WorkflowExecution
from django_durable.orchestration import list_children
from django_durable.testing import advance_clock, run_until_idle
from tests.calls import calls
from tests.races import cancel_while_it_returns, gated, new_gate
from tests.worker_support import IS_POSTGRES
from tests.workflows_app import child_workflows as wf

pytestmark = pytest.mark.django_db


def load(execution_id):
    return WorkflowExecution.objects.get(id=execution_id)


def test_call_workflow_returns_the_childs_final_context():
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x"})
    run_until_idle()
    parent = load(eid)
    assert parent.status == "completed", parent.error
    assert parent.context["charge_id"] == "ch_7"
    children = list(list_children(eid))
    assert [c.workflow_name for c in children] == [
        "tests.child.payment",
        "tests.child.notification",
    ]
    assert all(c.status == "completed" and c.parent_id == eid for c in children)
    assert parent.context["notification"] == str(children[1].id)
    assert calls["charge"] == 1 and calls["notify"] == 1


def test_the_parent_waits_parked_and_the_childs_ending_wakes_it():
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x"})
    assert run_until_idle(max_steps=1) == 1
    parent = load(eid)
    assert (parent.status, parent.ready) == ("waiting", False)
    [child] = list_children(eid)
    assert run_until_idle(max_steps=1) == 1  # the child's one step
    assert load(child.id).status == "completed"
    assert load(eid).ready is True  # woken as the child was recorded
    run_until_idle()
    assert load(eid).status == "completed"


def test_the_step_row_that_started_a_child_links_to_it():
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x"})
    run_until_idle()
    linked = StepExecution.objects.filter(execution_id=eid).exclude(child=None)
    assert {row.child.workflow_name for row in linked} <= {
        "tests.child.payment",
        "tests.child.notification",
    }
    assert linked.exists()


def test_a_rerun_step_never_starts_a_second_child():
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x"})
    run_until_idle()
    assert calls["pay_and_notify"] == 2  # ran, parked, ran again to take the result
    assert WorkflowExecution.objects.filter(parent_id=eid).count() == 2
    assert calls["charge"] == 1


def test_a_failed_child_raises_child_workflow_failed_in_the_parent():
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x", "declined": True})
    run_until_idle()
    parent = load(eid)
    assert parent.status == "failed"
    assert parent.error["type"] == "ChildWorkflowFailed"
    assert "card declined" in parent.error["message"]


def test_a_step_may_catch_the_failure_and_branch_on_it():
    eid = durable.start(wf.handled, {"order_id": 7})
    run_until_idle()
    parent = load(eid)
    assert parent.status == "completed", parent.error
    assert parent.context["payment"] == "failed"
    assert parent.context["refund"] is False
    assert load(parent.context["child"]).status == "failed"


def test_a_timeout_cancels_the_child_and_reports_timed_out():
    eid = durable.start(wf.timing_out, {})
    run_until_idle()
    [child] = list_children(eid)
    assert load(eid).status == "waiting"
    advance_clock(301)
    run_until_idle()
    parent = load(eid)
    assert parent.status == "completed", parent.error
    assert parent.context["outcome"] == "timed_out"
    child = load(child.id)
    assert (child.status, child.cancel_reason) == ("cancelled", "parent timed out")


def test_a_child_that_finishes_in_time_is_returned():
    eid = durable.start(wf.timing_out, {})
    run_until_idle()
    [child] = list_children(eid)
    send_event(child.id, "go", "now")
    run_until_idle()
    assert load(eid).context["outcome"] == "now"


def test_the_same_workflow_twice_in_one_step_needs_distinct_refs():
    eid = durable.start(wf.twice, {})
    run_until_idle()
    parent = load(eid)
    assert parent.status == "failed"
    assert "ref=" in parent.error["message"]
    eid = durable.start(wf.twice_with_refs, {})
    run_until_idle()
    assert load(eid).context["charges"] == ["ch_1", "ch_2"]


def test_cancelling_a_parent_cancels_its_descendants_three_levels_deep():
    eid = durable.start(wf.a_level, {})
    run_until_idle()
    [b] = list_children(eid)
    [c] = list_children(b.id)
    assert load(c.id).status == "waiting"
    durable.cancel(eid, "no longer needed")
    assert load(eid).cancel_reason == "no longer needed"
    for child in (b, c):
        execution = load(child.id)
        assert (execution.status, execution.cancel_reason) == (
            "cancelled",
            "parent cancelled: no longer needed",
        )
    assert not Wait.objects.filter(execution_id__in=[eid, b.id, c.id], status="waiting").exists()


def test_nesting_returns_through_every_level():
    eid = durable.start(wf.a_level, {})
    run_until_idle()
    [b] = list_children(eid)
    [c] = list_children(b.id)
    send_event(c.id, "finish", "done")
    run_until_idle()
    assert load(eid).context["a"] == "done"


def test_finished_children_are_left_alone_by_a_cancel():
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x"})
    run_until_idle(max_steps=2)  # the parent parks, the payment child completes
    [payment] = list_children(eid, status="completed")
    durable.cancel(eid, "stop")
    assert load(payment.id).status == "completed"


def test_children_of_foreach_items_are_found_and_returned():
    eid = durable.start(wf.per_item, {"ids": [1, 2, 3]})
    run_until_idle()
    parent = load(eid)
    assert parent.status == "completed", parent.error
    assert parent.context["__results__"]["pay"] == [["ok", "ch_1"], ["ok", "ch_2"], ["ok", "ch_3"]]
    assert list_children(eid).count() == 3


def test_a_child_called_in_a_parallel_branch_returns_to_that_branch():
    eid = durable.start(wf.in_branch, {"order_id": 9, "email": "a@x"})
    run_until_idle()
    parent = load(eid)
    assert parent.status == "completed", parent.error
    assert parent.context["__results__"]["pay_in_branch"] == ["ok", {"paid": "ch_9"}]
    [child] = list_children(eid)
    assert WorkflowExecution.objects.get(id=child.parent_id).kind == "branch"


def test_cancelling_reaches_children_of_branches():
    eid = durable.start(wf.slow_in_branch, {"email": "a@x"})
    run_until_idle()
    [child] = list_children(eid)
    assert load(child.id).status == "waiting"
    durable.cancel(eid, "stop")
    child = load(child.id)
    assert (child.status, child.cancel_reason) == ("cancelled", "parent cancelled: stop")


def test_list_children_filters_by_status():
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x", "declined": True})
    run_until_idle()
    assert [c.status for c in list_children(eid, status="failed")] == ["failed"]
    assert list(list_children(eid, status="completed")) == []


# -- crashes and races ---------------------------------------------------------------------


class Killed(BaseException):
    """The worker process dying, as far as the engine can tell."""


def test_a_crash_between_starting_the_child_and_parking_starts_no_second_child(monkeypatch):
    eid = durable.start(wf.order, {"order_id": 7, "email": "a@x"})
    real_park = recording._park

    def die_once(*args, **kwargs):
        monkeypatch.setattr(recording, "_park", real_park)
        raise Killed

    monkeypatch.setattr(recording, "_park", die_once)
    [claimed] = claims.claim("doomed", None, 1)
    with pytest.raises(Killed):
        engine.run_claimed(claimed, worker="doomed", queues=None)
    assert load(eid).status == "running"  # never parked: the worker died first
    assert list_children(eid).count() == 1  # but its child was started and kept
    WorkflowExecution.objects.filter(id=eid).update(locked_until=clock.now() - timedelta(seconds=1))
    assert timers.reclaim_expired_leases() == 1
    run_until_idle()
    parent = load(eid)
    assert parent.status == "completed", parent.error
    assert (
        WorkflowExecution.objects.filter(parent_id=eid, workflow_name="tests.child.payment").count()
        == 1
    )
    assert calls["charge"] == 1


def test_cancel_with_compensate_compensates_the_children_too():
    eid = durable.start(wf.saga_parent, {})
    run_until_idle()
    [child] = list_children(eid)
    assert load(child.id).status == "waiting"
    durable.cancel(eid, "undo all", compensate=True)
    run_until_idle()
    assert load(eid).status == "compensated"
    child = load(child.id)
    assert (child.status, child.cancel_reason) == ("compensated", "parent cancelled: undo all")
    assert calls["undo_reserve"] == 1 and calls["undo_book"] == 1


def calls_gated(ctx):
    return {**ctx, "inner": call_workflow(gated_level, {"gate": ctx["gate"]})["result"]}


def calls_middle(ctx):
    return {**ctx, "outer": call_workflow(middle_level, {"gate": ctx["gate"]})["inner"]}


gated_level = workflow("tests.child.gated", [gated])
middle_level = workflow("tests.child.middle", [calls_gated])
top_level = workflow("tests.child.top", [calls_middle])


def race_cancel_against_a_finishing_grandchild(round: int) -> str:
    gate = new_gate(f"orchestration-{round}")
    root = durable.start(top_level, {"gate": f"orchestration-{round}"})
    run_until_idle(max_steps=2)  # the root and the middle park on their children
    [middle] = list_children(root)
    [grandchild] = list_children(middle.id)
    [claimed] = claims.claim("w1", None, 1)
    assert claimed.id == grandchild.id
    cancel_while_it_returns(root, claimed, gate, round)
    assert (load(root).status, load(middle.id).status) == ("cancelled", "cancelled")
    finished = load(grandchild.id)
    completed = StepExecution.objects.filter(execution_id=grandchild.id, status="completed")
    if finished.status == "completed":
        assert finished.context["result"] == "kept" and completed.count() == 1
    else:
        assert finished.cancel_reason == "parent cancelled: race"
        assert not completed.exists()
    assert finished.locked_by is None
    return finished.status


@pytest.mark.skipif(not IS_POSTGRES, reason="row locks are PostgreSQL's (SQLite has one writer)")
@pytest.mark.django_db(transaction=True)
def test_cancelling_three_levels_while_the_grandchild_finishes_neither_deadlocks_nor_loses():
    outcomes = [race_cancel_against_a_finishing_grandchild(round) for round in range(8)]
    assert "cancelled" in outcomes
