"""Parallel blocks, foreach and sagas survive a SIGKILLed worker (real worker processes).

Each test starts one `manage.py durable_worker` (tests/worker_support.py), lets it get
into the middle of a block or a compensation chain, kills it with SIGKILL, and starts a
second worker. The killed worker's claims are given back (on SQLite at once, as its pid
is gone; on PostgreSQL when its 3 s lease lapses) and the second worker finishes the
work. Steps record every call they start in files (tests/workflows_app/
crash_control_workflows.py, and `sleepy_item` in control_workflows.py), so the tests can
tell what ran where and how often: what had completed before the kill never runs again,
what was interrupted runs again once, and nothing is lost.

Only one worker runs at a time, so these tests run on SQLite too.
"""

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from django_durable.models import ExecutionKind, StepExecution, WorkflowExecution
from tests.worker_support import IS_SQLITE, WorkerPool, wait_for
from tests.workflows_app.control_workflows import crashy_foreach
from tests.workflows_app.crash_control_workflows import crash_parallel, crash_saga, read_runs

pytestmark = pytest.mark.django_db(transaction=True)

SHORT_LEASE = {"lease_seconds": 3, "heartbeat_seconds": 1}
# What the second worker records on the attempt the killed one left running: on SQLite
# it sees at start-up that the process is gone; elsewhere only the lease tells.
INTERRUPTED_AS = "WorkerLost" if IS_SQLITE else "LeaseExpired"
FINISHED = ("completed", "failed", "cancelled", "compensated", "compensation_failed")


# -- helpers -------------------------------------------------------------------------------


def runs_by_name(directory) -> dict[str, list[int]]:
    """The pids that started each step or compensation, in order."""
    runs = defaultdict(list)
    for run in read_runs(directory):
        runs[run["name"]].append(run["pid"])
    return dict(runs)


def item_runs(directory, item: int) -> Counter:
    """How many times each pid ran `sleepy_item` for `item` (a file per item and pid,
    a line per run)."""
    runs = Counter()
    for path in Path(directory).glob(f"item-{item}-*"):
        runs[int(path.name.split("-")[2])] += path.read_text().count("ran\n")
    return runs


def members(execution_id) -> list[WorkflowExecution]:
    return list(
        WorkflowExecution.objects.filter(parent_id=execution_id).order_by("item_index", "id")
    )


def attempts(execution_id) -> list[tuple]:
    """(step, status, worker, error type) of each attempt of one row, as they started."""
    return [
        (run.step_name, run.status, run.worker, (run.error or {}).get("type"))
        for run in StepExecution.objects.filter(execution_id=execution_id).order_by(
            "started_at", "attempt"
        )
    ]


def describe(execution_id, directory, pool: WorkerPool) -> str:
    """The execution, its members and their attempts, the recorded calls, the workers."""
    lines = []
    for row in [WorkflowExecution.objects.get(id=execution_id), *members(execution_id)]:
        lines.append(
            f"{row.kind} {row.item_index} {row.current_step}: {row.status} ready={row.ready} "
            f"locked_by={row.locked_by} error={row.error}"
        )
        lines.extend(f"    {attempt}" for attempt in attempts(row.id))
    lines.append(f"runs: {runs_by_name(directory)}")
    lines.append(f"item marks: {sorted(path.name for path in Path(directory).glob('item-*'))}")
    return "\n".join(lines) + "\n" + pool.report()


def wait_until_finished(execution_id, directory, pool: WorkerPool) -> WorkflowExecution:
    wait_for(
        lambda: WorkflowExecution.objects.filter(id=execution_id, status__in=FINISHED).exists(),
        "the execution to finish",
        timeout=60,
        report=lambda: describe(execution_id, directory, pool),
    )
    return WorkflowExecution.objects.get(id=execution_id)


def max_overlap(intervals) -> int:
    """The most intervals open at one instant (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = most = 0
    for _, change in events:
        open_now += change
        most = max(most, open_now)
    return most


# -- parallel ------------------------------------------------------------------------------

BRANCHES = ["fast_a", "fast_b", "slow_branch", "fast_c"]
FAST = ["fast_a", "fast_b", "fast_c"]


def test_a_parallel_block_completes_after_its_worker_is_killed_mid_block(workers, tmp_path):
    first = workers.start(concurrency=8, **SHORT_LEASE)
    execution_id = crash_parallel.start({"marks": str(tmp_path)})

    def fast_done_and_slow_started():
        done = WorkflowExecution.objects.filter(
            parent_id=execution_id, kind=ExecutionKind.BRANCH, status="completed"
        ).count()
        return done == len(FAST) and first.pid in runs_by_name(tmp_path).get("slow_branch", [])

    wait_for(
        fast_done_and_slow_started,
        "the fast branches to complete and the slow one to start",
        report=lambda: describe(execution_id, tmp_path, workers),
    )
    first.kill()

    # Frozen as the killed worker left it: the parent parked on the block, the slow
    # branch held by the dead worker, the fast ones done.
    state = describe(execution_id, tmp_path, workers)
    parent = WorkflowExecution.objects.get(id=execution_id)
    assert (parent.status, parent.locked_by) == ("waiting", None), state
    # Branch rows are numbered in the order the block lists them.
    branches = {BRANCHES[row.item_index]: row for row in members(execution_id)}
    assert sorted(branches) == sorted(BRANCHES), state
    slow = branches["slow_branch"]
    assert (slow.status, slow.locked_by) == ("running", first.name), state
    assert {branches[name].status for name in FAST} == {"completed"}, state

    (tmp_path / "release").touch()  # the slow branch's next run goes straight through
    second = workers.start(concurrency=8, **SHORT_LEASE)
    execution = wait_until_finished(execution_id, tmp_path, workers)
    state = describe(execution_id, tmp_path, workers)

    assert execution.status == "completed", state
    assert execution.context["__results__"] == {
        "fast_a": ["ok", {"branch": "fast_a", "pid": first.pid}],
        "fast_b": ["ok", {"branch": "fast_b", "pid": first.pid}],
        "fast_c": ["ok", {"branch": "fast_c", "pid": first.pid}],
        "slow_branch": ["ok", {"branch": "slow_branch", "pid": second.pid}],
    }, state
    assert execution.context["joined"] == sorted(BRANCHES), state

    # The fast branches ran once, on the killed worker; the slow one was run again by
    # the second, once; the step after the block ran once.
    runs = runs_by_name(tmp_path)
    for name in FAST:
        assert runs[name] == [first.pid], (name, state)
    assert runs["slow_branch"] == [first.pid, second.pid], state
    assert runs["after_join"] == [second.pid], state

    # The same four branch rows (the join created none), each with one completed
    # attempt; the slow one's first attempt was failed as interrupted, not recorded.
    after = {BRANCHES[row.item_index]: row for row in members(execution_id)}
    assert {name: row.id for name, row in after.items()} == {
        name: row.id for name, row in branches.items()
    }, state
    for name in FAST:
        row = after[name]
        assert (row.status, row.locked_by) == ("completed", None), state
        assert attempts(row.id) == [(f"fan/{name}", "completed", first.name, None)], state
    assert attempts(slow.id) == [
        ("fan/slow_branch", "failed", first.name, INTERRUPTED_AS),
        ("fan/slow_branch", "completed", second.name, None),
    ], state
    assert (after["slow_branch"].status, after["slow_branch"].locked_by) == ("completed", None)
    assert [a for a in attempts(execution_id) if a[0] == "after_join"] == [
        ("after_join", "completed", second.name, None)
    ], state
    assert not WorkflowExecution.objects.filter(root_id=execution_id).exclude(locked_by=None)


# -- foreach -------------------------------------------------------------------------------

ITEMS = 12
ITEM_CONCURRENCY = 4  # crashy_foreach's


def test_a_foreach_completes_after_its_worker_is_killed_mid_way(workers, tmp_path):
    # Workers with more slots than the block allows: the block alone limits how many
    # items run at once, before and after the crash.
    first = workers.start(concurrency=8, **SHORT_LEASE)
    execution_id = crashy_foreach.start({"n": ITEMS, "marks": str(tmp_path), "pause": 0.5})

    def item_statuses() -> dict[int, str]:
        return dict(
            WorkflowExecution.objects.filter(parent_id=execution_id).values_list(
                "item_index", "status"
            )
        )

    def some_done_and_one_inside():
        statuses = item_statuses()
        done = [index for index, status in statuses.items() if status == "completed"]
        inside = [
            index
            for index, status in statuses.items()
            if status == "running" and item_runs(tmp_path, index)[first.pid]
        ]
        return len(done) >= ITEM_CONCURRENCY and inside

    wait_for(
        some_done_and_one_inside,
        f"{ITEM_CONCURRENCY} items to complete and another to be inside its step",
        report=lambda: describe(execution_id, tmp_path, workers),
    )
    first.kill()

    state = describe(execution_id, tmp_path, workers)
    statuses = item_statuses()
    assert sorted(statuses) == list(range(ITEMS)), state
    completed_before = {index for index, status in statuses.items() if status == "completed"}
    interrupted = {
        index
        for index, status in statuses.items()
        if status == "running" and item_runs(tmp_path, index)[first.pid]
    }
    assert completed_before and interrupted, state
    assert len(completed_before) < ITEMS, state
    assert list(statuses.values()).count("running") <= ITEM_CONCURRENCY, state

    second = workers.start(concurrency=8, **SHORT_LEASE)
    execution = wait_until_finished(execution_id, tmp_path, workers)
    state = describe(execution_id, tmp_path, workers)

    assert execution.status == "completed", state
    assert execution.context["__results__"]["slow_items"] == [
        ["ok", item * 10] for item in range(ITEMS)
    ], state
    assert execution.context["done"] is True, state

    # Items completed before the kill never ran again; those the killed worker was
    # inside ran once more, on the second worker; the rest ran once, there.
    for item in range(ITEMS):
        if item in completed_before:
            expected = {first.pid: 1}
        elif item in interrupted:
            expected = {first.pid: 1, second.pid: 1}
        else:
            expected = {second.pid: 1}
        assert item_runs(tmp_path, item) == Counter(expected), (item, state)

    # Nothing lost, nothing doubled: twelve item rows, each with one completed attempt.
    rows = members(execution_id)
    assert [row.item_index for row in rows] == list(range(ITEMS)), state
    for row in rows:
        assert (row.kind, row.status, row.locked_by) == (ExecutionKind.ITEM, "completed", None)
        runs = attempts(row.id)
        done_on = first.name if row.item_index in completed_before else second.name
        completed = [run for run in runs if run[1] == "completed"]
        assert completed == [("slow_items/sleepy_item", "completed", done_on, None)], state
        if row.item_index in interrupted:
            assert runs[0] == ("slow_items/sleepy_item", "failed", first.name, INTERRUPTED_AS)

    # After the crash the block still ran at most `concurrency` items at once.
    second_runs = StepExecution.objects.filter(
        execution__parent_id=execution_id, worker=second.name
    ).values_list("started_at", "completed_at")
    assert max_overlap(list(second_runs)) <= ITEM_CONCURRENCY, state


# -- compensations -------------------------------------------------------------------------


def test_a_compensation_chain_completes_after_its_worker_is_killed_mid_chain(workers, tmp_path):
    first = workers.start(**SHORT_LEASE)
    execution_id = crash_saga.start({"marks": str(tmp_path)})

    wait_for(
        lambda: first.pid in runs_by_name(tmp_path).get("undo_two", []),
        "the middle compensation to start",
        report=lambda: describe(execution_id, tmp_path, workers),
    )
    first.kill()

    state = describe(execution_id, tmp_path, workers)
    execution = WorkflowExecution.objects.get(id=execution_id)
    assert (execution.status, execution.locked_by) == ("compensating", first.name), state
    assert [entry["compensation"] for entry in execution.compensation_plan] == [
        "undo_three",
        "undo_two",
        "undo_one",
    ], state
    assert [entry["compensation"] for entry in execution.compensation_results] == ["undo_three"], (
        state
    )

    (tmp_path / "release").touch()
    second = workers.start(**SHORT_LEASE)
    execution = wait_until_finished(execution_id, tmp_path, workers)
    state = describe(execution_id, tmp_path, workers)

    assert execution.status == "compensated", state
    assert execution.error["message"] == "the last step fails", state
    assert execution.compensation_results == [
        {"step": "do_three", "compensation": "undo_three", "result": {"status": "completed"}},
        {"step": "do_two", "compensation": "undo_two", "result": {"status": "completed"}},
        {"step": "do_one", "compensation": "undo_one", "result": {"status": "completed"}},
    ], state

    runs = runs_by_name(tmp_path)
    for name in ("do_one", "do_two", "do_three", "fail_last", "undo_three"):
        assert runs[name] == [first.pid], (name, state)
    assert runs["undo_two"] == [first.pid, second.pid], state
    assert runs["undo_one"] == [second.pid], state

    undoing = [
        (run.step_name, run.compensation_for, run.status, run.worker, (run.error or {}).get("type"))
        for run in StepExecution.objects.filter(
            execution_id=execution_id, is_compensation=True
        ).order_by("started_at", "attempt")
    ]
    assert undoing == [
        ("undo_three", "do_three", "completed", first.name, None),
        ("undo_two", "do_two", "failed", first.name, INTERRUPTED_AS),
        ("undo_two", "do_two", "completed", second.name, None),
        ("undo_one", "do_one", "completed", second.name, None),
    ], state
    assert execution.locked_by is None, state
