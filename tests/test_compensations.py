"""Sagas: compensations of completed steps, newest first, as attempts of their own."""

import pytest

from django_durable import executions, starting
from django_durable.events import send_event
from django_durable.models import StepExecution, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from tests.calls import calls
from tests.workflows_app import control_workflows as wf

pytestmark = pytest.mark.django_db


def settle(eid, rounds=5):
    """Run until idle, passing retry delays, until nothing is left to do."""
    for _ in range(rounds):
        run_until_idle()
        advance_clock(1)
    run_until_idle()
    return WorkflowExecution.objects.get(id=eid)


def compensation_rows(execution):
    return list(
        StepExecution.objects.filter(execution=execution, is_compensation=True)
        .order_by("started_at", "attempt")
        .values_list("step_name", "compensation_for", "status")
    )


def test_a_failure_runs_the_compensations_of_completed_steps_newest_first():
    eid = starting.start(wf.trip, {"confirm_fails": True})
    execution = settle(eid)
    assert execution.status == "compensated"
    assert execution.error["message"] == "confirmation failed"
    assert execution.compensation_results == [
        {"step": "charge_card", "compensation": "refund_card", "result": {"status": "completed"}},
        {"step": "book_hotel", "compensation": "cancel_hotel", "result": {"status": "completed"}},
        {"step": "book_flight", "compensation": "cancel_flight", "result": {"status": "completed"}},
    ]
    assert compensation_rows(execution) == [
        ("refund_card", "charge_card", "completed"),
        ("cancel_hotel", "book_hotel", "completed"),
        ("cancel_flight", "book_flight", "completed"),
    ]
    assert calls["undo:card"] == calls["undo:hotel"] == calls["undo:flight"] == 1


def test_only_completed_steps_are_compensated():
    eid = starting.start(wf.trip, {"card_declined": True})
    execution = settle(eid)
    assert execution.status == "compensated"
    assert [r["step"] for r in execution.compensation_results] == ["book_hotel", "book_flight"]
    assert calls["undo:card"] == 0
    assert calls["charge_card"] == 2  # its own retries first


def test_a_failing_compensation_does_not_stop_the_others():
    eid = starting.start(wf.trip, {"confirm_fails": True, "hotel_undo_fails": True})
    execution = settle(eid)
    assert execution.status == "compensation_failed"
    hotel = execution.compensation_results[1]
    assert hotel["result"] == {
        "status": "failed",
        "error": {"type": "RuntimeError", "message": "hotel API down"},
    }
    assert execution.compensation_results[2]["result"] == {"status": "completed"}
    assert calls["undo:flight"] == 1


def test_a_failure_with_nothing_to_undo_just_fails():
    eid = starting.start(wf.documents, {"doc": "x"})
    execution = WorkflowExecution.objects.get(id=eid)
    execution = settle(eid)
    assert execution.status == "completed"
    eid = starting.start(wf.strict, {"kind": "zzz"})
    assert settle(eid).status == "failed"


def test_cancel_with_compensate_undoes_what_completed():
    eid = starting.start(wf.trip, {"wait_before_confirm": True})
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"
    cancelled = executions.cancel(eid, "customer changed plans", compensate=True)
    assert cancelled.status == "compensating"
    execution = settle(eid)
    assert execution.status == "compensated"
    assert execution.cancel_reason == "customer changed plans"
    assert len(execution.compensation_results) == 3
    assert execution.waits.get().status == "cancelled"


def test_cancel_without_compensate_undoes_nothing():
    eid = starting.start(wf.trip, {"wait_before_confirm": True})
    run_until_idle()
    executions.cancel(eid, "stop")
    execution = settle(eid)
    assert execution.status == "cancelled"
    assert execution.compensation_results == []
    assert calls["undo:flight"] == 0


def test_a_workflow_timeout_runs_the_compensations():
    eid = starting.start(wf.trip, {"wait_before_confirm": True})
    run_until_idle()
    WorkflowExecution.objects.filter(id=eid).update(
        deadline=WorkflowExecution.objects.get(id=eid).created_at
    )
    execution = settle(eid)
    assert execution.status == "compensated"
    assert execution.error["type"] == "WorkflowTimeout"


def test_steps_in_branches_and_items_are_compensated_after_a_parallel_failure():
    eid = starting.start(wf.order_saga, {"items": ["mug", "tea", "pot"], "out_of_stock": "pot"})
    execution = settle(eid)
    assert execution.status == "compensated", execution.error
    undone = [(r["step"], r["compensation"]) for r in execution.compensation_results]
    assert ("prepare/notify_warehouse", "recall_notice") in undone
    assert undone.count(("prepare/reserve/reserve_stock", "release_stock")) == 2
    assert undone[-1] == ("book_flight", "cancel_flight")
    assert calls["release:mug"] == calls["release:tea"] == 1
    assert calls["release:pot"] == 0


def test_compensations_are_attempts_that_send_event_cannot_wake():
    eid = starting.start(wf.trip, {"confirm_fails": True})
    execution = settle(eid)
    with pytest.raises(Exception, match="cannot receive events"):
        send_event(eid, "confirm")
    assert execution.status == "compensated"


def test_include_steps_lists_compensations_after_the_steps_they_undo():
    eid = starting.start(wf.trip, {"confirm_fails": True})
    settle(eid)
    steps = executions.get_execution(eid, include_steps=True).steps
    undoing = [(s.step_name, s.compensation_for) for s in steps if s.is_compensation]
    assert undoing == [
        ("refund_card", "charge_card"),
        ("cancel_hotel", "book_hotel"),
        ("cancel_flight", "book_flight"),
    ]
    assert not any(s.is_compensation for s in steps[:4])


def test_a_compensation_is_retried_by_its_own_policy():
    eid = starting.start(wf.trip, {"confirm_fails": True, "refund_flaky": True})
    execution = settle(eid)
    assert execution.status == "compensated"
    assert calls["undo:card"] == 2
    assert compensation_rows(execution)[:2] == [
        ("refund_card", "charge_card", "failed"),
        ("refund_card", "charge_card", "completed"),
    ]
