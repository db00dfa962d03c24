"""insights: status(), flow_analytics(), introspect()/describe(), mermaid(), to_text(),
on both databases, with workflows run in-process on a frozen engine clock."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import django_durable as durable
from django_durable import (
    ExecutionNotFound,
    NonRetryableError,
    UnknownWorkflow,
    diagram,
    foreach,
    insights,
    parallel,
    step,
    workflow,
)
from django_durable.helpers import assign, days, hours, minutes, seconds
from django_durable.models import (
    ExecutionKind,
    ExecutionStatus,
    StepExecution,
    Worker,
    WorkflowExecution,
)
from django_durable.orchestration import call_workflow
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import sleep, wait_for_any, wait_for_approval, wait_for_event

pytestmark = pytest.mark.django_db
NOON = "2024-03-06 12:00:00Z"


# -- workflows ---------------------------------------------------------------------------


def receive(ctx):
    return assign(ctx, "received", True)


def await_payment(ctx):
    return assign(ctx, "payment", wait_for_event("paid", timeout=days(7)))


def ask_manager(ctx):
    answer = wait_for_approval(
        "manager", prompt="Approve 120 EUR for a train ticket?", timeout=days(2)
    )
    return assign(ctx, "approval", answer)


def nap(ctx):
    sleep(hours(3))


def await_go(ctx):
    return assign(ctx, "go", wait_for_event("go"))


def call_child(ctx):
    return assign(ctx, "child", call_workflow("tests.insights.child", {}, timeout=days(1)))


def quick_check(ctx):
    return {"quick": True}


def await_signature(ctx):
    return {"signed": wait_for_any(["signed", "refused"])}


def explode(ctx):
    raise NonRetryableError("card declined")


def ship(ctx):
    return assign(ctx, "shipped", True)


payment = workflow("tests.insights.payment", [receive, await_payment, ship])
approval = workflow("tests.insights.approval", [receive, ask_manager])
napping = workflow("tests.insights.napping", [receive, nap, ship])
child = workflow("tests.insights.child", [await_go])
parent = workflow("tests.insights.parent", [receive, call_child])
checks = workflow(
    "tests.insights.checks", [receive, parallel(quick_check, await_signature, name="checks"), ship]
)
failing = workflow("tests.insights.failing", [receive, explode, ship])
simple = workflow("tests.insights.simple", [receive, ship])


def started(definition, input=None):
    execution_id = durable.start(definition, input or {})
    run_until_idle()
    return execution_id


# -- introspect --------------------------------------------------------------------------


def test_introspect_an_event_wait_with_its_timeout(frozen):
    execution_id = started(payment)
    text = insights.introspect(execution_id)
    assert f"Execution {execution_id}\n" in text
    assert "Workflow: 'tests.insights.payment' (version 1)" in text
    assert "Status: waiting" in text
    assert "Current step: 'await_payment' (attempt 1)" in text
    assert "Why it is not finished:" in text
    assert (
        f"- It waits for event 'paid', since {NOON}, until 2024-03-13 12:00:00Z (timeout)." in text
    )
    assert "Last error: none" in text
    assert f"Completed steps (1):\n- receive: {NOON} (0 ms)" in text


def test_introspect_accepts_an_execution_object_and_a_string_id(frozen):
    execution_id = started(payment)
    execution = WorkflowExecution.objects.get(id=execution_id)
    assert insights.introspect(execution) == insights.introspect(str(execution_id))


def test_introspect_an_input_shows_its_prompt(frozen):
    execution_id = started(approval)
    text = insights.introspect(execution_id)
    assert (
        f"- It waits for input 'manager' (approval), asked {NOON}, "
        "until 2024-03-08 12:00:00Z (timeout)." in text
    )
    assert '    Prompt: "Approve 120 EUR for a train ticket?"' in text


def test_introspect_a_sleep_shows_its_wake_up_time(frozen):
    execution_id = started(napping)
    advance_clock(minutes(10))
    text = insights.introspect(execution_id)
    assert f"- It sleeps until 2024-03-06 15:00:00Z (since {NOON})." in text


def test_introspect_a_child_workflow(frozen):
    execution_id = started(parent)
    kid = WorkflowExecution.objects.get(parent_id=execution_id)
    text = insights.introspect(execution_id)
    assert (
        f"- It waits for child workflow {kid.id} ('tests.insights.child', waiting, at step "
        f"'await_go'), since {NOON}, until 2024-03-07 12:00:00Z (timeout)." in text
    )
    kid_text = insights.introspect(kid.id)
    assert f"Child of: execution {execution_id}" in kid_text
    assert "- It waits for event 'go', since 2024-03-06 12:00:00Z, no timeout." in kid_text


def test_introspect_a_parallel_block_with_a_branch_still_open(frozen):
    execution_id = started(checks)
    text = insights.introspect(execution_id)
    assert "- It waits for its block 'checks': 1 branch still open:" in text
    assert f"    - branch 1 at step 'checks/await_signature': waiting, since {NOON}" in text
    assert (
        f"        - It waits for any of the events 'signed', 'refused', since {NOON}, "
        "no timeout." in text
    )
    branch = WorkflowExecution.objects.get(parent_id=execution_id, item_index=1)
    branch_text = insights.introspect(branch)
    assert f"Part of: branch 1 of execution {execution_id}" in branch_text

    durable.send_event(execution_id, "signed", "yes")
    run_until_idle()
    assert "It is finished: it completed at" in insights.introspect(execution_id)


def test_introspect_many_open_items_lists_the_first_ones():
    def work(ctx, item, index):
        wait_for_event(f"item-{index}")

    many = workflow(
        "tests.insights.many_items",
        [foreach("each", lambda ctx: list(range(15)), work, concurrency=20)],
    )
    execution_id = started(many)
    text = insights.introspect(execution_id)
    assert "- It waits for its block 'each': 15 items still open:" in text
    assert "    - item 0 at step 'each/work'" in text
    assert "    - ... and 5 more" in text
    assert "item 10 at step" not in text


def test_introspect_failed_shows_the_last_error(frozen):
    execution_id = started(failing)
    text = insights.introspect(execution_id)
    assert "Status: failed" in text
    assert (
        f"It is finished: it failed at {NOON} after 0 ms, in step 'explode'. Nothing runs "
        "until it is resumed (durable.resume)." in text
    )
    assert (
        f"Last error: NonRetryableError: card declined (step 'explode', attempt 1, {NOON})" in text
    )
    assert "Why it is not finished" not in text


def test_introspect_a_retry_that_is_due_later(frozen):
    attempts = []

    def flaky(ctx):
        attempts.append(1)
        raise ConnectionError("payment service down")

    retrying = workflow(
        "tests.insights.retrying",
        [
            step(
                flaky,
                retry=durable.Retry(max_attempts=3, backoff="constant", base=timedelta(minutes=1)),
            )
        ],
    )
    execution_id = started(retrying)
    text = insights.introspect(execution_id)
    assert "Status: pending" in text
    assert "- It will retry step 'flaky' (attempt 2) at 2024-03-06 12:01:00Z." in text
    assert "Last error: ConnectionError: payment service down (step 'flaky', attempt 1" in text


def test_introspect_completed(frozen):
    execution_id = started(simple)
    text = insights.introspect(execution_id)
    assert "Status: completed" in text
    assert f"It is finished: it completed at {NOON} after 0 ms. Nothing is left to do." in text
    assert "Completed steps (2):\n- receive: " in text
    assert "\n- ship: " in text


def test_introspect_pending_and_scheduled(frozen):
    ready = durable.start(simple, {})
    later = durable.start(simple, {}, scheduled_at=frozen + hours(1))
    assert (
        f"- It is ready to run step 'receive' since {NOON} and waits for a worker on "
        "queue 'default'." in insights.introspect(ready)
    )
    assert "- It is scheduled to start at 2024-03-06 13:00:00Z." in insights.introspect(later)


def test_introspect_an_unknown_id():
    with pytest.raises(ExecutionNotFound):
        insights.introspect(uuid.uuid4())
    with pytest.raises(ExecutionNotFound):
        insights.introspect("not-an-id")


# -- describe ----------------------------------------------------------------------------


def test_describe_is_json_with_steps_waits_inputs_children(frozen):
    execution_id = started(parent)
    report = insights.describe(execution_id)
    json.dumps(report)  # JSON-able as it is
    assert report["execution"]["id"] == str(execution_id)
    assert report["execution"]["status"] == "waiting"
    # The clock is frozen, so both attempts started at the same instant: no order.
    assert sorted((s["step"], s["status"]) for s in report["steps"]) == [
        ("call_child", "waiting"),
        ("receive", "completed"),
    ]
    [calling] = [s for s in report["steps"] if s["step"] == "call_child"]
    assert calling["child"] == report["children"][0]["id"]
    [wait] = report["waits"]
    assert wait["kind"] == "child" and wait["status"] == "waiting"
    assert wait["until"] == "2024-03-07T12:00:00+00:00"
    [kid] = report["children"]
    assert kid["workflow"] == "tests.insights.child"
    assert kid["started_by_step"] == "call_child"
    assert report["error"] is None

    approval_id = started(approval)
    [pending] = insights.describe(approval_id)["pending_inputs"]
    assert pending["name"] == "manager" and pending["prompt"].startswith("Approve 120")


def test_describe_lists_the_members_of_a_block(frozen):
    execution_id = started(checks)
    report = insights.describe(execution_id)
    assert [(m["kind"], m["index"], m["status"]) for m in report["open_members"]] == [
        ("branch", 1, "waiting")
    ]
    units = [(s["step"], s["unit"]) for s in report["steps"]]
    assert ("checks/quick_check", {"kind": "branch", "index": 0}) in units
    assert report["waits"][0]["unit"] == {"kind": "branch", "index": 1}


def test_describe_a_failed_execution_has_its_error(frozen):
    report = insights.describe(started(failing))
    assert report["error"]["type"] == "NonRetryableError"
    assert report["error"]["step"] == "explode"


# -- flow analytics --------------------------------------------------------------------


def check_order(ctx):
    if ctx.get("fail"):
        raise NonRetryableError("order invalid")


def pause(ctx):
    sleep(60)


funnel = workflow("tests.insights.funnel", [receive, pause, check_order, await_go, ship])


@pytest.fixture(params=["pivoted", "grouped"])
def counted(request, monkeypatch):
    """Both ways flow_analytics counts steps: a column per step, or GROUP BY step."""
    if request.param == "grouped":
        monkeypatch.setattr(insights._FlowQuery, "PIVOT_MAX", 0)
    return request.param


def test_flow_analytics_counts_a_funnel_exactly(frozen, counted):
    """Six executions: two fail at check_order, three complete after 90, 120 and 180 s,
    one still waits at await_go."""
    ids = [durable.start(funnel, {"fail": n < 2}) for n in range(6)]
    run_until_idle()  # all sleep in `pause`
    advance_clock(60)
    run_until_idle()  # 2 fail at check_order, 4 wait for "go" (reached at +60 s)
    for execution_id, after in ((ids[2], 30), (ids[3], 30), (ids[4], 60)):
        advance_clock(after)
        durable.send_event(execution_id, "go")
        run_until_idle()
    report = insights.flow_analytics("tests.insights.funnel")
    json.dumps(report)
    assert report["workflow"] == "tests.insights.funnel"
    assert report["version"] == "1"
    assert report["since"] is None
    assert report["executions"] == {
        "count": 6,
        "by_status": {"waiting": 1, "completed": 3, "failed": 2},
        "completed": 3,
        "duration_avg_seconds": 130.0,
        "duration_median_seconds": 120.0,
    }
    rows = [
        (
            s["step"],
            s["reached_count"],
            s["reached_percentage"],
            s["average_seconds_to_reach"],
            s["ends_here_count"],
            s["ends_here_percentage_of_all"],
            s["ends_here_percentage_of_reached"],
        )
        for s in report["steps"]
    ]
    assert rows == [
        ("receive", 6, 100.0, 0.0, 0, 0.0, 0.0),
        ("pause", 6, 100.0, 0.0, 0, 0.0, 0.0),
        ("check_order", 6, 100.0, 60.0, 2, 33.3, 33.3),
        ("await_go", 4, 66.7, 60.0, 1, 16.7, 25.0),
        ("ship", 3, 50.0, 130.0, 3, 50.0, 100.0),
    ]
    # An even number of completed durations: the median is the mean of the middle two.
    advance_clock(40)
    durable.send_event(ids[5], "go")
    run_until_idle()  # took 60 + 30 + 30 + 60 + 40 = 220 s
    stats = insights.flow_analytics(funnel)["executions"]
    assert stats["duration_median_seconds"] == 150.0  # (120 + 180) / 2
    assert stats["duration_avg_seconds"] == 152.5  # (90 + 120 + 180 + 220) / 4


def test_flow_analytics_since_and_members(frozen, counted):
    old = started(checks)
    durable.send_event(old, "signed")
    run_until_idle()
    advance_clock(days(2))
    recent = [started(checks) for _ in range(3)]
    durable.send_event(recent[0], "refused")
    run_until_idle()

    report = insights.flow_analytics(checks, since=days(1))
    assert report["since"] == (frozen + days(1)).isoformat()
    assert report["executions"]["count"] == 3
    by_step = {s["step"]: s for s in report["steps"]}
    assert list(by_step) == [
        "receive",
        "checks",
        "checks/quick_check",
        "checks/await_signature",
        "ship",
    ]
    assert by_step["checks"]["kind"] == "parallel"
    # Branch attempts count for the workflow execution they belong to.
    assert by_step["checks/await_signature"]["reached_count"] == 3
    assert by_step["ship"]["reached_count"] == 1
    assert by_step["ship"]["ends_here_count"] == 1
    assert insights.flow_analytics(checks)["executions"]["count"] == 4
    assert insights.flow_analytics(checks, since=frozen + days(5))["executions"]["count"] == 0


def test_flow_analytics_lists_steps_the_definition_no_longer_has(frozen):
    execution_id = started(simple)
    StepExecution.objects.create(
        execution_id=execution_id,
        step_name="old_name",
        status="completed",
        started_at=frozen + seconds(5),
        completed_at=frozen + seconds(6),
    )
    started(simple)
    steps = insights.flow_analytics(simple)["steps"]
    assert [(s["step"], s["reached_count"], s["ends_here_count"]) for s in steps] == [
        ("receive", 2, 0),
        ("ship", 2, 2),
        ("old_name", 1, 0),
    ]
    assert steps[2]["average_seconds_to_reach"] == 5.0


def test_flow_analytics_of_nothing_and_of_unknown_workflows():
    report = insights.flow_analytics(simple)
    assert report["executions"]["count"] == 0
    assert report["executions"]["duration_median_seconds"] is None
    assert [s["reached_percentage"] for s in report["steps"]] == [0.0, 0.0]
    with pytest.raises(UnknownWorkflow):
        insights.flow_analytics("tests.insights.nothing_like_it")


def test_flow_analytics_of_a_workflow_no_longer_registered():
    """Rows of a retired workflow are analysed in the order their steps were reached."""
    now = datetime(2024, 1, 1, tzinfo=UTC)
    for n in range(2):
        execution = WorkflowExecution.objects.create(
            workflow_name="tests.insights.retired",
            status=ExecutionStatus.COMPLETED,
            created_at=now,
            started_at=now,
            completed_at=now + seconds(10 + 10 * n),
        )
        for offset, name in ((5, "second"), (0, "first")):
            StepExecution.objects.create(
                execution=execution,
                step_name=name,
                status="completed",
                started_at=now + seconds(offset),
            )
    report = insights.flow_analytics("tests.insights.retired")
    assert report["version"] is None
    assert [(s["step"], s["average_seconds_to_reach"]) for s in report["steps"]] == [
        ("first", 0.0),
        ("second", 5.0),
    ]
    assert report["executions"]["duration_median_seconds"] == 15.0


def test_flow_analytics_to_text_is_a_funnel(frozen):
    ids = [durable.start(funnel, {"fail": n == 0}) for n in range(4)]
    run_until_idle()
    advance_clock(60)
    run_until_idle()
    for execution_id in ids[1:3]:
        durable.send_event(execution_id, "go")
    run_until_idle()
    text = insights.to_text(insights.flow_analytics(funnel))
    assert text.startswith("Workflow: 'tests.insights.funnel'\nVersion: '1'\n")
    assert "Total executions: 4" in text
    assert "Average duration: 1 min\nMedian duration: 1 min" in text
    bar = "█" * 15 + "░" * 15
    assert (
        f"ship         {bar}  50.0%  reached 2, avg time to reach +1 min, ends here 2 "
        "(50.0% of all, 100.0% of reached)" in text
    )


# -- status ------------------------------------------------------------------------------


def test_status_counts_by_workflow_and_shows_health(frozen):
    started(simple)
    started(failing)
    started(payment)
    Worker.objects.create(
        name="web-1",
        host="web",
        pid=1,
        queues=["default"],
        concurrency=4,
        started_at=frozen,
        last_seen_at=frozen,
    )
    report = insights.status()
    json.dumps(report)
    assert report["status"] == "healthy"
    assert report["database_connected"] is True
    assert [c["name"] for c in report["health"]["checks"]][0] == "database"
    by_name = {item["workflow"]: item for item in report["workflows"]}
    assert by_name["tests.insights.failing"]["executions"] == {
        "total": 1,
        "by_status": {"failed": 1},
    }
    assert by_name["tests.insights.failing"]["steps"] == {
        "total": 2,
        "by_status": {"completed": 1, "failed": 1},
    }
    assert by_name["tests.insights.payment"]["steps"]["by_status"] == {
        "completed": 1,
        "waiting": 1,
    }
    assert by_name["tests.insights.simple"]["first_activity"] == frozen.isoformat()
    assert by_name["tests.insights.simple"]["last_activity"] == frozen.isoformat()
    [default] = [queue for queue in report["queues"] if queue["name"] == "default"]
    assert default["workers"] == ["web-1"]
    assert default["executions"]["waiting"] == 1
    assert default["executions"]["ready"] == 0
    assert report["workers"][0]["live"] is True


def test_status_counts_workflow_rows_only_and_last_activity(frozen):
    execution_id = started(checks)
    advance_clock(hours(1))
    durable.send_event(execution_id, "signed")
    run_until_idle()
    [item] = [w for w in insights.status()["workflows"] if w["workflow"] == checks.name]
    assert item["executions"] == {"total": 1, "by_status": {"completed": 1}}
    assert item["first_activity"] == frozen.isoformat()
    assert item["last_activity"] == (frozen + hours(1)).isoformat()
    assert item["steps"]["total"] == StepExecution.objects.count()


def test_status_is_unhealthy_without_workers_while_work_waits(frozen):
    durable.start(simple, {})
    report = insights.status()
    assert report["status"] == "unhealthy"
    [default] = [queue for queue in report["queues"] if queue["name"] == "default"]
    assert default["executions"]["ready"] == 1
    assert default["executions"]["pending"] == 1
    assert default["workers"] == []
    text = insights.to_text(report)
    assert text.startswith("System Status: UNHEALTHY\nDatabase: Connected (default)\n")
    assert "✗ workers: No live worker" in text


def test_status_to_text(frozen):
    started(failing)
    text = insights.to_text(insights.status())
    assert "\nHEALTH CHECKS:\n----------\n✓ database: " in text
    assert "\nQUEUES (1 total):\n" in text
    assert "\nWORKFLOWS (1 total):\n----------\nName: 'tests.insights.failing'\n" in text
    assert "Executions (1):\n- failed: 1\n" in text
    assert f"First activity: {NOON}\nLast activity: {NOON}\n" in text
    assert "Step attempts (2):\n✓ completed: 1\n✗ failed: 1\n" in text


def test_status_reports_paused_queues_when_the_model_exists(frozen, monkeypatch):
    from django_durable import models

    paused = getattr(models, "PausedQueue", None)
    if paused is None:
        monkeypatch.delattr(models, "QueueState", raising=False)
        [queue] = insights.status()["queues"]
        assert queue["paused"] is None
        return
    paused.objects.create(name="emails", paused_at=frozen)
    queues = {queue["name"]: queue for queue in insights.status()["queues"]}
    assert queues["emails"]["paused"] is True
    assert queues["default"]["paused"] is False


def test_to_text_refuses_other_dicts():
    with pytest.raises(ValueError, match="status"):
        insights.to_text({"x": 1})


# -- mermaid -----------------------------------------------------------------------------


def test_mermaid_of_a_workflow_and_of_an_execution(frozen):
    assert insights.mermaid("tests.insights.payment") == diagram.to_mermaid(diagram.model(payment))
    assert insights.mermaid(payment) == insights.mermaid("tests.insights.payment")
    execution_id = started(payment)
    coloured = insights.mermaid(execution_id)
    assert "classDef s_completed" in coloured and "class n_receive" in coloured
    assert coloured == insights.mermaid(str(execution_id))
    assert coloured == insights.mermaid(WorkflowExecution.objects.get(id=execution_id))
    with pytest.raises(UnknownWorkflow):
        insights.mermaid("tests.insights.no_such_thing")
    with pytest.raises(ExecutionNotFound):
        insights.mermaid(uuid.uuid4())


def test_member_rows_are_not_counted_as_executions(frozen):
    started(checks)
    assert WorkflowExecution.objects.filter(kind=ExecutionKind.BRANCH).count() == 2
    report = insights.flow_analytics(checks)
    assert report["executions"]["count"] == 1


def test_introspect_running_compensating_and_held_rows(frozen):
    running = WorkflowExecution.objects.create(
        workflow_name="tests.insights.simple",
        status=ExecutionStatus.RUNNING,
        current_step="ship",
        attempt=2,
        locked_by="web-1:42",
        locked_until=frozen + minutes(5),
        created_at=frozen,
        started_at=frozen,
    )
    assert (
        "- It is running step 'ship' (attempt 2) on worker 'web-1:42', lease until "
        "2024-03-06 12:05:00Z." in insights.introspect(running)
    )
    undoing = WorkflowExecution.objects.create(
        workflow_name="tests.insights.simple",
        status=ExecutionStatus.COMPENSATING,
        current_step="ship",
        compensation_plan=[{"step": "receive"}, {"step": "ship"}],
        compensation_results=[{"step": "ship", "compensation": "unship", "result": {}}],
        created_at=frozen,
    )
    assert "undoing its completed steps: 1 of 2 compensations done" in insights.introspect(undoing)
    held = WorkflowExecution.objects.create(
        workflow_name="tests.insights.simple",
        kind=ExecutionKind.ITEM,
        item_index=12,
        parent=undoing,
        root=undoing,
        created_at=frozen,
    )
    text = insights.introspect(held)
    assert f"Part of: item 12 of execution {undoing.id}" in text
    assert "- It is held: its foreach runs at most `concurrency` items at once." in text
