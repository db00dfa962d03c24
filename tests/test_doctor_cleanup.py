"""durable_doctor (what will not put itself right, and --fix for what is safe) and
durable_cleanup (old finished trees, in batches).

Stale states are crafted by writing rows directly only where they stand for a crash
(a worker that died holding a lease, a lost timer, a lost wait); everything else runs
through the engine.
"""

import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_durable import (
    call_workflow,
    claims,
    cleanup,
    clock,
    doctor,
    events,
    executions,
    foreach,
    health,
    inputs,
    schedules,
    start_workflow,
    starting,
    step,
    workflow,
)
from django_durable.models import (
    Event,
    PendingInput,
    Schedule,
    StepExecution,
    Wait,
    Worker,
    WorkflowExecution,
)
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import sleep, wait_for_approval, wait_for_event
from tests.calls import calls, count_call
from tests.worker_support import manage

pytestmark = pytest.mark.django_db


# -- workflows -----------------------------------------------------------------------------


def first(ctx):
    count_call("first")
    return {**ctx, "first": True}


def second(ctx):
    count_call("second")
    return {**ctx, "second": True}


def waits_for_paid(ctx):
    return {**ctx, "paid": wait_for_event("paid")}


def naps(ctx):
    sleep(timedelta(hours=1))
    return {**ctx, "napped": True}


def asks_ok(ctx):
    return {**ctx, "ok": wait_for_approval("ok")}


def undo_booking(ctx):
    count_call("undo_booking")


@step(compensate=undo_booking)
def book(ctx):
    count_call("book")
    return {**ctx, "booked": True}


def calls_waiter(ctx):
    return {**ctx, "child": call_workflow(waiter)}


def starts_quick_then_waits(ctx):
    start_workflow(simple)
    return {**ctx, "go": wait_for_event("go")}


def starts_waiter(ctx):
    return {**ctx, "child": str(start_workflow(waiter))}


def items(ctx):
    return list(range(ctx.get("n", 3)))


def handle_item(ctx, item, index):
    count_call("item")
    return {"double": item * 2}


def item_waits(ctx, item, index):
    return {"paid": wait_for_event("paid")}


def always_fails(ctx):
    raise RuntimeError("boom")


simple = workflow("tests.doctor.simple", [first, second])
waiter = workflow("tests.doctor.waiter", [waits_for_paid, second])
napper = workflow("tests.doctor.napper", [naps, second])
asker = workflow("tests.doctor.asker", [asks_ok, second])
booking = workflow("tests.doctor.booking", [book, waits_for_paid, second])
parent = workflow("tests.doctor.parent", [calls_waiter, second])
keeps_child = workflow("tests.doctor.keeps_child", [starts_quick_then_waits, second])
launcher = workflow("tests.doctor.launcher", [starts_waiter, second])
fan_out = workflow("tests.doctor.fan_out", [foreach("each", items, handle_item), second])
fan_wait = workflow("tests.doctor.fan_wait", [foreach("each", items, item_waits), second])
everything = workflow("tests.doctor.everything", [book, asks_ok, waits_for_paid, second])
failing = workflow("tests.doctor.failing", [always_fails])


def load(execution_id) -> WorkflowExecution:
    return WorkflowExecution.objects.get(id=execution_id)


def doctor_command(*args) -> tuple[int, str]:
    """Run durable_doctor; returns (exit code, stdout)."""
    out = io.StringIO()
    try:
        call_command("durable_doctor", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def checks(findings) -> list[tuple[str, str]]:
    return [(finding.check, finding.subject) for finding in findings]


def started_and_parked(definition, input=None):
    eid = starting.start(definition, input or {})
    run_until_idle()
    assert load(eid).status == "waiting"
    return eid


def held_by_dead_worker(definition, worker="dead-worker"):
    """An execution a worker claimed and then died holding (it never ran the step)."""
    eid = starting.start(definition, {})
    (claimed,) = claims.claim(worker, None, 1)
    assert claimed.id == eid and load(eid).locked_by == worker
    return eid


# -- durable_doctor ------------------------------------------------------------------------


def test_healthy_waits_of_every_kind_are_not_findings():
    """Parked on an event, a timer, an input, a child, open items: all can be woken."""
    started_and_parked(waiter)
    started_and_parked(napper)
    started_and_parked(asker)
    started_and_parked(parent)
    started_and_parked(fan_wait)
    started_and_parked(keeps_child)  # its quick child completed; it waits for an event
    done = starting.start(simple, {})
    run_until_idle()
    assert load(done).status == "completed"

    assert doctor.diagnose() == []
    assert doctor_command() == (0, "No problems found.\n")


def test_a_stale_lease_is_found_given_back_and_the_execution_completes():
    eid = held_by_dead_worker(simple)
    # Within the grace a live worker's timers would reclaim it: not a finding yet.
    advance_clock(claims.lease_duration() + timedelta(seconds=1))
    assert doctor.diagnose() == []
    advance_clock(health.live_window())

    code, out = doctor_command()
    assert code == 1
    assert f"{eid}: Execution tests.doctor.simple (running) is held by dead-worker" in out
    assert "--fix gives it back" in out
    assert "1 problem(s) remain (stale leases: 1)" in out
    assert load(eid).locked_by == "dead-worker"  # reporting changes nothing

    code, out = doctor_command("--fix")
    assert code == 0, out
    assert f"Gave back execution {eid} (tests.doctor.simple), held by dead-worker" in out
    assert "Nothing left to fix." in out
    execution = load(eid)
    assert (execution.status, execution.locked_by, execution.ready) == ("pending", None, True)

    run_until_idle()
    assert load(eid).status == "completed"
    assert calls["first"] == calls["second"] == 1


def test_a_silent_worker_is_removed_after_its_leases_are_given_back():
    eid = held_by_dead_worker(simple, worker="gone-worker")
    long_ago = clock.now() - timedelta(minutes=10)
    Worker.objects.create(
        name="gone-worker",
        host="elsewhere",
        pid=4242,
        queues=["default"],
        concurrency=1,
        started_at=long_ago,
        last_seen_at=long_ago,
    )
    live = Worker.objects.create(
        name="live-worker",
        host="here",
        pid=1,
        queues=["default"],
        concurrency=1,
        started_at=long_ago,
        last_seen_at=clock.now(),
    )

    found = doctor.diagnose()
    # Its lease has not lapsed: only the worker is a finding.
    assert checks(found) == [("silent_worker", "gone-worker")]
    assert found[0].fixable

    code, out = doctor_command("--fix")
    assert code == 0, out
    assert "Worker gone-worker was silent: gave back 1 execution(s) it held, removed its row." in (
        out
    )
    assert list(Worker.objects.values_list("name", flat=True)) == [live.name]
    assert load(eid).locked_by is None

    run_until_idle()
    assert load(eid).status == "completed"


def test_a_stuck_compensation_is_made_runnable_and_the_undoing_runs():
    eid = started_and_parked(booking)
    executions.cancel(eid, "changed my mind", compensate=True)
    # A lost timer: compensating, but neither ready nor due.
    WorkflowExecution.objects.filter(id=eid).update(ready=False, run_at=None)
    run_until_idle()
    assert load(eid).status == "compensating"
    assert calls["undo_booking"] == 0

    (finding,) = doctor.diagnose()
    assert (finding.check, finding.subject, finding.fixable) == (
        "stuck_compensation",
        str(eid),
        True,
    )
    assert "neither held nor ready and has no timer" in finding.detail

    actions = doctor.repair([finding])
    assert actions == [
        f"Made the compensation of execution {eid} (tests.doctor.booking) runnable again on "
        "queue default."
    ]
    assert doctor.diagnose() == []
    run_until_idle()
    execution = load(eid)
    assert execution.status == "compensated"
    assert calls["undo_booking"] == 1


def test_a_wait_nothing_can_wake_is_reported_with_a_hint_and_left_alone():
    eid = started_and_parked(waiter)
    # A lost wait: the execution is parked, but no wait of it is open any more.
    Wait.objects.filter(execution_id=eid).update(status="cancelled")

    code, out = doctor_command("--fix")
    assert code == 1
    assert "Waits nothing can wake (1):" in out
    assert f"{eid}: Execution tests.doctor.waiter (waiting) is parked at step waits_for_paid" in out
    assert f"durable_cancel {eid}" in out and f"durable_resume {eid}" in out
    assert "Fixed: nothing." in out
    assert "1 problem(s) remain (waits nothing can wake: 1)" in out
    assert load(eid).status == "waiting"  # not changed

    # Following the hint: cancel, resume, and the step waits again (and can be woken).
    executions.cancel(eid, "parked forever")
    executions.resume(eid)
    run_until_idle()
    assert doctor.diagnose() == []
    events.send_event(eid, "paid", 10)
    run_until_idle()
    assert load(eid).status == "completed"
    assert load(eid).context["paid"] == 10


def test_a_sleep_whose_timer_was_lost_is_reported():
    eid = started_and_parked(napper)
    WorkflowExecution.objects.filter(id=eid).update(run_at=None)
    advance_clock(timedelta(hours=2))
    (finding,) = doctor.diagnose()
    assert finding.check == "unwakeable_wait"
    assert "its sleep was due 60 min ago but no timer is set" in finding.detail


def test_an_item_nothing_can_wake_points_at_its_workflow():
    eid = started_and_parked(fan_wait, {"n": 2})
    item = WorkflowExecution.objects.get(root_id=eid, kind="item", item_index=1)
    Wait.objects.filter(execution=item).update(status="cancelled")
    (finding,) = doctor.diagnose()
    assert (finding.check, finding.subject) == ("unwakeable_wait", str(item.id))
    assert f"It is an item of workflow {eid}" in finding.hint
    # Its workflow still has an open item: it can be woken, so it is not a finding.


def test_an_auto_disabled_schedule_is_reported_with_how_to_enable_it(settings):
    settings.DURABLE = {**settings.DURABLE, "SCHEDULE_AUTO_DISABLE_AFTER": 2}
    schedules.create_schedule("nightly-boom", failing, "0 3 * * *")
    for _ in range(2):
        schedules.trigger_schedule("nightly-boom")
        run_until_idle()
    assert Schedule.objects.get(name="nightly-boom").auto_disabled_at is not None

    code, out = doctor_command("--json")
    assert code == 1
    report = json.loads(out[: out.rindex("}") + 1])
    (finding,) = report["findings"]
    assert finding["check"] == "auto_disabled_schedule"
    assert finding["subject"] == "nightly-boom"
    assert "after 2 failed runs in a row; the last: RuntimeError: boom" in finding["detail"]
    assert "enable_schedule('nightly-boom')" in finding["hint"]
    assert report["fixed"] == [] and len(report["remaining"]) == 1

    schedules.enable_schedule("nightly-boom")
    assert doctor_command() == (0, "No problems found.\n")


def test_each_check_reads_at_most_its_limit():
    ids = [held_by_dead_worker(simple, worker=f"w{n}") for n in range(3)]
    advance_clock(claims.lease_duration() + health.live_window() + timedelta(seconds=1))
    report = doctor.diagnose(limit=2)
    assert len(report) == 2 and report.truncated == {"stale_lease"}
    doctor.repair(report)
    report = doctor.diagnose(limit=2)
    assert checks(report) == [("stale_lease", str(load(i).id)) for i in ids if load(i).locked_by]
    assert report.truncated == set()


def test_the_doctor_says_what_it_fixed_and_what_remains_as_json():
    parked = started_and_parked(waiter)
    Wait.objects.filter(execution_id=parked).update(status="cancelled")
    stale = held_by_dead_worker(simple)
    advance_clock(claims.lease_duration() + health.live_window() + timedelta(seconds=1))

    code, out = doctor_command("--fix", "--json")
    assert code == 1
    report = json.loads(out[: out.rindex("}") + 1])
    assert [(f["check"], f["subject"]) for f in report["findings"]] == [
        ("stale_lease", str(stale)),
        ("unwakeable_wait", str(parked)),
    ]
    assert report["fixed"] == [
        f"Gave back execution {stale} (tests.doctor.simple), held by dead-worker under a stale "
        "lease: it is pending and runnable again."
    ]
    assert [(f["check"], f["subject"]) for f in report["remaining"]] == [
        ("unwakeable_wait", str(parked))
    ]


# -- durable_cleanup -----------------------------------------------------------------------


def completed(definition=simple, input=None):
    eid = starting.start(definition, input or {})
    run_until_idle()
    assert load(eid).status == "completed", load(eid).error
    return eid


def cleanup_command(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("durable_cleanup", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def existing(ids) -> set:
    return {
        str(i) for i in WorkflowExecution.objects.filter(id__in=ids).values_list("id", flat=True)
    }


def test_cleanup_deletes_only_old_finished_trees():
    old_done = completed()
    old_failed = starting.start(failing, {})
    run_until_idle()
    assert load(old_failed).status == "failed"
    old_waiting = started_and_parked(waiter)
    advance_clock(timedelta(days=31))
    new_done = completed()
    ids = [old_done, old_failed, old_waiting, new_done]

    out, _ = cleanup_command("--older-than", "30d")
    assert out.startswith("Deleted 2 execution(s) (2 rows")
    assert existing(ids) == {str(old_waiting), str(new_done)}

    out, _ = cleanup_command("--older-than", "30d")
    assert out.startswith("Deleted 0 execution(s)")
    # The one still waiting goes on.
    events.send_event(old_waiting, "paid", 1)
    run_until_idle()
    assert load(old_waiting).status == "completed"


def test_cleanup_only_the_statuses_asked_for():
    done = completed()
    failed = starting.start(failing, {})
    run_until_idle()
    advance_clock(timedelta(days=2))
    assert cleanup.delete_finished(timedelta(days=1), statuses=["failed"]) == 1
    assert existing([done, failed]) == {str(done)}


def test_a_child_whose_parent_is_active_is_kept_and_goes_with_its_parent_later():
    parent_id = started_and_parked(keeps_child)
    (child,) = WorkflowExecution.objects.filter(parent_id=parent_id)
    assert (child.kind, child.status) == ("workflow", "completed")
    advance_clock(timedelta(days=31))

    assert cleanup.delete_finished(timedelta(days=30)) == 0
    assert existing([parent_id, child.id]) == {str(parent_id), str(child.id)}

    events.send_event(parent_id, "go", True)
    run_until_idle()
    assert load(parent_id).status == "completed"
    # The parent finished just now: its tree is kept until it is old too.
    assert cleanup.delete_finished(timedelta(days=30)) == 0
    advance_clock(timedelta(days=31))
    swept = cleanup.sweep(timedelta(days=30))
    assert (swept.executions, swept.rows) == (1, 2)
    assert existing([parent_id, child.id]) == set()


def test_a_finished_item_of_an_active_workflow_is_kept():
    eid = started_and_parked(fan_wait, {"n": 2})
    events.send_event(eid, "paid", 1)  # reaches one item's wait
    run_until_idle()
    rows = dict(WorkflowExecution.objects.filter(root_id=eid).values_list("item_index", "status"))
    assert rows == {None: "waiting", 0: "completed", 1: "waiting"}
    advance_clock(timedelta(days=31))

    assert cleanup.delete_finished(timedelta(days=30)) == 0
    assert WorkflowExecution.objects.filter(root_id=eid).count() == 3
    events.send_event(eid, "paid", 2)
    run_until_idle()
    assert load(eid).status == "completed"


def test_a_finished_parent_whose_child_still_runs_is_kept():
    parent_id = completed(launcher)
    child_id = uuid.UUID(load(parent_id).context["child"])
    assert load(child_id).status == "waiting"
    advance_clock(timedelta(days=31))

    out, _ = cleanup_command("--older-than", "30d")
    assert "Deleted 0 execution(s)" in out
    assert "kept 1 whose tree has an active or recently finished execution" in out
    assert existing([parent_id, child_id]) == {str(parent_id), str(child_id)}

    events.send_event(child_id, "paid", 1)
    run_until_idle()
    assert load(child_id).status == "completed"
    # The child finished now, so the tree is recent; later it all goes.
    assert cleanup.delete_finished(timedelta(days=30)) == 0
    advance_clock(timedelta(days=31))
    assert cleanup.delete_finished(timedelta(days=30)) == 1
    assert existing([parent_id, child_id]) == set()


def test_a_tree_with_items_and_a_called_child_goes_whole():
    fanned = completed(fan_out, {"n": 4})
    called = started_and_parked(parent)
    child_id = WorkflowExecution.objects.get(parent_id=called).id
    events.send_event(child_id, "paid", 1)
    run_until_idle()
    assert load(called).status == "completed"
    assert WorkflowExecution.objects.filter(root_id=fanned).count() == 5
    advance_clock(timedelta(days=31))

    swept = cleanup.sweep(timedelta(days=30))
    assert (swept.executions, swept.rows, swept.kept) == (2, 7, 0)
    assert WorkflowExecution.objects.count() == 0
    assert StepExecution.objects.count() == 0


def test_cleanup_removes_steps_waits_events_and_inputs():
    keep = started_and_parked(everything)
    inputs.provide_input(keep, "ok", True)
    run_until_idle()
    events.send_event(keep, "paid", 3)
    run_until_idle()
    assert load(keep).status == "completed"
    unconsumed = started_and_parked(waiter)
    events.send_event(unconsumed, "noise", 1)  # never consumed
    executions.cancel(unconsumed, "no longer needed")
    old = [keep, unconsumed]
    related = (StepExecution, Wait, Event, PendingInput)
    assert all(model.objects.filter(execution_id__in=old).exists() for model in related)
    advance_clock(timedelta(days=31))
    other = started_and_parked(asker)

    swept = cleanup.sweep(timedelta(days=30))
    assert swept.executions == 2
    for model in related:
        assert not model.objects.filter(execution_id__in=old).exists(), model.__name__
    assert swept.deleted["django_durable.Event"] == 2
    assert swept.deleted["django_durable.PendingInput"] == 1
    # What belongs to others stays.
    assert PendingInput.objects.filter(execution_id=other).exists()


def test_a_dry_run_counts_and_deletes_nothing():
    ids = [completed() for _ in range(3)]
    advance_clock(timedelta(days=31))
    out, err = cleanup_command("--older-than", "30d", "--dry-run")
    cutoff = clock.now() - timedelta(days=30)  # the command read the clock a moment ago
    said = re.fullmatch(
        r"Would delete 3 execution\(s\) \(3 rows with their branches, items and child "
        r"workflows\) that ended \(completed, failed, cancelled, compensated, "
        r"compensation_failed\) before (.+) UTC, in 1 batch\(es\)\. "
        r"Dry run: nothing was deleted\.\n",
        out,
    )
    assert said, out
    before = datetime.strptime(said[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert timedelta(0) <= cutoff - before < timedelta(seconds=5)
    assert "Counting (dry run): " in err
    assert existing(ids) == {str(i) for i in ids}
    assert cleanup.delete_finished(timedelta(days=30), dry_run=True) == 3
    assert existing(ids) == {str(i) for i in ids}


def test_cleanup_goes_in_batches_with_progress_lines():
    ids = [completed() for _ in range(25)]
    advance_clock(timedelta(days=31))
    out, err = cleanup_command("--older-than", "30d", "--batch-size", "10")
    assert "in 3 batch(es)" in out and out.startswith("Deleted 25 execution(s)")
    lines = err.splitlines()
    assert [line.split("] ")[1] for line in lines] == ["10/25 (40%)", "20/25 (80%)", "25/25 (100%)"]
    assert all(line.startswith("Deleting: [") for line in lines)
    assert "\r" not in err
    assert existing(ids) == set()


def test_cleanup_library_calls_back_per_batch():
    for _ in range(5):
        completed()
    advance_clock(timedelta(days=2))
    seen = []
    assert cleanup.delete_finished(timedelta(days=1), batch_size=2, on_batch=seen.append) == 5
    assert seen == [2, 2, 1]


def test_progress_is_a_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for _ in range(3):
        completed()
    advance_clock(timedelta(days=31))
    err = Terminal()
    call_command(
        "durable_cleanup",
        "--older-than",
        "30d",
        "--batch-size",
        "2",
        stdout=io.StringIO(),
        stderr=err,
    )
    text = err.getvalue()
    assert text.count("\r") == 3 and text.endswith("3/3 (100%)\n")
    assert "\x1b[" not in text  # not coloured as an error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "bogus"], "'bogus' is not a duration"),
        (["--older-than", "30d", "--status", "running"], "'running' is not a final status"),
        (["--older-than", "30d", "--status", "done"], "'done' is not a final status"),
        (["--older-than", "30d", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_cleanup_argument_errors_exit_2(args, message):
    done = completed()
    advance_clock(timedelta(days=31))
    with pytest.raises(CommandError) as raised:
        cleanup_command(*args)
    assert raised.value.returncode == 2
    assert message in str(raised.value)
    assert existing([done]) == {str(done)}


def test_cleanup_library_refuses_a_status_that_is_not_final():
    with pytest.raises(ValueError, match="'waiting' is not a final status"):
        cleanup.delete_finished(timedelta(days=1), statuses=["completed", "waiting"])


@pytest.mark.django_db(transaction=True)
def test_a_bad_duration_exits_2_without_a_traceback():
    result = manage("durable_cleanup", "--older-than", "bogus")
    assert result.returncode == 2, result.stderr
    assert "'bogus' is not a duration" in result.stderr
    assert "Traceback" not in result.stderr
