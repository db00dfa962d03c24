"""Log capture: what a step logs and prints is kept on its attempt row, and only there."""

import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_durable import logcapture
from django_durable.models import StepExecution, WorkflowExecution
from django_durable.testing import run_until_idle
from tests.worker_support import wait_for
from tests.workflows_app import log_workflows

pytestmark = pytest.mark.django_db


def attempt_logs(execution_id, step_name) -> list[dict]:
    row = StepExecution.objects.filter(execution_id=execution_id, step_name=step_name).latest(
        "started_at"
    )
    return row.logs


def test_logging_and_print_inside_a_step_are_kept_on_its_attempt():
    eid = log_workflows.logged.start({"order": "A-1"})
    run_until_idle()
    logs = attempt_logs(eid, "chatty")
    assert [(entry["level"], entry["message"]) for entry in logs] == [
        ("INFO", "charging A-1"),
        ("STDOUT", "printed line"),
        ("STDOUT", "no newline at the end"),
    ]
    assert all(entry["timestamp"][:4].isdigit() for entry in logs)
    assert attempt_logs(eid, "quiet") == []  # the next step's row has none of it


def test_output_outside_a_step_is_not_captured(capsys):
    eid = log_workflows.logged.start({"order": "A-2"})
    print("between runs")
    logging.getLogger("tests.log_workflows").warning("outside any step")
    run_until_idle()
    messages = [entry["message"] for entry in attempt_logs(eid, "chatty")]
    assert "between runs" not in messages and "outside any step" not in messages
    assert "between runs" in capsys.readouterr().out  # printing still reaches the stream


def test_a_failed_attempt_keeps_its_logs_with_the_logged_traceback():
    eid = log_workflows.failing.start({})
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "failed"
    (entry,) = attempt_logs(eid, "flaky")
    assert entry["level"] == "ERROR"
    assert entry["message"].startswith("payment failed\nTraceback")
    assert "ValueError: card declined" in entry["message"]


def test_logs_are_capped_in_entries_and_in_length():
    eid = log_workflows.flooded.start({})
    run_until_idle()
    logs = attempt_logs(eid, "flood")
    assert len(logs) == logcapture.MAX_ENTRIES
    assert logs[0]["message"] == "line 0"
    assert logs[-1]["level"] == "WARNING"
    assert logs[-1]["message"].startswith("502 more log entries were not kept")
    assert all(len(entry["message"]) <= logcapture.MAX_MESSAGE for entry in logs)


def test_a_long_message_is_truncated_and_nul_is_replaced():
    capture = logcapture.Capture()
    capture.add("INFO", "a\x00" + "y" * 20_000)
    (entry,) = capture.close()
    assert len(entry["message"]) == logcapture.MAX_MESSAGE
    assert entry["message"].startswith("a\ufffdy") and entry["message"].endswith("[truncated]")


def test_capturing_costs_no_statement_of_its_own(settings):
    """The logs travel in the statement that closes the attempt."""

    def statements(log_capture: bool) -> int:
        settings.DURABLE = {"LOG_CAPTURE": log_capture}
        eid = log_workflows.logged.start({"order": "A-3"})
        with CaptureQueriesContext(connection) as queries:
            run_until_idle()
        assert WorkflowExecution.objects.get(id=eid).status == "completed"
        return len(queries), attempt_logs(eid, "chatty")

    without, no_logs = statements(False)
    with_logs, logs = statements(True)
    assert no_logs == [] and len(logs) == 3
    assert with_logs == without


@pytest.mark.django_db(transaction=True)
def test_parallel_branches_on_two_worker_threads_keep_only_their_own_lines(workers, tmp_path):
    eid = log_workflows.side_by_side.start({"dir": str(tmp_path)})
    workers.start(concurrency=4)
    wait_for(
        lambda: WorkflowExecution.objects.get(id=eid).status == "completed",
        "the parallel workflow to complete",
        report=workers.report,
    )
    threads = {}
    for name in ("left", "right"):
        logs = attempt_logs_anywhere(eid, f"{name}_body")
        assert len(logs) == 40
        assert {entry["message"].split(" ")[0] for entry in logs} == {name}
        threads[name] = {
            entry["message"].rsplit(" on ", 1)[1] for entry in logs if entry["level"] == "INFO"
        }
        assert len(threads[name]) == 1
    assert threads["left"] != threads["right"]  # really two threads at once


def attempt_logs_anywhere(root_id, step_name) -> list[dict]:
    row = StepExecution.objects.get(execution__root_id=root_id, step_name__endswith=step_name)
    return row.logs
