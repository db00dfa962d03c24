"""The worker as it runs in production: `manage.py durable_worker` subprocesses.

Each test starts real worker processes (see tests/worker_support.py) against the test
database, so the tests are transactional: what they write is committed and the workers
see it. Steps report what they did through files (tests/workflows_app/
worker_workflows.py); the database tells the rest. Tests needing several workers, NOTIFY
or pg_terminate_backend run on PostgreSQL only; the others run on SQLite too.
"""

import signal
import socket
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_durable import claims
from django_durable.models import StepExecution, WorkflowExecution
from django_durable.models import Worker as WorkerRow
from tests.worker_support import (
    IS_POSTGRES,
    IS_SQLITE,
    WorkerPool,
    needs_postgres,
    terminate_other_connections,
    wait_for,
)
from tests.workflows_app.worker_workflows import (
    held,
    overrun,
    read_records,
    read_trace,
    retried,
    three_steps,
)

pytestmark = pytest.mark.django_db(transaction=True)

THREE_STEPS = ["first", "second", "third"]


# -- helpers -------------------------------------------------------------------------------


def count(**filters) -> int:
    return WorkflowExecution.objects.filter(**filters).count()


def wait_until_completed(ids, pool: WorkerPool, *, timeout: float = 60.0) -> None:
    ids = list(ids)

    def all_completed():
        return count(id__in=ids, status="completed") == len(ids)

    def report():
        by_status = defaultdict(int)
        for status in WorkflowExecution.objects.filter(id__in=ids).values_list("status", flat=True):
            by_status[status] += 1
        return f"executions by status: {dict(by_status)}\n{pool.report()}"

    wait_for(all_completed, f"{len(ids)} execution(s) to complete", timeout=timeout, report=report)


def attempts(execution_id, step_name: str | None = None) -> list[StepExecution]:
    runs = StepExecution.objects.filter(execution_id=execution_id)
    if step_name is not None:
        runs = runs.filter(step_name=step_name)
    return list(runs.order_by("started_at", "attempt"))


def assert_each_step_completed_once(ids, step_names, pool: WorkerPool) -> None:
    """Every execution has exactly one completed attempt per step, none still running,
    and its completed attempts never overlap in time (one step at a time)."""
    completed = defaultdict(list)
    for run in StepExecution.objects.filter(execution_id__in=ids):
        assert run.status != "running", f"attempt left running: {run.__dict__}\n{pool.report()}"
        if run.status == "completed":
            completed[run.execution_id].append(run)
    assert set(completed) == set(ids)
    for execution_id, runs in completed.items():
        assert sorted(run.step_name for run in runs) == sorted(step_names), execution_id
        runs.sort(key=lambda run: run.started_at)
        for before, after in zip(runs, runs[1:], strict=False):
            assert before.completed_at <= after.started_at, (
                f"{execution_id}: {before.step_name} on {before.worker} "
                f"[{before.started_at} - {before.completed_at}] overlaps {after.step_name} "
                f"on {after.worker} [{after.started_at} - {after.completed_at}]"
            )


def assert_calls_never_overlap(trace: list[dict]) -> None:
    """Within one execution (its `key`), no step call ran while another was running."""
    by_key = defaultdict(list)
    for call in trace:
        by_key[call["key"]].append(call)
    for key, calls in by_key.items():
        calls.sort(key=lambda call: call["enter"])
        for before, after in zip(calls, calls[1:], strict=False):
            assert before["exit"] <= after["enter"], f"execution {key}: {before} overlaps {after}"


def assert_nothing_locked() -> None:
    assert list(WorkflowExecution.objects.exclude(locked_by=None).values("id", "locked_by")) == []
    assert count(status="running") == 0
    assert StepExecution.objects.filter(status="running").count() == 0


def listening_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = %s",
            [f"LISTEN {claims.CHANNEL}"],
        )
        return cursor.fetchone()[0]


def entered_pids(directory) -> list[int]:
    """The pids of the processes that entered the `hold` step, in order."""
    return [record["pid"] for record in read_records(directory / "entered")]


# -- several workers -----------------------------------------------------------------------


@needs_postgres
def test_three_workers_run_300_executions_each_step_exactly_once(workers, tmp_path):
    pool = [workers.start(wait_until_started=False) for _ in range(3)]
    for worker in pool:
        workers.wait_started(worker)

    ids = [
        three_steps.start({"dir": str(tmp_path), "key": index, "sleep": 0.01})
        for index in range(300)
    ]
    wait_until_completed(ids, workers)

    assert_each_step_completed_once(ids, THREE_STEPS, workers)
    assert StepExecution.objects.count() == 900  # no attempt was lost or repeated

    names = {worker.name for worker in pool}
    pids = {worker.pid for worker in pool}
    used = set(StepExecution.objects.values_list("worker", flat=True))
    assert used <= names
    assert len(used) > 1, f"all the work went to one worker: {used}"

    # What the step functions themselves saw: each step of each execution was called
    # exactly once, by one of the workers, and never at the same time as another step
    # of the same execution.
    trace = read_trace(tmp_path)
    assert sorted((call["key"], call["step"]) for call in trace) == sorted(
        (key, step) for key in range(300) for step in THREE_STEPS
    )
    assert {call["pid"] for call in trace} <= pids
    assert_calls_never_overlap(trace)
    for execution in WorkflowExecution.objects.filter(id__in=ids):
        assert [call["step"] for call in execution.context["trace"]] == THREE_STEPS
        assert {call["pid"] for call in execution.context["trace"]} <= pids


@needs_postgres
def test_workers_reconnect_after_their_connections_are_terminated(workers, tmp_path):
    pool = [workers.start(concurrency=4, wait_until_started=False) for _ in range(2)]
    for worker in pool:
        workers.wait_started(worker)

    ids = [
        three_steps.start({"dir": str(tmp_path), "key": index, "sleep": 0.1}) for index in range(50)
    ]
    terminated = 0
    for done in (5, 20, 35):
        wait_for(
            lambda done=done: count(id__in=ids, status="completed") >= done,
            f"{done} executions to complete",
            report=workers.report,
        )
        terminated += terminate_other_connections()
    assert terminated > 0

    wait_until_completed(ids, workers)
    assert all(worker.alive for worker in pool), workers.report()
    assert_each_step_completed_once(ids, THREE_STEPS, workers)
    # Attempts cut short by a lost connection were released, never recorded as done.
    for run in StepExecution.objects.filter(execution_id__in=ids).exclude(status="completed"):
        assert run.status == "failed" and run.output is None
        assert run.error["type"] in ("WorkerError", "LeaseExpired"), run.error
    for execution in WorkflowExecution.objects.filter(id__in=ids):
        assert [call["step"] for call in execution.context["trace"]] == THREE_STEPS
    assert_nothing_locked()


@needs_postgres
def test_notify_wakes_an_idle_worker_at_once(workers, tmp_path):
    workers.start(poll_interval=30)
    wait_for(listening_connections, "the worker to LISTEN", report=workers.report)
    time.sleep(1)  # the worker is now asleep for up to 30 s

    started = timezone.now()
    execution_id = three_steps.start({"dir": str(tmp_path), "key": "notify"})
    wait_until_completed([execution_id], workers, timeout=20)

    took = WorkflowExecution.objects.get(id=execution_id).completed_at - started
    assert took < timedelta(seconds=5), f"took {took} with a 30 s poll interval"


# -- crashes and shutdowns -----------------------------------------------------------------


def start_held_and_wait_until_entered(worker, tmp_path, key: str):
    execution_id = held.start({"dir": str(tmp_path), "key": key})
    wait_for(
        lambda: worker.pid in entered_pids(tmp_path),
        f"worker {worker.name} to enter the step",
        report=worker.describe,
    )
    return execution_id


def assert_rerun_by(execution_id, tmp_path, *, lost, rerun_by, error_type) -> None:
    """`lost`'s attempt of `hold` failed with `error_type` and recorded nothing; `rerun_by`
    ran it again and the execution finished with that attempt's result."""
    interrupted, rerun = attempts(execution_id, "hold")
    assert (interrupted.worker, interrupted.status, interrupted.error["type"]) == (
        lost.name,
        "failed",
        error_type,
    )
    assert interrupted.output is None
    assert (rerun.worker, rerun.status, rerun.attempt) == (rerun_by.name, "completed", 1)
    assert [run.status for run in attempts(execution_id, "after_hold")] == ["completed"]
    assert entered_pids(tmp_path) == [lost.pid, rerun_by.pid]
    context = WorkflowExecution.objects.get(id=execution_id).context
    assert context["held_by"] == rerun_by.pid
    assert [(call["step"], call["pid"]) for call in context["trace"]] == [
        ("hold", rerun_by.pid),
        ("after_hold", rerun_by.pid),
    ]
    assert_nothing_locked()


def test_a_step_of_a_killed_worker_is_rerun_after_its_lease_lapses(workers, tmp_path):
    """SIGKILL on another host: nothing tells the other workers that it died, so its step
    runs again once its lease lapses. (A dead worker on this host is noticed at once, see
    the next test, so the killed worker's row is moved to another host.)"""
    short = {"lease_seconds": 3, "heartbeat_seconds": 1}
    first = workers.start(**short)
    execution_id = start_held_and_wait_until_entered(first, tmp_path, "killed")

    first.kill()
    WorkerRow.objects.filter(name=first.name).update(host="elsewhere.example")
    execution = WorkflowExecution.objects.get(id=execution_id)
    assert (execution.status, execution.locked_by) == ("running", first.name)
    (tmp_path / "release").touch()  # the next attempt runs straight through

    if IS_SQLITE:
        # SQLite serves one worker: another may start only once the killed one's row is
        # stale, i.e. not seen for max(3 * HEARTBEAT_SECONDS, 10) s.
        last_seen = WorkerRow.objects.get(name=first.name).last_seen_at
        stale_at = last_seen + timedelta(seconds=10.5)
        time.sleep(max(0.0, (stale_at - timezone.now()).total_seconds()))
    second = workers.start(**short)
    wait_until_completed([execution_id], workers)

    assert_rerun_by(execution_id, tmp_path, lost=first, rerun_by=second, error_type="LeaseExpired")
    if IS_SQLITE:
        assert not WorkerRow.objects.filter(name=first.name).exists()  # removed as stale


@pytest.mark.skipif(
    not IS_SQLITE,
    reason="only on SQLite (one machine) is a dead local pid trusted; elsewhere leases decide",
)
def test_a_killed_worker_on_the_same_host_has_its_work_released_at_once(workers, tmp_path):
    """On SQLite a new worker sees that the old process is gone: it starts at once and
    does not wait for the lease (two minutes here)."""
    long_lease = {"lease_seconds": 120, "heartbeat_seconds": 1}
    first = workers.start(**long_lease)
    execution_id = start_held_and_wait_until_entered(first, tmp_path, "killed-here")

    first.kill()
    killed_at = timezone.now()
    (tmp_path / "release").touch()
    second = workers.start(**long_lease)
    wait_until_completed([execution_id], workers, timeout=60)

    assert_rerun_by(execution_id, tmp_path, lost=first, rerun_by=second, error_type="WorkerLost")
    took = WorkflowExecution.objects.get(id=execution_id).completed_at - killed_at
    assert took < timedelta(seconds=30), f"took {took}; the lease is 120 s"
    assert not WorkerRow.objects.filter(name=first.name).exists()


@needs_postgres
def test_a_paused_worker_cannot_record_a_step_that_was_rerun_elsewhere(workers, tmp_path):
    """SIGSTOP (a long GC pause, a frozen VM) until the lease lapses and another worker
    has re-run the step; after SIGCONT the first attempt returns, and its result is
    discarded: the run token it was given has been revoked."""
    short = {"lease_seconds": 3, "heartbeat_seconds": 1}
    first = workers.start(**short)
    execution_id = start_held_and_wait_until_entered(first, tmp_path, "paused")

    first.send(signal.SIGSTOP)
    try:
        second = workers.start(**short)
        (tmp_path / "release").touch()
        wait_until_completed([execution_id], workers)
    finally:
        first.send(signal.SIGCONT)
    wait_for(
        lambda: any(
            call["step"] == "hold" and call["pid"] == first.pid for call in read_trace(tmp_path)
        ),
        "the paused attempt to return",
        report=workers.report,
    )
    time.sleep(1)  # time to try (and fail) to record its result

    assert first.alive, workers.report()
    assert_rerun_by(execution_id, tmp_path, lost=first, rerun_by=second, error_type="LeaseExpired")
    assert StepExecution.objects.filter(execution_id=execution_id).count() == 3
    assert "unexpected error" not in first.log()


def test_sigterm_lets_the_running_step_finish_and_exits_cleanly(workers, tmp_path):
    worker = workers.start(grace=30)
    execution_id = start_held_and_wait_until_entered(worker, tmp_path, "sigterm")

    worker.terminate()
    wait_for(lambda: "stopping" in worker.log(), "the worker to stop", report=workers.report)
    time.sleep(0.3)
    assert worker.alive, "the worker exited while its step was still running"
    (tmp_path / "release").touch()
    assert worker.wait() == 0, workers.report()

    assert_nothing_locked()
    assert not WorkerRow.objects.exists()
    execution = WorkflowExecution.objects.get(id=execution_id)
    [run] = attempts(execution_id, "hold")
    assert (run.status, run.worker) == ("completed", worker.name)
    assert execution.context["held_by"] == worker.pid
    # A stopping worker records the step it was running but starts no new one.
    assert (execution.status, execution.current_step) == ("pending", "after_hold")

    # The rest is picked up by the next worker (on SQLite too: the clean exit removed
    # the worker's row, so another may start at once).
    assert workers.start(burst=True).wait() == 0, workers.report()
    assert WorkflowExecution.objects.get(id=execution_id).status == "completed"
    assert [run.status for run in attempts(execution_id)] == ["completed", "completed"]


def test_a_step_still_running_when_the_grace_period_ends_is_released(workers, tmp_path):
    worker = workers.start(grace=1)
    execution_id = start_held_and_wait_until_entered(worker, tmp_path, "grace")

    worker.terminate()
    assert worker.wait() == 0, workers.report()  # without the marker: the step never ends

    assert_nothing_locked()
    execution = WorkflowExecution.objects.get(id=execution_id)
    assert (execution.status, execution.current_step) == ("pending", "hold")
    [run] = attempts(execution_id, "hold")
    assert (run.status, run.error["type"]) == ("failed", "WorkerStopped")
    assert "released 1 execution" in worker.log()
    (tmp_path / "release").touch()
    assert workers.start(burst=True).wait() == 0, workers.report()
    assert WorkflowExecution.objects.get(id=execution_id).status == "completed"


def test_a_second_signal_exits_at_once(workers, tmp_path):
    worker = workers.start(grace=60)
    start_held_and_wait_until_entered(worker, tmp_path, "twice")

    worker.terminate()
    wait_for(lambda: "stopping" in worker.log(), "the worker to stop", report=workers.report)
    worker.send(signal.SIGINT)
    assert worker.wait(timeout=10) == 1, workers.report()  # not the 60 s grace period
    assert "Second signal" in worker.log()


def test_a_worker_runs_no_more_steps_at_once_than_its_concurrency(workers, tmp_path):
    ids = [held.start({"dir": str(tmp_path), "key": index}) for index in range(4)]
    worker = workers.start(concurrency=2)
    wait_for(lambda: len(entered_pids(tmp_path)) >= 2, "two steps to start", report=workers.report)
    time.sleep(1)  # room for a third step to start, if the limit did not hold
    assert len(entered_pids(tmp_path)) == 2
    assert count(id__in=ids, status="running") == 2
    (tmp_path / "release").touch()
    wait_until_completed(ids, workers)
    assert entered_pids(tmp_path) == [worker.pid] * 4


def test_burst_exits_once_nothing_is_runnable(workers, tmp_path):
    ids = [three_steps.start({"dir": str(tmp_path), "key": index}) for index in range(20)]

    worker = workers.start(burst=True)
    assert worker.wait() == 0, workers.report()

    assert count(id__in=ids, status="completed") == 20, workers.report()
    assert_each_step_completed_once(ids, THREE_STEPS, workers)
    assert_nothing_locked()
    assert "nothing runnable" in worker.log()
    assert not WorkerRow.objects.exists()


def test_step_timeout_fails_the_overrunning_attempt_and_discards_its_late_result(workers, tmp_path):
    workers.start()
    execution_id = overrun.start({"dir": str(tmp_path), "key": "timeout"})
    wait_until_completed([execution_id], workers)
    # Let the first attempt finish its 3 s and try to record "first".
    wait_for(
        lambda: (tmp_path / "first-done").exists(),
        "the overrunning attempt to return",
        report=workers.report,
    )
    time.sleep(0.5)

    timed_out, retried_run = attempts(execution_id)
    assert (timed_out.attempt, timed_out.status, timed_out.error["type"]) == (
        1,
        "failed",
        "StepTimeout",
    )
    assert timed_out.output is None
    # The worker's watchdog, not the late return, failed the attempt: its row was closed
    # and the retry had started before the overrunning call came back (`first-done`).
    returned_at = datetime.fromtimestamp((tmp_path / "first-done").stat().st_mtime, UTC)
    assert timed_out.completed_at < returned_at
    assert retried_run.started_at < returned_at
    assert (retried_run.attempt, retried_run.status) == (2, "completed")
    execution = WorkflowExecution.objects.get(id=execution_id)
    assert execution.status == "completed"
    assert execution.context["value"] == "second"
    assert len(read_trace(tmp_path)) == 2  # both attempts did run to their end
    assert_nothing_locked()


# -- registration and timers ---------------------------------------------------------------


def test_a_running_worker_is_registered_until_it_stops(workers):
    worker = workers.start(name="registered-worker", queues=["default", "other"], concurrency=2)

    row = wait_for(
        lambda: WorkerRow.objects.filter(name="registered-worker").first(),
        "the worker row",
        report=workers.report,
    )
    assert (row.host, row.pid, row.queues, row.concurrency) == (
        socket.gethostname(),
        worker.pid,
        ["default", "other"],
        4,
    )
    assert row.started_at is not None and row.last_seen_at is not None

    worker.send(signal.SIGTERM)
    assert worker.wait() == 0, workers.report()
    assert not WorkerRow.objects.filter(name="registered-worker").exists()


def test_due_retries_and_scheduled_starts_run_on_time_without_polling(workers, tmp_path):
    """With a 30 s poll interval, only the worker's own tracking of the next due time
    can run these within seconds of being due."""
    scheduled_at = timezone.now() + timedelta(seconds=4)
    scheduled = three_steps.start(
        {"dir": str(tmp_path), "key": "scheduled"}, scheduled_at=scheduled_at
    )
    retrying = retried.start({"dir": str(tmp_path), "key": "retried"})

    # Started after the executions exist: on SQLite nothing else could wake it.
    workers.start(poll_interval=30)
    wait_until_completed([scheduled, retrying], workers, timeout=25)

    [run, *_] = attempts(scheduled)
    assert scheduled_at <= run.started_at < scheduled_at + timedelta(seconds=10), (
        f"due {scheduled_at}, started {run.started_at}"
    )
    failed, recovered = attempts(retrying)
    assert (failed.status, recovered.status) == ("failed", "completed")
    delay = recovered.started_at - failed.completed_at
    assert timedelta(seconds=2) <= delay < timedelta(seconds=10), f"retried after {delay}"

    if IS_POSTGRES:
        # Started while the worker sleeps: NOTIFY wakes it, then it waits for the due time.
        scheduled_at = timezone.now() + timedelta(seconds=2)
        later = three_steps.start({"dir": str(tmp_path), "key": "later"}, scheduled_at=scheduled_at)
        wait_until_completed([later], workers, timeout=25)
        [run, *_] = attempts(later)
        assert scheduled_at <= run.started_at < scheduled_at + timedelta(seconds=10)
