"""A database failover under load: every execution still completes, each step once.

One real `durable_worker` process runs ten threads over forty executions of five kinds
(tests/workflows_app/failover_workflows.py): chains of quick steps, a step sleeping in
its thread, a step parked on an event, a durable sleep, and a step that fails its first
call and is retried. While they run, the test terminates every other connection to the
test database three times, a few hundred milliseconds apart (what a failover or a
restart of PostgreSQL does to clients), and sends half the events in between.

It proves that the worker survives and reconnects; that every execution ends
`completed`, none `failed`; that each step has exactly one completed attempt per
execution, and the context holds each step's output once, in order; and that an
outage interrupts each execution at most once. That last point is what keeps a busy
worker from failing executions with `TooManyInterruptions`: when one outage kills all
ten threads' connections at once, each execution must be charged for that outage once
(DURABLE["MAX_RECOVERIES"] is 10), not once per thread or per reconnection attempt.
"""

import time
from collections import Counter, defaultdict

import pytest

import django_durable as durable
from django_durable.models import StepExecution, WorkflowExecution
from tests.worker_support import needs_postgres, terminate_other_connections, wait_for
from tests.workflows_app.failover_workflows import (
    awaiting,
    chain,
    dozing,
    flaky_once,
    napping,
    read_calls,
)

pytestmark = [needs_postgres, pytest.mark.django_db(transaction=True)]

KINDS = [  # (workflow, its steps, how many executions)
    (chain, ["prepare", "link_1", "link_2", "link_3", "finish"], 10),
    (napping, ["prepare", "nap", "finish"], 8),
    (awaiting, ["prepare", "await_go", "finish"], 8),
    (dozing, ["prepare", "doze", "finish"], 6),
    (flaky_once, ["prepare", "flaky", "finish"], 8),
]
OUTAGES = 3
OUTAGE_GAP_SECONDS = 0.3
FINISHED = {"completed", "failed", "cancelled", "compensated", "compensation_failed"}
# What a lost connection or a lapsed lease records on the attempt it cut short.
INTERRUPTIONS = {"WorkerError", "LeaseExpired", "WorkerLost"}


def statuses(ids) -> Counter:
    return Counter(WorkflowExecution.objects.filter(id__in=ids).values_list("status", flat=True))


def test_executions_complete_once_each_across_a_database_outage(workers, tmp_path):
    worker = workers.start(concurrency=10, poll_interval=0.1)

    steps_of = {}  # execution id -> its steps
    key_of = {}  # execution id -> the key its steps record calls under
    for workflow, steps, how_many in KINDS:
        for index in range(how_many):
            key = f"{workflow.name}-{index}"
            execution_id = durable.start(workflow, {"dir": str(tmp_path), "key": key})
            steps_of[execution_id] = steps
            key_of[execution_id] = key
    ids = list(steps_of)
    waiting_for_go = [eid for eid, steps in steps_of.items() if "await_go" in steps]

    def report() -> str:
        return f"executions by status: {dict(statuses(ids))}\n{workers.report()}"

    # The outage comes while steps are running: at least one thread is in `nap`.
    wait_for(
        lambda: StepExecution.objects.filter(
            execution_id__in=ids, step_name="nap", status="running"
        ).exists(),
        "a `nap` step to be running",
        report=report,
    )
    terminated = 0
    early_events, late_events = waiting_for_go[::2], waiting_for_go[1::2]
    for outage in range(OUTAGES):
        terminated += terminate_other_connections()
        # Half the events arrive mid-outage, before or after their wait has parked.
        for execution_id in early_events[outage::OUTAGES]:
            durable.send_event(execution_id, "go", {"key": key_of[execution_id]})
        time.sleep(OUTAGE_GAP_SECONDS)
    assert terminated > 0, "no worker connection was there to terminate"

    # The other half once the worker is back and their waits have parked again.
    wait_for(
        lambda: statuses(late_events)["waiting"] == len(late_events),
        f"{len(late_events)} executions to park on their event after the outage",
        timeout=90,
        report=report,
    )
    for execution_id in late_events:
        durable.send_event(execution_id, "go", {"key": key_of[execution_id]})

    wait_for(
        lambda: sum(statuses(ids)[status] for status in FINISHED) == len(ids),
        f"{len(ids)} executions to finish",
        timeout=90,
        report=report,
    )

    assert worker.alive, workers.report()
    executions = {
        execution.id: execution for execution in WorkflowExecution.objects.filter(id__in=ids)
    }
    not_completed = {
        execution_id: (execution.status, execution.error)
        for execution_id, execution in executions.items()
        if execution.status != "completed"
    }
    assert not not_completed, f"not completed: {not_completed}\n{workers.report()}"

    attempts = defaultdict(list)
    for run in StepExecution.objects.filter(execution_id__in=ids):
        attempts[run.execution_id].append(run)
    failed_attempts = Counter(
        (run.step_name, (run.error or {}).get("type"))
        for runs in attempts.values()
        for run in runs
        if run.status == "failed"
    )
    print(f"terminated {terminated} connections; failed attempts: {dict(failed_attempts)}")
    calls = Counter((call["key"], call["step"]) for call in read_calls(tmp_path))
    for execution_id, steps in steps_of.items():
        runs = attempts[execution_id]
        description = f"{key_of[execution_id]}: " + "; ".join(
            f"{run.step_name} #{run.attempt} {run.status} on {run.worker}"
            f" {(run.error or {}).get('type', '')}"
            for run in sorted(runs, key=lambda run: run.started_at)
        )
        # Exactly one completed attempt per step, none left running or parked.
        completed = Counter(run.step_name for run in runs if run.status == "completed")
        assert completed == Counter(steps), description
        assert not [run for run in runs if run.status in ("running", "waiting")], description
        # Each step's output reached the context once, in order.
        context = executions[execution_id].context
        assert context["done"] == steps, description
        # Every step was called through to its end at least once (more if interrupted).
        for step_name in steps:
            assert calls[(key_of[execution_id], step_name)] >= 1, (step_name, description)
        # Each outage cut short at most one attempt of the execution.
        interrupted = [
            run
            for run in runs
            if run.status == "failed" and (run.error or {}).get("type") in INTERRUPTIONS
        ]
        assert len(interrupted) <= OUTAGES, description
        # Only the flaky step failed otherwise: its first call, on purpose.
        others = [
            run
            for run in runs
            if run.status == "failed" and run not in interrupted and run.step_name != "flaky"
        ]
        assert not others, description
        if "await_go" in steps:
            assert context["go"] == {"key": key_of[execution_id]}, description
        if "flaky" in steps:
            assert len([run for run in runs if run.step_name == "flaky"]) >= 2, description
            assert (tmp_path / f"flaky-{key_of[execution_id]}").exists(), description
