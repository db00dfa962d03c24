"""durable_status, durable_inspect and durable_graph: in process through `call_command`,
and exit codes and one-line errors through real `manage.py` subprocesses."""

import io
import json
import subprocess
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import django_durable as durable
from django_durable import NonRetryableError, insights, parallel, workflow
from django_durable.helpers import assign, days
from django_durable.models import Worker, WorkflowExecution
from django_durable.orchestration import call_workflow
from django_durable.testing import run_until_idle
from django_durable.waits import wait_for_approval, wait_for_event
from tests.worker_support import manage

pytestmark = pytest.mark.django_db


def receive(ctx):
    return assign(ctx, "received", True)


def await_paid(ctx):
    return assign(ctx, "paid", wait_for_event("paid", timeout=days(3)))


def ask(ctx):
    return assign(ctx, "ok", wait_for_approval("boss", prompt="Ship it?"))


def declined(ctx):
    raise NonRetryableError("card declined")


def hand_off(ctx):
    return assign(ctx, "kid", call_workflow("cmd_insights.kid", {}))


def kid_waits(ctx):
    wait_for_event("go")


paying = workflow("cmd_insights.paying", [receive, await_paid])
asking = workflow("cmd_insights.asking", [parallel(receive, ask, name="both")])
failing = workflow("cmd_insights.failing", [receive, declined])
kid = workflow("cmd_insights.kid", [kid_waits])
handing = workflow("cmd_insights.handing", [receive, hand_off])


def run(name: str, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue()


def refused(name: str, *args: str, code: int = 2) -> str:
    with pytest.raises(CommandError) as raised:
        run(name, *args)
    assert raised.value.returncode == code, str(raised.value)
    return str(raised.value)


def started(definition) -> uuid.UUID:
    execution_id = durable.start(definition, {})
    run_until_idle()
    return execution_id


def live_worker() -> None:
    from django_durable import clock

    now = clock.now()
    Worker.objects.create(
        name="web-1",
        host="web",
        pid=1,
        queues=["default"],
        concurrency=4,
        started_at=now,
        last_seen_at=now,
    )


# -- durable_status ----------------------------------------------------------------------


def test_status_tables(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the table's width
    live_worker()
    started(paying)
    started(failing)
    out = run("durable_status")
    assert out.startswith("System status: HEALTHY (database default connected, checked ")
    assert "\nHealth\ncheck " in out
    assert "\nQueues\nqueue " in out
    assert "default" in out and "web-1" in out
    lines = out.splitlines()
    [paying_row] = [line for line in lines if line.startswith("cmd_insights.paying")]
    assert "completed 1, waiting 1" in paying_row  # its attempts
    assert "waiting 1" in paying_row
    [failing_row] = [line for line in lines if line.startswith("cmd_insights.failing")]
    assert "failed 1" in failing_row


def test_status_json_is_the_status_report():
    live_worker()
    started(paying)
    report = json.loads(run("durable_status", "--json"))
    assert report["status"] == "healthy"
    assert {item["workflow"] for item in report["workflows"]} == {"cmd_insights.paying"}
    assert json.loads(run("durable_status", "--format", "json"))["queues"] == report["queues"]


def test_status_exits_1_when_unhealthy():
    durable.start(paying, {})  # ready, and no worker is live
    message = refused("durable_status", code=1)
    assert message.startswith("The system is unhealthy: No live worker")


def test_status_with_no_worker_and_nothing_run():
    out = run("durable_status")  # degraded (no worker, nothing waiting): exit 0
    assert out.startswith("System status: DEGRADED")
    assert "No worker has registered" in out
    assert "No execution yet." in out


# -- durable_inspect ---------------------------------------------------------------------


def test_inspect_text_has_introspection_timeline_waits_and_children():
    execution_id = started(handing)
    out = run("durable_inspect", str(execution_id)[:8])
    assert out.startswith(insights.introspect(execution_id))
    assert "\n\nTimeline (2 attempts)\nstep " in out
    assert "receive " in out and "call_child" not in out
    child = WorkflowExecution.objects.get(parent_id=execution_id)
    assert "\nWaits (1)\n" in out and f"child {child.id}" in out
    assert "\nChildren (1)\n" in out
    [row] = [line for line in out.splitlines() if line.startswith(str(child.id))]
    assert "cmd_insights.kid" in row and "waiting" in row and "hand_off" in row


def test_inspect_shows_branch_waits_and_inputs():
    execution_id = started(asking)
    out = run("durable_inspect", str(execution_id))
    assert "- It waits for its block 'both': 1 branch still open:" in out
    assert 'Prompt: "Ship it?"' in out
    [row] = [line for line in out.splitlines() if line.startswith("ask ")]  # the input
    assert "branch 1" in row and "boss (approval)" in row and "no timeout" in row


def test_inspect_a_failed_execution_shows_its_error():
    execution_id = started(failing)
    out = run("durable_inspect", str(execution_id))
    assert "Last error: NonRetryableError: card declined" in out
    [row] = [line for line in out.splitlines() if line.startswith("declined ")]
    assert "failed" in row and "NonRetryableError: card declined" in row


def test_inspect_json():
    execution_id = started(paying)
    report = json.loads(run("durable_inspect", str(execution_id), "--json"))
    assert report["execution"]["id"] == str(execution_id)
    assert report["execution"]["status"] == "waiting"
    assert [step["step"] for step in report["steps"]] == ["receive", "await_paid"]
    assert report["waits"][0]["events"] == ["paid"]
    assert set(report) == {
        "execution",
        "error",
        "steps",
        "waits",
        "pending_inputs",
        "children",
        "open_members",
    }


def test_inspect_refuses_unknown_and_ambiguous_ids():
    assert "No execution id starts with" in refused("durable_inspect", "abcd1234")
    assert "is not an execution id" in refused("durable_inspect", "xyz")
    for n in range(2):
        WorkflowExecution.objects.create(
            id=uuid.UUID(f"abcdef00-0000-4000-8000-00000000000{n}"),
            workflow_name="cmd_insights.paying",
            created_at=durable.get_execution(started(paying)).created_at,
        )
    message = refused("durable_inspect", "abcdef")
    assert "'abcdef' is ambiguous" in message
    assert "abcdef00-0000-4000-8000-000000000000" in message
    assert "abcdef00-0000-4000-8000-000000000001" in message


# -- durable_graph -----------------------------------------------------------------------


def test_graph_prints_mermaid():
    out = run("durable_graph", "cmd_insights.paying")
    assert out == insights.mermaid("cmd_insights.paying")
    assert out.startswith("graph TD\n")


def test_graph_of_an_execution_is_coloured():
    execution_id = started(paying)
    out = run("durable_graph", "cmd_insights.paying", "--execution", str(execution_id)[:10])
    assert out == insights.mermaid(execution_id)
    assert "classDef s_waiting" in out


def test_graph_refuses_an_unknown_workflow_and_a_foreign_execution():
    assert "No workflow named 'cmd_insights.nope'" in refused("durable_graph", "cmd_insights.nope")
    other = started(failing)
    message = refused("durable_graph", "cmd_insights.paying", "--execution", str(other))
    assert "is of workflow 'cmd_insights.failing'" in message


# -- real processes ----------------------------------------------------------------------


def assert_refused(result: subprocess.CompletedProcess, text: str, lines: int = 1) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == lines, result.stderr
    assert text in result.stderr


@pytest.mark.django_db(transaction=True)
def test_exit_codes_of_real_processes():
    execution_id = started(failing)

    result = manage("durable_inspect", str(uuid.uuid4()))
    assert_refused(result, "No execution id starts with")

    result = manage("durable_inspect", str(execution_id)[:8], "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["execution"]["status"] == "failed"
    assert report["error"]["message"] == "card declined"

    result = manage("durable_inspect", str(execution_id))
    assert result.returncode == 0, result.stderr
    assert "It is finished: it failed at" in result.stdout

    result = manage("durable_graph", "cmd_insights.nope")
    assert_refused(result, "No workflow named 'cmd_insights.nope'")

    result = manage("durable_graph", "tests.hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("graph TD\n")


@pytest.mark.django_db(transaction=True)
def test_ambiguous_prefix_and_unhealthy_status_in_real_processes():
    created = durable.get_execution(started(failing)).created_at
    for n in range(2):
        WorkflowExecution.objects.create(
            id=uuid.UUID(f"abcdef00-0000-4000-8000-00000000000{n}"),
            workflow_name="cmd_insights.failing",
            created_at=created,
            run_at=created,
            ready=True,
        )
    result = manage("durable_inspect", "abcdef")
    assert_refused(result, "'abcdef' is ambiguous", lines=3)  # the message and 2 candidates
    assert "abcdef00-0000-4000-8000-000000000001" in result.stderr

    result = manage("durable_status", "--json")  # two pending and ready, no worker
    assert result.returncode == 1, result
    assert json.loads(result.stdout)["status"] == "unhealthy"
    assert "Traceback" not in result.stderr
    assert "The system is unhealthy" in result.stderr


def test_durable_graph_draws_a_graph_of_values_and_colours_one_of_its_executions():
    from django_durable import graphs
    from tests.workflows_app.graph_workflows import sums

    out = io.StringIO()
    call_command("durable_graph", "tests_sums", stdout=out)
    assert out.getvalue().startswith("graph TD")
    assert "n_x --> n_sum" in out.getvalue() and "n_sum" in out.getvalue()
    eid = graphs.start(sums)
    graphs.set_value(eid, "x", 1)
    out = io.StringIO()
    call_command("durable_graph", "tests_sums", "--execution", str(eid)[:8], stdout=out)
    assert "s_set" in out.getvalue()
