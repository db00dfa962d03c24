"""Signals: each sent once its change is committed, with its documented payload; a
receiver that raises breaks nothing."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import transaction

from django_durable import cancel, resume, schedules, send_event, signals
from django_durable.inputs import provide_input
from django_durable.models import PendingInput, Schedule, StepExecution, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from tests.worker_support import wait_for
from tests.workflows_app import signal_workflows

pytestmark = pytest.mark.django_db

ALL = [
    name
    for name in dir(signals)
    if isinstance(getattr(signals, name), signals.Signal) and not name.startswith("_")
]


@contextmanager
def heard() -> Iterator[list[tuple[str, type, dict]]]:
    """Every durable signal sent while the block runs, as (name, sender, payload)."""
    calls = []
    receivers = {}
    for name in ALL:

        def receiver(sender, signal, name=name, **payload):
            calls.append((name, sender, payload))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    try:
        yield calls
    finally:
        for name, receiver in receivers.items():
            getattr(signals, name).disconnect(receiver)


def names(calls) -> list[str]:
    return [name for name, _, _ in calls]


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run on-commit callbacks as if the test's transaction committed."""

    @contextmanager
    def run():
        with django_capture_on_commit_callbacks(execute=True):
            yield

    return run


def test_the_signals_are_the_documented_set():
    assert sorted(ALL) == sorted(
        [
            "workflow_started",
            "workflow_resumed",
            "workflow_waiting",
            "workflow_completed",
            "workflow_failed",
            "workflow_cancelled",
            "step_started",
            "step_completed",
            "step_failed",
            "input_requested",
            "input_provided",
            "schedule_triggered",
        ]
    )


def test_a_completed_workflow_sends_started_step_and_completed(committed):
    with heard() as calls, committed():
        eid = signal_workflows.plain.start({})
        run_until_idle()
    assert names(calls) == [
        "workflow_started",
        "step_started",
        "step_completed",
        "workflow_completed",
    ]
    _, sender, payload = calls[2]
    assert sender is StepExecution
    assert payload["step"].step_name == "first" and payload["step"].status == "completed"
    assert payload["execution"].id == eid
    assert calls[3][2]["execution"].status == "completed"


def test_an_approval_sends_waiting_requested_provided_resumed(committed):
    with heard() as calls, committed():
        eid = signal_workflows.approval.start({})
        run_until_idle()
        provide_input(eid, "ok", "approved", responded_by="ana")
        run_until_idle()
    assert names(calls) == [
        "workflow_started",
        "step_started",
        "step_completed",
        "step_started",
        "input_requested",
        "workflow_waiting",
        "input_provided",
        "workflow_resumed",
        "step_started",
        "step_completed",
        "workflow_completed",
    ]
    requested = calls[4][2]["pending_input"]
    assert calls[4][1] is PendingInput and requested.prompt == "Ship it?"
    provided = calls[6][2]
    assert provided["value"] == "approved" and provided["responded_by"] == "ana"
    assert provided["pending_input"].status == "completed"
    assert calls[7][2]["reason"] == "wait"


def test_failures_retries_and_resume(committed):
    with heard() as calls, committed():
        eid = signal_workflows.retried.start({})
        run_until_idle()
        advance_clock(timedelta(seconds=2))
        run_until_idle()
    assert names(calls) == [
        "workflow_started",
        "step_started",
        "step_failed",
        "step_started",
        "step_failed",
        "workflow_failed",
    ]
    assert calls[2][2]["error"]["message"] == "always"
    assert calls[-1][2]["error"]["type"] == "RuntimeError"
    with heard() as calls, committed():
        resume(eid)
    assert names(calls) == ["workflow_resumed"]
    assert calls[0][2]["reason"] == "resume"


def test_cancel_sends_cancelled_with_the_reason_also_after_compensating(committed):
    with heard() as calls, committed():
        eid = signal_workflows.listening.start({})
        run_until_idle()
        cancel(eid, "no longer needed")
    assert names(calls)[-2:] == ["workflow_waiting", "workflow_cancelled"]
    assert calls[-1][2]["reason"] == "no longer needed"

    with heard() as calls, committed():
        eid = signal_workflows.doomed.start({})
        run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "compensated"
    assert names(calls)[-1] == "workflow_failed"
    assert calls[-1][2]["execution"].status == "compensated"


def test_a_schedule_run_sends_schedule_triggered(committed):
    schedules.create_schedule("signals-nightly", "signals.plain", "0 3 * * *")
    with heard() as calls, committed():
        eid = schedules.trigger_schedule("signals-nightly")
    assert names(calls) == ["workflow_started", "schedule_triggered"]
    assert calls[1][1] is Schedule
    assert calls[1][2]["schedule"].name == "signals-nightly"
    assert calls[1][2]["execution_id"] == eid


@pytest.mark.django_db(transaction=True)
def test_nothing_is_sent_before_the_commit_nor_after_a_rollback():
    with heard() as calls:
        with transaction.atomic():
            signal_workflows.plain.start({})
            assert calls == []  # not committed yet
        assert names(calls) == ["workflow_started"]
        with pytest.raises(RuntimeError), transaction.atomic():
            signal_workflows.plain.start({})
            raise RuntimeError("roll back")
        assert names(calls) == ["workflow_started"]


def test_a_receiver_that_raises_breaks_neither_the_step_nor_the_workflow(committed, caplog):
    def broken(sender, **payload):
        raise ValueError("receiver bug")

    for signal in (signals.step_completed, signals.workflow_waiting, signals.workflow_started):
        signal.connect(broken)
    try:
        with committed():
            eid = signal_workflows.listening.start({})
            run_until_idle()
            send_event(eid, "go", {"n": 1})
            run_until_idle()
    finally:
        for signal in (signals.step_completed, signals.workflow_waiting, signals.workflow_started):
            signal.disconnect(broken)
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed" and execution.context["heard"] == {"n": 1}
    assert "receiver bug" in caplog.text


def test_branches_and_items_send_step_signals_but_no_workflow_signals(committed):
    from tests.workflows_app.control_workflows import dashboard

    with heard() as calls, committed():
        dashboard.start({"user_id": 1})
        run_until_idle()
    workflow_calls = [name for name in names(calls) if name.startswith("workflow_")]
    assert workflow_calls == [
        "workflow_started",
        "workflow_waiting",
        "workflow_resumed",
        "workflow_completed",
    ]
    steps = [payload["step"] for name, _, payload in calls if name == "step_completed"]
    members = {step.execution_id for step in steps} - {calls[0][2]["execution"].id}
    assert len(members) == 2  # each branch's step was announced, from its own row


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_receivers_raise_goes_on_working(workers, monkeypatch):
    monkeypatch.setenv("DURABLE_TEST_BROKEN_RECEIVERS", "1")
    worker = workers.start()
    ids = [signal_workflows.plain.start({}) for _ in range(3)]
    wait_for(
        lambda: WorkflowExecution.objects.filter(id__in=ids, status="completed").count() == 3,
        "three runs to complete despite the raising receivers",
        report=workers.report,
    )
    assert worker.alive
    assert "receiver bug in the worker" in worker.log()
