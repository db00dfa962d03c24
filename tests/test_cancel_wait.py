"""`list_pending_events` and `cancel_wait`: open event waits listed, one wait withdrawn,
the step sees WaitCancelled(reason) and may go on."""

from datetime import timedelta

import pytest

import django_durable as durable
from django_durable import WaitCancelled, parallel, workflow
from django_durable.inputs import wait_for_approval
from django_durable.models import InputStatus, PendingInput, Wait, WaitStatus
from django_durable.testing import run_until_idle
from django_durable.waits import cancel_wait, list_pending_events, wait_for_any, wait_for_event

pytestmark = pytest.mark.django_db


def wait_paid(ctx):
    try:
        return {**ctx, "paid": wait_for_event("paid", timeout=timedelta(days=3))}
    except WaitCancelled as cancelled:
        return {**ctx, "paid": None, "why": cancelled.reason}


def wait_any(ctx):
    return {**ctx, "got": wait_for_any(["shipped", "lost"])}


def approve(ctx):
    return {**ctx, "ok": wait_for_approval("boss", prompt="Ship?")}


def left(ctx):
    return {**ctx, "left": wait_for_event("left_done")}


def right(ctx):
    return {**ctx, "right": wait_for_event("right_done")}


paying = workflow("cancel_wait.paying", [wait_paid])
anything = workflow("cancel_wait.anything", [wait_any])
approving = workflow("cancel_wait.approving", [approve])
both = workflow("cancel_wait.both", [parallel(left, right, name="both")])


def test_open_event_waits_are_listed_with_their_execution():
    paid = paying.start({})
    other = anything.start({})
    approving.start({})  # an input, not an event wait
    run_until_idle()
    listed = list_pending_events()
    assert [(wait.execution_id, wait.event_names) for wait in listed] == [
        (paid, ["paid"]),
        (other, ["shipped", "lost"]),
    ]
    assert (
        listed[0].wake_at is not None and listed[0].execution.workflow_name == "cancel_wait.paying"
    )
    assert [wait.execution_id for wait in list_pending_events("lost")] == [other]
    assert [wait.execution_id for wait in list_pending_events(workflow=paying)] == [paid]
    assert list_pending_events("nobody") == []


def test_a_cancelled_event_wait_raises_in_the_step_which_may_catch_it():
    eid = paying.start({})
    run_until_idle()
    cancel_wait(eid, "paid", reason="order withdrawn")
    assert Wait.objects.get(execution_id=eid).status == WaitStatus.WITHDRAWN
    run_until_idle()
    execution = durable.get_execution(eid)
    assert execution.status == "completed"
    assert execution.context == {"paid": None, "why": "order withdrawn"}
    assert list_pending_events() == []


def test_an_uncaught_wait_cancelled_fails_the_step_without_retrying():
    eid = anything.start({})
    run_until_idle()
    cancel_wait(eid, "lost")  # any of the wait's names reaches it
    run_until_idle()
    execution = durable.get_execution(eid, include_steps=True)
    assert execution.status == "failed"
    assert execution.error["type"] == "WaitCancelled"
    assert execution.error["message"] == "The wait was cancelled: cancelled"


def test_a_pending_input_is_withdrawn_by_its_name():
    eid = approving.start({})
    run_until_idle()
    cancel_wait(eid, "boss", reason="no longer needed")
    assert PendingInput.objects.get(execution_id=eid).status == InputStatus.WITHDRAWN
    assert not durable.list_pending_inputs().exists()
    run_until_idle()
    execution = durable.get_execution(eid)
    assert (execution.status, execution.error["message"]) == (
        "failed",
        "The wait was cancelled: no longer needed",
    )


def test_a_wait_in_a_parallel_branch_is_reached_through_the_workflow():
    eid = both.start({})
    run_until_idle()
    cancel_wait(eid, "right_done")
    durable.send_event(eid, "left_done", 1)
    run_until_idle()
    execution = durable.get_execution(eid)
    assert execution.status == "failed"
    assert "WaitCancelled" in execution.error["message"]


def test_nothing_to_cancel_is_an_error_and_changes_nothing():
    eid = paying.start({})
    run_until_idle()
    with pytest.raises(durable.NoOpenWait):
        cancel_wait(eid, "shipped")
    assert Wait.objects.get(execution_id=eid).status == WaitStatus.WAITING
    durable.cancel(eid)
    with pytest.raises(durable.ExecutionNotActive):
        cancel_wait(eid, "paid")
    with pytest.raises(durable.ExecutionNotFound):
        cancel_wait("00000000-0000-0000-0000-000000000000", "paid")
