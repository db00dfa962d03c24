"""The control commands: durable_list, durable_run, durable_cancel, durable_resume,
durable_retry, durable_pending, durable_provide_input, durable_send_event and
durable_cancel_wait. In process through `call_command`; exit codes, one-line errors and
`durable_run --wait` against a real worker through subprocesses."""

import io
import json
import subprocess
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

import django_durable as durable
from django_durable import Retry, WaitCancelled, parallel, step, workflow
from django_durable.helpers import assign
from django_durable.models import (
    ExecutionKind,
    ExecutionStatus,
    InputStatus,
    PendingInput,
    WorkflowExecution,
)
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import (
    wait_for_any,
    wait_for_approval,
    wait_for_event,
    wait_for_form,
    wait_for_text,
)
from tests.worker_support import manage

pytestmark = pytest.mark.django_db


def greet(ctx):
    return assign(ctx, "greeting", f"hi {ctx.get('name', 'you')}")


def broken(ctx):
    raise RuntimeError("out of stock")


def reserve(ctx):
    return assign(ctx, "reserved", True)


def release(ctx):
    return assign(ctx, "released", True)


def hear(ctx):
    try:
        return assign(ctx, "heard", wait_for_event("paid", timeout=timedelta(hours=2)))
    except WaitCancelled as cancelled:
        return assign(ctx, "withdrawn", cancelled.reason)


def hear_either(ctx):
    return assign(ctx, "got", wait_for_any(["shipped", "lost"]))


def approve(ctx):
    try:
        decision = wait_for_approval("boss", prompt="Ship it?", timeout=timedelta(days=1))
    except WaitCancelled as cancelled:
        decision = f"withdrawn: {cancelled.reason}"
    return assign(ctx, "decision", decision)


def describe(ctx):
    return assign(ctx, "note", wait_for_text("note", prompt="Why?"))


def fill(ctx):
    fields = [{"name": "amount", "type": "number", "required": True}]
    return assign(ctx, "form", wait_for_form("details", fields=fields))


def left(ctx):
    return assign(ctx, "left", True)


def right(ctx):
    return assign(ctx, "right", True)


greeting = workflow("cmd.greeting", [greet])
failing = workflow("cmd.failing", [step(broken, retry=Retry(max_attempts=1))])
paying = workflow("cmd.paying", [step(reserve, compensate=release), hear], compensations=[release])
either = workflow("cmd.either", [hear_either])
approving = workflow("cmd.approving", [approve])
noting = workflow("cmd.noting", [describe])
filling = workflow("cmd.filling", [fill])
forking = workflow("cmd.forking", [parallel(left, right, name="both")], queue="cmd")


def run(name: str, *args: str) -> tuple[str, str]:
    """Call a command in process; its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(name: str, *args: str) -> str:
    """Call a command that must refuse (exit code 2); its one message."""
    with pytest.raises(CommandError) as raised:
        run(name, *args)
    assert raised.value.returncode == 2, str(raised.value)
    return str(raised.value)


def started(definition, input=None, **options) -> WorkflowExecution:
    eid = durable.start(definition, input or {}, **options)
    run_until_idle()
    return WorkflowExecution.objects.get(id=eid)


def row_with_id(text: str, workflow_name: str = "cmd.greeting", **fields) -> WorkflowExecution:
    """An execution row with a chosen id (to make ids that share a prefix)."""
    execution = WorkflowExecution(
        id=uuid.UUID(text), workflow_name=workflow_name, created_at=timezone.now(), **fields
    )
    execution.save(force_insert=True)
    return execution


def table_lines(output: str) -> list[str]:
    return output.splitlines()[2:]  # after the header and its rule


# -- durable_list ------------------------------------------------------------------------


def test_list_shows_executions_newest_first_with_their_columns():
    first = started(greeting, {"name": "ann"})
    advance_clock(timedelta(seconds=5))
    second = started(failing)
    advance_clock(timedelta(seconds=5))
    third = started(paying)

    out, _ = run("durable_list")

    header, rule, *rows = out.splitlines()
    assert header.split() == ["id", "workflow", "status", "step", "queue", "created", "duration"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert [row.split()[0] for row in rows] == [str(e.id)[:8] for e in (third, second, first)]
    assert rows[0].split()[1:5] == ["cmd.paying", "waiting", "hear", "default"]
    assert rows[1].split()[1:3] == ["cmd.failing", "failed"]
    assert rows[2].split()[1:3] == ["cmd.greeting", "completed"]
    assert rows[2].split()[3] == "-"  # a completed execution has no current step


def test_list_as_json_gives_full_ids_and_details():
    done = started(greeting, {"name": "ann"})
    broke = started(failing)

    out, _ = run("durable_list", "--json")
    listed = {row["id"]: row for row in json.loads(out)}

    assert set(listed) == {str(done.id), str(broke.id)}
    assert listed[str(done.id)]["status"] == "completed"
    assert listed[str(done.id)]["workflow"] == "cmd.greeting"
    assert listed[str(done.id)]["duration_seconds"] >= 0
    assert listed[str(broke.id)]["error"]["type"] == "RuntimeError"
    assert "traceback" not in listed[str(broke.id)]["error"]
    assert run("durable_list", "--format", "json")[0] == out


def test_list_filters_by_status_workflow_queue_and_limit():
    done = started(greeting)
    broke = started(failing)
    waiting = started(paying)
    elsewhere = started(greeting, queue="other")

    def ids(*args):
        return {row["id"] for row in json.loads(run("durable_list", "--json", *args)[0])}

    assert ids("--status", "failed") == {str(broke.id)}
    assert ids("--status", "failed", "waiting") == {str(broke.id), str(waiting.id)}
    assert ids("--status", "failed,waiting") == {str(broke.id), str(waiting.id)}
    assert ids("--status", "failed", "--status", "completed") == {
        str(broke.id),
        str(done.id),
        str(elsewhere.id),
    }
    assert ids("--workflow", "cmd.greeting") == {str(done.id), str(elsewhere.id)}
    assert ids("--queue", "other") == {str(elsewhere.id)}
    assert ids("--workflow", "nothing.like.it") == set()
    assert len(ids("--limit", "2")) == 2
    assert ids("--limit", "1") == {str(elsewhere.id)}  # the newest


def test_list_since_takes_an_age_or_a_date():
    old = started(greeting)
    WorkflowExecution.objects.filter(id=old.id).update(
        created_at=timezone.now() - timedelta(days=10)
    )
    new = started(greeting)

    def ids(*args):
        return {row["id"] for row in json.loads(run("durable_list", "--json", *args)[0])}

    assert ids("--since", "7d") == {str(new.id)}
    assert ids("--since", "30d") == {str(old.id), str(new.id)}
    a_week_ago = (timezone.now() - timedelta(days=7)).date().isoformat()
    assert ids("--since", a_week_ago) == {str(new.id)}
    assert ids("--since", (timezone.now() - timedelta(days=11)).isoformat()) == {
        str(old.id),
        str(new.id),
    }
    assert ids("--since", (timezone.now() + timedelta(days=1)).date().isoformat()) == set()


def test_list_only_workflows_unless_all_kinds():
    parent = started(forking)
    assert parent.status == ExecutionStatus.COMPLETED
    branches = WorkflowExecution.objects.filter(kind=ExecutionKind.BRANCH)
    assert branches.count() == 2

    assert [row["id"] for row in json.loads(run("durable_list", "--json")[0])] == [str(parent.id)]
    every = json.loads(run("durable_list", "--json", "--all-kinds")[0])
    assert {row["kind"] for row in every} == {"workflow", "branch"}
    assert len(every) == 3
    out, _ = run("durable_list", "--all-kinds")
    assert out.splitlines()[0].split()[-1] == "kind"


def test_list_refuses_bad_filters():
    assert "Unknown status 'done'" in refused("durable_list", "--status", "done")
    assert "pending" in refused("durable_list", "--status", "done")  # lists the valid ones
    assert "is not a duration" in refused("durable_list", "--since", "7x")
    assert "neither an age" in refused("durable_list", "--since", "last tuesday")
    assert "neither an age" in refused("durable_list", "--since", "2024-13-45")
    assert "--limit" in refused("durable_list", "--limit", "0")


def test_list_with_nothing_to_show_prints_the_header():
    out, _ = run("durable_list")
    assert out.splitlines()[0].split()[0] == "id"
    assert table_lines(out) == []
    assert json.loads(run("durable_list", "--json")[0]) == []


# -- durable_run (in process, without a worker) --------------------------------------------


def test_run_starts_the_workflow_and_prints_its_id():
    out, _ = run("durable_run", "cmd.greeting", "--input", '{"name": "bo"}')

    execution = WorkflowExecution.objects.get(id=uuid.UUID(out.strip()))
    assert execution.workflow_name == "cmd.greeting"
    assert execution.input == {"name": "bo"}
    assert execution.status == ExecutionStatus.PENDING
    run_until_idle()
    execution.refresh_from_db()
    assert execution.context == {"name": "bo", "greeting": "hi bo"}


def test_run_options_queue_priority_idempotency_and_input_file(tmp_path):
    source = tmp_path / "input.json"
    source.write_text('{"name": "cy", "n": 3}')
    out, _ = run(
        "durable_run",
        "cmd.greeting",
        "--input-file",
        str(source),
        "--queue",
        "slow",
        "--priority",
        "7",
        "--idempotency-key",
        "order-1",
        "--json",
    )
    eid = json.loads(out)["id"]
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.queue, execution.priority, execution.input) == (
        "slow",
        7,
        {"name": "cy", "n": 3},
    )
    again, _ = run("durable_run", "cmd.greeting", "--idempotency-key", "order-1")
    assert again.strip() == eid
    assert WorkflowExecution.objects.count() == 1


def test_run_without_input_starts_with_an_empty_dict():
    out, _ = run("durable_run", "cmd.greeting")
    assert WorkflowExecution.objects.get(id=out.strip()).input == {}


def test_run_refuses_bad_input_and_unknown_workflows(tmp_path):
    assert "No workflow named 'cmd.nope'" in refused("durable_run", "cmd.nope")
    assert "--input is not valid JSON" in refused("durable_run", "cmd.greeting", "--input", "{x")
    assert "must be a JSON object, not list" in refused(
        "durable_run", "cmd.greeting", "--input", "[1, 2]"
    )
    assert "must be a JSON object, not str" in refused(
        "durable_run", "cmd.greeting", "--input", '"text"'
    )
    assert "Cannot read" in refused(
        "durable_run", "cmd.greeting", "--input-file", str(tmp_path / "missing.json")
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "is not valid JSON" in refused("durable_run", "cmd.greeting", "--input-file", str(bad))
    assert "is not a duration" in refused("durable_run", "cmd.greeting", "--timeout", "soon")
    assert "priority must fit" in refused("durable_run", "cmd.greeting", "--priority", str(2**40))
    assert not WorkflowExecution.objects.exists()  # nothing was started


def test_run_refuses_input_and_input_file_together(tmp_path):
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("durable_run", "cmd.greeting", "--input", "{}", "--input-file", "x.json")


def test_run_wait_times_out_when_no_worker_runs_it():
    with pytest.raises(CommandError) as raised:
        run("durable_run", "cmd.greeting", "--wait", "--timeout", "0.3s")
    assert raised.value.returncode == 1
    assert "is still pending after 0.3s" in str(raised.value)
    assert "Is a durable_worker running?" in str(raised.value)
    assert WorkflowExecution.objects.get().status == ExecutionStatus.PENDING


# -- durable_cancel, durable_resume, durable_retry -----------------------------------------


def test_cancel_by_prefix_with_a_reason():
    execution = started(paying)

    out, _ = run("durable_cancel", str(execution.id)[:8], "--reason", "customer left")

    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert execution.cancel_reason == "customer left"
    assert out.strip() == f"{execution.id} cmd.paying: cancelled"


def test_cancel_with_compensate_runs_the_compensations():
    execution = started(paying)

    out, _ = run("durable_cancel", str(execution.id), "--compensate")
    assert out.strip().endswith(": compensating")
    run_until_idle()

    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPENSATED
    assert execution.compensation_results[0]["result"]["status"] == "completed"


def test_cancel_refuses_finished_unknown_and_ambiguous_ids():
    done = started(greeting)
    assert "is completed, so it cannot be cancelled" in refused("durable_cancel", str(done.id))
    assert "No execution id starts with 'ffffffff'" in refused("durable_cancel", "ffffffff")
    assert "is not an execution id" in refused("durable_cancel", "not-an-id")
    assert "is not an execution id" in refused("durable_cancel", "abc")  # too short

    one = row_with_id("abcd1234-0000-4000-8000-000000000001")
    two = row_with_id("abcd1234-0000-4000-8000-000000000002", "cmd.paying")
    message = refused("durable_cancel", "abcd1234")
    assert "'abcd1234' is ambiguous" in message
    assert str(one.id) in message and str(two.id) in message
    assert "cmd.paying" in message
    assert refused("durable_cancel", "ABCD-1234") == message.replace("'abcd1234'", "'ABCD-1234'")

    run("durable_cancel", "abcd1234-0000-4000-8000-000000000002")  # the full id is unique
    two.refresh_from_db()
    assert two.status == ExecutionStatus.CANCELLED
    one.refresh_from_db()
    assert one.status == ExecutionStatus.PENDING


def test_resume_runs_a_failed_execution_again_from_its_step():
    execution = started(failing)
    assert execution.status == ExecutionStatus.FAILED

    out, _ = run("durable_resume", str(execution.id)[:6])

    assert out.strip() == f"{execution.id} cmd.failing: pending (from step broken)"
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.PENDING
    assert execution.error is None


def test_resume_refuses_what_did_not_fail_or_was_not_cancelled():
    done = started(greeting)
    waiting = started(paying)
    assert "only failed or cancelled executions can be resumed" in refused(
        "durable_resume", str(done.id)
    )
    assert "is waiting" in refused("durable_resume", str(waiting.id))
    assert "No execution id starts with" in refused("durable_resume", "0000aaaa")


def test_retry_starts_a_new_execution_with_the_same_input_and_queue():
    execution = started(failing, {"order": 7}, queue="slow", priority=3)

    out, _ = run("durable_retry", str(execution.id)[:8])

    copy = WorkflowExecution.objects.get(id=out.strip())
    assert copy.id != execution.id
    assert (copy.workflow_name, copy.input, copy.queue, copy.priority) == (
        "cmd.failing",
        {"order": 7},
        "slow",
        3,
    )
    assert copy.status == ExecutionStatus.PENDING
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED  # the old one is left as it was


def test_retry_refuses_active_executions_and_branch_rows():
    waiting = started(paying)
    assert "is still waiting; cancel it first" in refused("durable_retry", str(waiting.id))
    started(forking)
    branch = WorkflowExecution.objects.filter(kind=ExecutionKind.BRANCH).first()
    assert "is a branch of" in refused("durable_retry", str(branch.id))
    assert WorkflowExecution.objects.filter(kind=ExecutionKind.WORKFLOW).count() == 2


def test_retry_of_a_workflow_no_longer_defined_is_refused():
    gone = row_with_id(
        "dead0000-0000-4000-8000-000000000001",
        "cmd.removed",
        status=ExecutionStatus.FAILED,
    )
    assert "No workflow named 'cmd.removed'" in refused("durable_retry", str(gone.id))


# -- durable_pending ---------------------------------------------------------------------


def test_pending_lists_inputs_by_default(frozen):
    asked = started(approving)
    started(noting)
    started(paying)  # an event wait, not an input

    out, _ = run("durable_pending")
    rows = table_lines(out)
    assert out.splitlines()[0].split() == [
        "id",
        "workflow",
        "name",
        "type",
        "prompt",
        "age",
        "timeout",
    ]
    assert len(rows) == 2
    first = rows[0].split()
    assert first[:5] == [str(asked.id)[:8], "cmd.approving", "boss", "approval", "Ship"]
    assert rows[0].endswith("0ms  in 1d 0h")
    assert rows[1].split()[1:4] == ["cmd.noting", "note", "free_text"]
    assert rows[1].rstrip().endswith("-")  # no timeout
    assert run("durable_pending", "--inputs")[0] == out


def test_pending_inputs_as_json_and_by_workflow():
    asked = started(approving)
    started(noting)

    listed = json.loads(run("durable_pending", "--workflow", "cmd.approving", "--json")[0])

    assert len(listed) == 1
    assert listed[0]["execution_id"] == str(asked.id)
    assert listed[0]["name"] == "boss"
    assert listed[0]["type"] == "approval"
    assert listed[0]["prompt"] == "Ship it?"
    assert listed[0]["timeout_at"] is not None
    assert json.loads(run("durable_pending", "--workflow", "cmd.nothing", "--json")[0]) == []


def test_pending_events_lists_open_event_waits():
    paid = started(paying)
    any_of = started(either)
    started(approving)  # an input, not an event wait

    out, _ = run("durable_pending", "--events")
    rows = table_lines(out)
    assert out.splitlines()[0].split() == [
        "id",
        "workflow",
        "step",
        "kind",
        "events",
        "age",
        "timeout",
    ]
    assert [row.split()[0] for row in rows] == [str(paid.id)[:8], str(any_of.id)[:8]]
    assert rows[0].split()[1:5] == ["cmd.paying", "hear", "event", "paid"]
    assert "in 1h 59m" in rows[0] or "in 2h 00m" in rows[0]
    assert "shipped, lost" in rows[1]

    listed = json.loads(run("durable_pending", "--events", "--workflow", "cmd.either", "--json")[0])
    assert [(row["execution_id"], row["kind"], row["events"]) for row in listed] == [
        (str(any_of.id), "any", ["shipped", "lost"])
    ]
    assert listed[0]["timeout_at"] is None


def test_pending_refuses_inputs_and_events_together():
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("durable_pending", "--inputs", "--events")


# -- durable_provide_input -----------------------------------------------------------------


def test_provide_input_answers_and_the_step_resumes():
    execution = started(approving)

    out, _ = run(
        "durable_provide_input", str(execution.id)[:8], "boss", "approved", "--responded-by", "ann"
    )

    assert out.strip() == f"Answered 'boss' of {execution.id}: \"approved\""
    pending = PendingInput.objects.get(execution=execution)
    assert (pending.status, pending.response, pending.responded_by) == (
        InputStatus.COMPLETED,
        "approved",
        "ann",
    )
    run_until_idle()
    execution.refresh_from_db()
    assert execution.context == {"decision": "approved"}


def test_provide_input_parses_json_data_and_reads_json_files(tmp_path):
    form = started(filling)
    run("durable_provide_input", str(form.id), "details", '{"amount": 12.5}')
    run_until_idle()
    form.refresh_from_db()
    assert form.context["form"] == {"amount": 12.5}

    text = started(noting)
    answer = tmp_path / "answer.json"
    answer.write_text('"because"')
    run("durable_provide_input", str(text.id), "note", "--json-file", str(answer))
    run_until_idle()
    text.refresh_from_db()
    assert text.context["note"] == "because"


def test_provide_input_refuses_bad_answers_and_names(tmp_path):
    execution = started(approving)
    eid = str(execution.id)
    assert "Invalid JSON" in refused("durable_provide_input", eid, "boss", '{"a":')
    assert "expects 'approved' or 'rejected'" in refused(
        "durable_provide_input", eid, "boss", "maybe"
    )
    assert "no pending input named 'other'" in refused("durable_provide_input", eid, "other", "x")
    assert "not both" in refused(
        "durable_provide_input", eid, "boss", "approved", "--json-file", str(tmp_path / "a")
    )
    assert "Give the value" in refused("durable_provide_input", eid, "boss")
    assert PendingInput.objects.get().status == InputStatus.PENDING  # nothing changed

    done = started(greeting)
    assert "is completed, so it cannot receive input" in refused(
        "durable_provide_input", str(done.id), "boss", "approved"
    )


# -- durable_send_event --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (['{"amount": 40}'], {"amount": 40}),
        (["40"], 40),
        (["paid in cash"], "paid in cash"),
        (["null"], None),
        ([], None),
    ],
)
def test_send_event_delivers_the_payload(payload, expected):
    execution = started(paying)

    out, _ = run("durable_send_event", str(execution.id)[:8], "paid", *payload)

    assert out.strip() == f"Sent 'paid' to {execution.id}."
    run_until_idle()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.context["heard"] == expected


def test_send_event_reads_the_payload_from_a_json_file(tmp_path):
    execution = started(either)
    payload = tmp_path / "payload.json"
    payload.write_text('{"carrier": "ups"}')

    run("durable_send_event", str(execution.id), "shipped", "--json-file", str(payload))
    run_until_idle()

    execution.refresh_from_db()
    assert execution.context["got"] == ["shipped", {"carrier": "ups"}]


def test_send_event_refuses_finished_executions_and_bad_payloads():
    done = started(greeting)
    assert "is completed, so it cannot receive events" in refused(
        "durable_send_event", str(done.id), "paid"
    )
    waiting = started(paying)
    assert "Invalid JSON" in refused("durable_send_event", str(waiting.id), "paid", "[1,")
    assert "No execution id starts with" in refused("durable_send_event", "1234abcd", "paid")


# -- durable_cancel_wait -------------------------------------------------------------------


def test_cancel_wait_withdraws_an_event_wait():
    execution = started(paying)

    out, _ = run("durable_cancel_wait", str(execution.id)[:8], "paid", "--reason", "no money")

    assert out.strip() == f"Cancelled the wait for 'paid' of {execution.id}."
    run_until_idle()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.context["withdrawn"] == "no money"


def test_cancel_wait_withdraws_a_pending_input_with_the_default_reason():
    execution = started(approving)

    run("durable_cancel_wait", str(execution.id), "boss")
    run_until_idle()

    execution.refresh_from_db()
    assert execution.context == {"decision": "withdrawn: cancelled"}


def test_cancel_wait_refuses_what_is_not_waited_on():
    execution = started(paying)
    assert "no open event wait or pending input named 'lost'" in refused(
        "durable_cancel_wait", str(execution.id), "lost"
    )
    done = started(greeting)
    assert "is completed" in refused("durable_cancel_wait", str(done.id), "paid")


# -- real processes: exit codes, one-line errors, durable_run --wait with a worker -----------


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert text in result.stderr


@pytest.mark.django_db(transaction=True)
def test_exit_codes_of_real_processes():
    done = durable.start("tests.hello", {})
    run_until_idle()
    waiting = started(paying)

    assert_one_line_error(
        manage("durable_cancel", str(done)[:8]), 2, "is completed, so it cannot be cancelled"
    )
    assert_one_line_error(manage("durable_cancel", "feedbeef"), 2, "No execution id starts with")
    assert_one_line_error(manage("durable_run", "cmd.nowhere"), 2, "No workflow named")
    assert_one_line_error(
        manage("durable_run", "tests.hello", "--input", "{oops"), 2, "not valid JSON"
    )
    assert_one_line_error(manage("durable_list", "--status", "bogus"), 2, "Unknown status")
    assert_one_line_error(manage("durable_list", "--since", "3 fortnights"), 2, "is not")
    assert_one_line_error(manage("durable_resume", str(done)), 2, "only failed or cancelled")
    assert_one_line_error(
        manage("durable_provide_input", str(waiting.id), "boss", "approved"),
        2,
        "no pending input named 'boss'",
    )
    usage = manage("durable_pending", "--inputs", "--events")
    assert usage.returncode == 2 and "not allowed with argument" in usage.stderr

    cancelled = manage("durable_cancel", str(waiting.id), "--reason", "test")
    assert cancelled.returncode == 0, cancelled
    assert cancelled.stdout.strip() == f"{waiting.id} cmd.paying: cancelled"
    listed = manage("durable_list", "--json")
    assert listed.returncode == 0, listed
    assert {row["id"] for row in json.loads(listed.stdout)} == {str(done), str(waiting.id)}


@pytest.mark.django_db(transaction=True)
def test_ambiguous_prefix_exits_2_listing_the_candidates():
    row_with_id("beef0000-0000-4000-8000-000000000001", "tests.hello")
    row_with_id("beef0000-0000-4000-8000-000000000002", "tests.hello")

    result = manage("durable_cancel", "beef")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'beef' is ambiguous" in result.stderr
    assert "beef0000-0000-4000-8000-000000000001" in result.stderr
    assert "beef0000-0000-4000-8000-000000000002" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_run_wait_with_a_worker_prints_the_context_or_the_error(workers):
    workers.start()

    result = manage("durable_run", "tests.hello", "--input", '{"name": "ada"}', "--wait")
    assert result.returncode == 0, (result, workers.report())
    assert json.loads(result.stdout) == {"name": "ada", "greeting": "hello ada"}
    assert "Traceback" not in result.stderr

    result = manage("durable_run", "tests.hello", "--wait", "--json", "--timeout", "30s")
    assert result.returncode == 0, (result, workers.report())
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "completed"
    assert outcome["context"] == {"greeting": "hello world"}
    assert WorkflowExecution.objects.get(id=outcome["id"]).status == ExecutionStatus.COMPLETED

    result = manage("durable_run", "signals.retried", "--wait", "--timeout", "30s")
    assert result.returncode == 1, (result, workers.report())
    assert "failed: RuntimeError: always" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""

    result = manage("durable_run", "signals.doomed", "--wait", "--json", "--timeout", "30s")
    assert result.returncode == 1, (result, workers.report())
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "compensated"
    assert outcome["error"] == "RuntimeError: always"
    assert "compensated: RuntimeError: always" in result.stderr
