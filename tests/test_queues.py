"""Queue controls: a paused queue is not claimed (by any worker, across restarts),
resume lets it run, drain waits for what runs, and `durable_queue` drives them."""

import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from django_durable import queues
from django_durable.models import WorkflowExecution
from django_durable.testing import run_until_idle
from tests.worker_support import manage, wait_for
from tests.workflows_app.worker_workflows import reports
from tests.workflows_app.workflows import hello

pytestmark = pytest.mark.django_db


def status_of(execution_id) -> str:
    return WorkflowExecution.objects.get(id=execution_id).status


def test_a_paused_queue_is_not_claimed_and_resume_lets_it_run():
    queues.pause_queue("reports", reason="month-end close")
    held = reports.start({})
    other = hello.start({})
    run_until_idle()
    assert (status_of(held), status_of(other)) == ("pending", "completed")
    state = queues.queue_state("reports")
    assert (state.paused, state.reason, state.runnable, state.running) == (
        True,
        "month-end close",
        1,
        0,
    )
    assert queues.resume_queue("reports") is True
    assert queues.resume_queue("reports") is False
    run_until_idle()
    assert status_of(held) == "completed"


def test_pausing_twice_keeps_the_first_pause():
    first = queues.pause_queue("reports", reason="first")
    again = queues.pause_queue("reports", reason="second")
    assert (again.paused_at, again.reason) == (first.paused_at, "first")
    assert [paused.name for paused in queues.paused_queues()] == ["reports"]


def test_a_bad_queue_name_is_refused():
    with pytest.raises(queues.InvalidQueueName):
        queues.pause_queue("")


def test_drain_returns_at_once_on_an_empty_queue_and_times_out_on_a_runnable_one():
    assert queues.drain("reports", timedelta(seconds=5)) is True
    reports.start({})
    seen = []
    assert queues.drain("reports", timedelta(seconds=0), on_progress=seen.append) is False
    assert seen[-1].runnable == 1
    queues.pause_queue("reports")
    assert queues.drain("reports", timedelta(seconds=0)) is True  # paused: only running counts


def test_the_command_pauses_shows_and_resumes():
    out = io.StringIO()
    call_command("durable_queue", "pause", "reports", "--reason", "deploy", stdout=out)
    assert "Queue 'reports' paused since" in out.getvalue()
    reports.start({})
    out = io.StringIO()
    call_command("durable_queue", "status", "reports", stdout=out)
    text = out.getvalue()
    assert "paused since" in text and "(deploy)" in text
    assert re.search(r"^runnable +1$", text, re.MULTILINE)
    out = io.StringIO()
    call_command("durable_queue", "status", "reports", "--json", stdout=out)
    assert '"runnable": 1' in out.getvalue() and '"paused": true' in out.getvalue()
    out = io.StringIO()
    call_command("durable_queue", "resume", "reports", stdout=out)
    assert out.getvalue().strip() == "Queue 'reports' resumed."


def test_the_command_refuses_bad_input_with_exit_code_two():
    with pytest.raises(CommandError) as bad_duration:
        call_command("durable_queue", "drain", "reports", "--timeout", "soon")
    assert bad_duration.value.returncode == 2
    with pytest.raises(CommandError) as bad_name:
        call_command("durable_queue", "pause", "q" * 101)
    assert bad_name.value.returncode == 2


@pytest.mark.django_db(transaction=True)
def test_drain_timing_out_exits_one_and_bad_input_two():
    reports.start({})
    timed_out = manage("durable_queue", "drain", "reports", "--timeout", "1s")
    assert timed_out.returncode == 1, timed_out.stderr
    assert "did not drain within" in timed_out.stderr and "Traceback" not in timed_out.stderr
    bad = manage("durable_queue", "pause", "q" * 101)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.django_db(transaction=True)
def test_a_running_worker_skips_a_paused_queue_until_it_is_resumed(workers):
    queues.pause_queue("reports")
    held = reports.start({})
    workers.start(queues=["default", "reports"])
    first = hello.start({})
    wait_for(
        lambda: status_of(first) == "completed", "the default queue's run", report=workers.report
    )
    later = hello.start({})  # a second round: the worker has claimed again since
    wait_for(lambda: status_of(later) == "completed", "another default run", report=workers.report)
    assert status_of(held) == "pending"
    queues.resume_queue("reports")
    wait_for(
        lambda: status_of(held) == "completed", "the resumed queue's run", report=workers.report
    )
    assert queues.drain("reports", timedelta(seconds=30)) is True
