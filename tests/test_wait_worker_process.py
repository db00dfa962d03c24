"""A real `durable_worker` process is woken by `send_event` at once, not by its polling.

The worker runs with `tests.settings_wait_worker`: a 30-second poll interval and the
workflow used here. After the step parks on `wait_for_event`, the worker's dispatcher
goes to sleep for the full poll interval (nothing else is due), so the event sent from
this process can only be picked up within a few seconds through PostgreSQL's
LISTEN/NOTIFY. The test is transactional, so what it writes is committed and visible to
the worker; the worker is killed before the test database is flushed.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import django_durable as durable
from django_durable.models import StepExecution, WorkflowExecution
from tests.settings_wait_worker import POLL_SECONDS, event_wait
from tests.worker_support import IS_POSTGRES, REPO, database_url, wait_for

pytestmark = [
    pytest.mark.skipif(
        not IS_POSTGRES,
        reason="waking a worker on send_event uses LISTEN/NOTIFY, which only PostgreSQL has",
    ),
    pytest.mark.django_db(transaction=True),
]

PROMPT_SECONDS = 10.0  # well under POLL_SECONDS: polling alone cannot make it


class Worker:
    def __init__(self, tmp_path):
        self.name = f"wait-worker-{uuid.uuid4().hex[:6]}"
        self.log_path = tmp_path / f"{self.name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings_wait_worker",
            "DATABASE_URL": database_url(),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DURABLE_POLL_INTERVAL", None)
        args = [sys.executable, "manage.py", "durable_worker"]
        args += ["--settings", "tests.settings_wait_worker", "--name", self.name]
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                args, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def report(self) -> str:
        state = "running" if self.process.poll() is None else f"exited {self.process.poll()}"
        return f"--- worker {self.name} (pid {self.process.pid}, {state})\n{self.log()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def worker(transactional_db, tmp_path):
    process = Worker(tmp_path)
    try:
        wait_for(
            lambda: (
                f"Worker {process.name} started" in process.log()
                or process.process.poll() is not None
            ),
            "the worker to start",
            timeout=30,
            report=process.report,
        )
        assert process.process.poll() is None, process.report()
        yield process
    finally:
        process.stop()
        print(process.report())


def status(execution_id) -> str:
    return WorkflowExecution.objects.get(id=execution_id).status


def test_send_event_wakes_a_worker_at_once_despite_a_long_poll_interval(worker):
    assert POLL_SECONDS >= 3 * PROMPT_SECONDS
    eid = event_wait.start({"order": 7})

    # start() notifies too: the step runs and parks well before a poll would come.
    wait_for(
        lambda: status(eid) == "waiting",
        "the execution to park on its event",
        timeout=PROMPT_SECONDS,
        report=worker.report,
    )
    parked = StepExecution.objects.get(execution_id=eid)
    assert (parked.status, parked.worker) == ("waiting", worker.name)

    sent_at = time.monotonic()
    durable.send_event(eid, "paid", {"amount": "9.99"})
    wait_for(
        lambda: status(eid) in ("completed", "failed"),
        "the execution to finish after the event",
        timeout=POLL_SECONDS - 5,
        interval=0.05,
        report=worker.report,
    )
    elapsed = time.monotonic() - sent_at

    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed", (execution.error, worker.report())
    assert elapsed < PROMPT_SECONDS, f"woken after {elapsed:.1f}s\n{worker.report()}"
    assert execution.context == {
        "order": 7,
        "paid": {"amount": "9.99"},
        "worker_pid": worker.process.pid,
    }
    runs = StepExecution.objects.filter(execution_id=eid).order_by("started_at")
    assert [(run.status, run.worker) for run in runs] == [
        ("resumed", worker.name),
        ("completed", worker.name),
    ]
