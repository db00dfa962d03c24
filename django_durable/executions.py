"""Executions: reading, cancelling and resuming them, and the one door through which
every change of an execution's status goes (starting one is `starting`).

The door is three functions. `transition` moves an execution between unfinished
statuses (claimed work runs on, retries, parks, is released, resumes); `finish` is the
only place a final or `compensating` status is written, and does everything an ending
needs (clear the lease, close open attempts, withdraw open waits and inputs); `wake`
makes a parked execution runnable (no change of status). `transition` and `finish` check
`models.TRANSITIONS`, and each write from a worker is fenced on the run token of the
attempt that makes it.

Lock order, everywhere: a parent execution before its children (`lock`), and an
execution before its own attempts, waits, inputs and events. A transaction that changes
a row never locks an ancestor of it afterwards, so cancelling a tree cannot deadlock
with a child that finishes.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet

from . import claims, clock, compensations, conf, forks, registry, signals
from .dsl.moves import Fork
from .errors import (
    ExecutionNotActive,
    ExecutionNotResumable,
    InvalidTransition,
)
from .models import (
    ACTIVE_STATUSES,
    CLAIMED_AS,
    FINAL_STATUSES,
    FORWARD_STATUSES,
    MEMBER_KINDS,
    TRANSITIONS,
    ExecutionKind,
    ExecutionStatus,
    InputStatus,
    PendingInput,
    Schedule,
    StepExecution,
    StepStatus,
    Wait,
    WaitStatus,
    WorkflowExecution,
)

ENDING_STATUSES = (*FINAL_STATUSES, ExecutionStatus.COMPENSATING)


class LeaseLost(Exception):
    """The attempt no longer owns the execution; its result must be discarded."""


# -- reading -----------------------------------------------------------------------------


def get_execution(
    execution_id: "uuid.UUID | str", include_steps: bool = False
) -> WorkflowExecution:
    """Load an execution; with `include_steps`, `execution.steps` lists its attempts,
    those of its parallel branches and foreach items, and its compensations, in the
    order they happened, each block's members grouped after it (`forks.timeline`)."""
    execution = WorkflowExecution.objects.by_id(execution_id)
    if include_steps:
        execution.steps = forks.timeline(execution)
    return execution


def list_executions(
    workflow: "registry.Definition | str | None" = None,
    status: str | Sequence[str] | None = None,
    queue: str | None = None,
    parent: "uuid.UUID | str | None" = None,
    limit: int = 100,
    offset: int = 0,
) -> QuerySet:
    """Executions, newest first, optionally filtered."""
    executions = WorkflowExecution.objects.filter(kind=ExecutionKind.WORKFLOW).order_by(
        "-created_at"
    )
    if workflow is not None:
        executions = executions.filter(
            workflow_name=workflow if isinstance(workflow, str) else workflow.name
        )
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        executions = executions.filter(status__in=statuses)
    if queue is not None:
        executions = executions.filter(queue=queue)
    if parent is not None:
        executions = executions.filter(parent_id=parent)
    return executions[offset : offset + limit]


# -- controlling from outside ------------------------------------------------------------


def cancel(
    execution_id: "uuid.UUID | str", reason: str | None = None, *, compensate: bool = False
) -> WorkflowExecution:
    """Stop an active execution (and its active children); a running attempt's result is
    discarded because the cancellation revokes its run token. With `compensate`, the
    compensations of its completed steps run first (`compensating`, then `compensated`
    or `compensation_failed`); with nothing to undo it is simply cancelled."""
    with transaction.atomic():
        execution = lock_active(execution_id, "be cancelled")
        _cancel_tree(execution, reason, clock.now(), compensate)
    return get_execution(execution.id)


def _cancel_tree(
    execution: WorkflowExecution,
    reason: str | None,
    now: datetime,
    compensate: bool,
    children_reason: str | None = None,
) -> None:
    """Cancel an execution, then the active child workflows it or its branches and
    items started, recursively (locked after it: the lock order). Descendants get the
    reason "parent cancelled: <reason>"; finished ones are left as they are."""
    finish(
        execution,
        ExecutionStatus.CANCELLED,
        fenced=False,
        now=now,
        compensate=compensate,
        cancel_reason=reason,
    )
    if children_reason is None:
        children_reason = f"parent cancelled: {reason}" if reason else "parent cancelled"
    children = WorkflowExecution.objects.select_for_update(of=("self",)).filter(
        kind=ExecutionKind.WORKFLOW, parent__root_id=execution.root_id
    )
    for child in children.active().exclude(id=execution.id).order_by("id"):
        _cancel_tree(child, children_reason, now, compensate, children_reason)


def resume(execution_id: "uuid.UUID | str") -> WorkflowExecution:
    """Run a failed or cancelled execution again from the node that stopped it. Stopped
    in a parallel block or a foreach, only its branches or items that did not complete
    run again; the completed ones keep their results."""
    with transaction.atomic():
        execution = lock(execution_id)
        if execution.status not in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
            raise ExecutionNotResumable(
                f"Execution {execution.id} is {execution.status}; only failed or cancelled "
                "executions can be resumed."
            )
        if execution.kind in MEMBER_KINDS:
            raise ExecutionNotResumable(
                f"Execution {execution.id} is a {execution.kind} of {execution.parent_id}; "
                "resume that execution instead."
            )
        definition = registry.for_execution(execution)
        now = clock.now()
        current = execution.current_step or getattr(
            definition.entry(lambda: execution.context), "node_id", None
        )
        if current is None:
            raise ExecutionNotResumable(
                f"Execution {execution.id} stopped before it had anything to run; "
                "start a new one instead."
            )
        deadline = now + definition.timeout if definition.timeout else None
        _restart(execution, definition, current, now, deadline=deadline)
    return get_execution(execution.id)


def _restart(
    execution: WorkflowExecution,
    definition: registry.Definition,
    node_id: str,
    now: datetime,
    **changes: Any,
) -> None:
    """Make a failed or cancelled row runnable again at `node_id`. At a block that had
    forked, the visit goes on (its completed members still count) and its unfinished
    members restart, as far as the block's concurrency lets them."""
    reopened = _reopen_members(execution, definition, now)
    run_queue = definition.run_queue(node_id, execution.queue)
    transition(
        execution,
        ExecutionStatus.PENDING,
        fenced=False,
        current_step=node_id,
        attempt=1,
        step_seq=execution.step_seq if reopened else execution.step_seq + 1,
        recoveries=0,
        error=None,
        completed_at=None,
        run_queue=run_queue,
        **{"run_at": now, **changes},
        **claims.LEASE_CLEARED,
    )
    claims.notify(run_queue)


def _reopen_members(
    execution: WorkflowExecution, definition: registry.Definition, now: datetime
) -> bool:
    """Restart the members of the block `execution` stopped at that did not complete;
    False if it had not forked there."""
    members = forks.members_to_reopen(execution)
    if members is None:
        return False
    limit = getattr(definition.node(execution.current_step), "concurrency", None)
    for position, member in enumerate(members):
        held = limit is not None and position >= limit
        _restart(member, definition, member.current_step, now, run_at=None if held else now)
    return True


def lock(execution_id: "uuid.UUID | str") -> WorkflowExecution:
    """Lock an execution row for a change, its parent's first (the lock order).

    Call inside a transaction. A finishing execution wakes or updates its parent, so
    whatever may finish one must hold the parent before the child.
    """
    parent_id = WorkflowExecution.objects.only("parent_id").by_id(execution_id).parent_id
    if parent_id is not None:
        list(WorkflowExecution.objects.select_for_update().filter(id=parent_id).values("id"))
    return WorkflowExecution.objects.select_for_update().by_id(execution_id)


def lock_active(execution_id: "uuid.UUID | str", action: str) -> WorkflowExecution:
    """Lock an execution for a change sent from outside, or explain why it cannot take it."""
    return _active(lock(execution_id), action)


def _active(execution: WorkflowExecution, action: str) -> WorkflowExecution:
    if execution.status not in ACTIVE_STATUSES:
        raise ExecutionNotActive(
            f"Execution {execution.id} is {execution.status}, so it cannot {action}."
        )
    return execution


def lock_root(execution_id: "uuid.UUID | str", action: str) -> WorkflowExecution:
    """Lock the execution that events and inputs for `execution_id` are addressed to:
    the workflow itself, or for a branch or item row the workflow it belongs to.

    Its parent is not locked: an event or an answer never finishes an execution, and
    this transaction locks nothing above the root afterwards, only rows of its tree.
    """
    root_id = WorkflowExecution.objects.only("root_id").by_id(execution_id).root_id
    return _active(WorkflowExecution.objects.select_for_update().by_id(root_id), action)


def lock_held(execution: WorkflowExecution) -> None:
    """Lock the row an attempt holds, before reading what its outcome depends on (what
    others change under that lock, as `graphs.set_value` does); LeaseLost if the
    attempt no longer holds it."""
    held = WorkflowExecution.objects.select_for_update().filter(
        id=execution.id, run_token=execution.run_token
    )
    if not held.exists():
        raise LeaseLost(execution.id)


def lock_member(root: WorkflowExecution, execution_id: uuid.UUID) -> WorkflowExecution:
    """Lock a row of `root`'s tree after `root` (parent before child)."""
    if execution_id == root.id:
        return root
    return WorkflowExecution.objects.select_for_update().get(id=execution_id)


# -- the door ----------------------------------------------------------------------------


def transition(
    execution: WorkflowExecution, status: str, *, fenced: bool = True, **changes: Any
) -> None:
    """Move an execution to an unfinished status (or keep it) and apply `changes`.

    `fenced`: the write only happens if the execution still carries the run token held
    in memory (a worker's attempt); else LeaseLost. Unfenced callers hold the row lock.
    """
    if status in ENDING_STATUSES and status != execution.status:
        raise InvalidTransition(f"{status} is written by finish(), not transition().")
    before = execution.status
    _check(before, status)
    _write(execution, fenced, status=status, **changes)
    _announce(execution, before)


def hand_over(
    execution: WorkflowExecution,
    finished_id: uuid.UUID,
    finished: dict,
    next_attempt: StepExecution,
    **changes: Any,
) -> None:
    """A chained step (or compensation): the finished attempt is closed with `finished`
    and the execution moves on in the same phase, held by the same worker under
    `next_attempt`'s id. One statement (one round trip, its own commit) on PostgreSQL;
    one transaction elsewhere. LeaseLost if the finished attempt no longer holds the
    execution."""
    _check(execution.status, execution.status)
    changes = {
        "status": execution.status,
        "ready": False,
        "run_token": next_attempt.id,
        **changes,
    }
    if connection.vendor == "postgresql":
        if not claims.hand_over(
            execution.id, execution.run_token, changes, finished_id, finished, next_attempt
        ):
            raise LeaseLost(execution.id)
        _apply(execution, changes)
        return
    with transaction.atomic():
        _write(execution, True, **changes)
        StepExecution.objects.filter(id=finished_id).update(**finished)
        next_attempt.save(force_insert=True)


def finish(
    execution: WorkflowExecution,
    status: str,
    *,
    error: dict | None = None,
    fenced: bool = True,
    now: datetime | None = None,
    own_end: tuple[uuid.UUID, dict] | None = None,
    compensate: bool = False,
    quiet: bool = False,
    **changes: Any,
) -> None:
    """End an execution (or start its compensating phase): the one place that does it.

    In one go: the parent is locked first (lock order); ending any other way than
    completing cancels the branches and items still running under it (they are part of
    it; child workflows are not, `cancel` reaches those); a failure (or a cancel with
    `compensate`) with completed steps to undo becomes `compensating` instead
    (`compensations.plan`); the row gets its status, the lease is cleared, the caller's
    own attempt is closed with `own_end` (its id and how it ended), every other attempt
    still running or parked is closed, and every open wait and pending input is
    withdrawn: one statement on PostgreSQL. A branch or item that ends tells its block
    (`_member_finished`) unless its parent is ending it (`quiet`).
    """
    _check(execution.status, status)
    now = now or clock.now()
    if error is None and execution.status == ExecutionStatus.COMPENSATING:
        error = execution.error  # the failure that started the compensations stays
    # Completing on PostgreSQL, the parent is locked inside the ending's own statement.
    folded = connection.vendor == "postgresql" and status == ExecutionStatus.COMPLETED
    parent = None
    if execution.parent_id is not None and not folded:
        parent = _lock_parent(execution)
    if status != ExecutionStatus.COMPLETED:
        _end_members(execution, status, changes.get("cancel_reason"), now)
    if _undoes(execution, status, compensate):
        entries = compensations.plan(execution)
        if entries:
            status = ExecutionStatus.COMPENSATING
            changes.update(
                compensation_plan=entries, compensation_results=[], attempt=1, run_at=now
            )
    if status in FINAL_STATUSES:
        changes["completed_at"] = now
    changes = {"status": status, "error": error, **changes, **claims.LEASE_CLEARED}
    changes["ready"] = _ready_after(execution, changes)
    reason = changes.get("cancel_reason", execution.cancel_reason)
    interruption = error or _interruption(status, reason)
    if connection.vendor == "postgresql":
        fence = ("run_token", execution.run_token) if fenced else ("status", execution.status)
        lock_parent = execution.parent_id if folded else None
        ended, locked = claims.end(
            execution.id, fence, changes, own_end, interruption, now, lock_parent
        )
        if not ended:
            raise LeaseLost(execution.id)
        parent = parent or locked
        _apply(execution, changes)
    else:
        _write(execution, fenced, **changes)
        _close_open_attempts(execution, own_end, now, interruption)
        Wait.objects.filter(execution=execution, status=WaitStatus.WAITING).update(
            status=WaitStatus.CANCELLED, resolved_at=now
        )
        PendingInput.objects.filter(execution=execution, status=InputStatus.PENDING).update(
            status=InputStatus.CANCELLED
        )
    if status == ExecutionStatus.COMPENSATING:
        claims.notify(execution.run_queue)
    if execution.kind in MEMBER_KINDS and not quiet:
        _member_finished(execution, parent, now)
    elif parent is not None and status in FINAL_STATUSES:
        _child_finished(execution, parent, now)
    if execution.schedule_id is not None and status in FINAL_STATUSES:
        _count_scheduled_run(execution, now)
    _announce(execution, None)


def _count_scheduled_run(execution: WorkflowExecution, now: datetime) -> None:
    """A scheduled run ended: a completed one resets its schedule's failure count, one
    that did not complete (failed, compensated, not cancelled) adds to it, and too many
    in a row (DURABLE["SCHEDULE_AUTO_DISABLE_AFTER"]) disable the schedule."""
    schedule = Schedule.objects.filter(id=execution.schedule_id)
    if execution.status == ExecutionStatus.COMPLETED:
        schedule.update(consecutive_failures=0, last_error=None)
    elif execution.status != ExecutionStatus.CANCELLED:
        schedule.update(
            consecutive_failures=F("consecutive_failures") + 1, last_error=execution.error
        )
        schedule.filter(
            enabled=True, consecutive_failures__gte=conf.get("SCHEDULE_AUTO_DISABLE_AFTER")
        ).update(enabled=False, next_run_at=None, auto_disabled_at=now)


def _child_finished(child: WorkflowExecution, parent: dict, now: datetime) -> None:
    """A child workflow ended (its parent is locked, by `finish`): a parent parked on
    it (in the step visit that called it) runs the step again to take the result.
    A child started with `start_workflow` has no visit and wakes nobody."""
    waiting = parent["status"] == ExecutionStatus.WAITING
    if waiting and child.parent_step_seq == parent["step_seq"]:
        _wake_parked(parent["id"], parent["run_queue"], now)


def _lock_parent(execution: WorkflowExecution) -> dict:
    """Lock the parent's row (the lock order) and read what an ending member needs."""
    return (
        WorkflowExecution.objects.select_for_update()
        .filter(id=execution.parent_id)
        .values(*claims.PARENT_FIELDS)
        .get()
    )


def _undoes(execution: WorkflowExecution, status: str, compensate: bool) -> bool:
    """Whether this ending runs compensations: a workflow going forward that fails, or
    is cancelled with `compensate`."""
    if execution.kind != ExecutionKind.WORKFLOW or execution.status not in FORWARD_STATUSES:
        return False
    return status == ExecutionStatus.FAILED or (status == ExecutionStatus.CANCELLED and compensate)


def _end_members(
    execution: WorkflowExecution, status: str, cancel_reason: str | None, now: datetime
) -> None:
    """Branches and items of an execution that ends, before it is written: locked after
    it, then cancelled without telling it (it is ending them)."""
    members = execution.children.active().exclude(kind=ExecutionKind.WORKFLOW)
    reason = f"its workflow ended ({status})"
    if status == ExecutionStatus.CANCELLED:
        reason = cancel_reason
    _cancel_members(members, reason, now, quiet=True)


def _cancel_members(
    members: QuerySet, reason: str | None, now: datetime, quiet: bool = False
) -> None:
    """Cancel active members, locked in id order: the items still held back (never
    started: nothing to close) in one statement, the others through `finish`."""
    held = members.filter(status=ExecutionStatus.PENDING, ready=False, run_at__isnull=True)
    held.filter(locked_by__isnull=True).update(
        status=ExecutionStatus.CANCELLED, cancel_reason=reason, completed_at=now
    )
    for member in members.select_for_update().order_by("id"):
        finish(
            member,
            ExecutionStatus.CANCELLED,
            fenced=False,
            now=now,
            quiet=quiet,
            cancel_reason=reason,
        )


def fork(
    execution: WorkflowExecution,
    own_end: tuple[uuid.UUID, dict],
    members: Fork,
    definition: registry.Definition,
) -> None:
    """Park a running execution on a block and start the block's members under it, in
    one transaction: the execution waits (no timer), its attempt is closed as `waiting`
    (it runs again to join), and the members are inserted runnable, or held beyond the
    block's concurrency. LeaseLost if the attempt no longer holds the execution."""
    now = clock.now()
    with transaction.atomic():
        transition(
            execution, ExecutionStatus.WAITING, run_at=None, recoveries=0, **claims.LEASE_CLEARED
        )
        own_id, ending = own_end
        StepExecution.objects.filter(id=own_id).update(**ending)
        for queue in forks.insert(execution, members, definition, now):
            claims.notify(queue)


def _member_finished(member: WorkflowExecution, parent: dict, now: datetime) -> None:
    """A branch or item ended (its parent is locked, by `finish`): what its block does.

    A failure in a `fail_fast` block cancels the block's other members; an item that
    ended lets the next held one run; the last member to end wakes the parent, which
    joins the results. Nothing, if the parent no longer waits on this block (it ended,
    or moved on and these members were left behind). A parent not parked on it yet (a
    resumed one) finds its members joined when it parks (`waits.can_resume`).
    """
    if parent["status"] not in FORWARD_STATUSES or parent["step_seq"] != member.parent_step_seq:
        return
    block = registry.get(parent["workflow_name"]).node(parent["current_step"])
    if member.status == ExecutionStatus.FAILED and block.on_error == "fail_fast":
        reason = f"{parent['current_step']}: another member failed (on_error='fail_fast')"
        _cancel_members(forks.open_members(parent["id"], member.parent_step_seq), reason, now)
        release = False
    else:
        release = member.kind == ExecutionKind.ITEM and member.status != ExecutionStatus.CANCELLED
    for queue in _advance_block(parent, member.parent_step_seq, release, now):
        claims.notify(queue)


def _advance_block(parent: dict, visit: int, release: bool, now: datetime) -> list[str]:
    """Release the next held item (with `release`) and wake the parent if no member of
    its block is left open; returns the queues to notify. One statement on PostgreSQL."""
    if connection.vendor == "postgresql":
        return [queue for queue in claims.advance_block(parent["id"], visit, release, now) if queue]
    queues = []
    if release:
        queues.append(forks.release_next_held(parent["id"], visit, now))
    if parent["status"] == ExecutionStatus.WAITING and forks.all_joined(parent["id"], visit):
        _wake_parked(parent["id"], parent["run_queue"], now)
    return [queue for queue in queues if queue]


def redirect(execution: WorkflowExecution, node_id: str) -> None:
    """Make a waiting or pending execution (held by nobody, its row locked by the
    caller) runnable now at `node_id`: a graph whose values call for that compute."""
    _write(execution, False, current_step=node_id, run_at=clock.now())
    claims.notify(execution.run_queue)


def wake(execution: WorkflowExecution) -> None:
    """Make a parked execution runnable now (a running one re-checks when it parks)."""
    if execution.status == ExecutionStatus.WAITING:
        now = clock.now()
        _wake_parked(execution.id, execution.run_queue, now)
        execution.run_at, execution.ready = now, True


def _wake_parked(execution_id: uuid.UUID, run_queue: str, now: datetime) -> None:
    """Mark a `waiting` row runnable now (no change if it is not waiting any more) and
    wake the idle workers of its queue."""
    WorkflowExecution.objects.filter(id=execution_id, status=ExecutionStatus.WAITING).update(
        run_at=now, ready=True
    )
    claims.notify(run_queue)


def _announce(execution: WorkflowExecution, before: str | None) -> None:
    """The workflow_* signal for the status a workflow now has (`signals`), sent once
    the change commits. `before` is the status it had (None: it ended). An ending with
    no error was a cancel (also when compensations ran after it)."""
    if execution.kind != ExecutionKind.WORKFLOW or execution.status == before:
        return
    status, sender = execution.status, WorkflowExecution
    if status == ExecutionStatus.WAITING:
        signals.emit(signals.workflow_waiting, sender, execution=execution)
    elif status == ExecutionStatus.PENDING and before in FINAL_STATUSES:
        signals.emit(signals.workflow_resumed, sender, execution=execution, reason="resume")
    elif status == ExecutionStatus.COMPLETED:
        signals.emit(signals.workflow_completed, sender, execution=execution)
    elif status not in FINAL_STATUSES:
        return
    elif status == ExecutionStatus.CANCELLED or execution.error is None:
        reason = execution.cancel_reason
        signals.emit(signals.workflow_cancelled, sender, execution=execution, reason=reason)
    else:
        signals.emit(signals.workflow_failed, sender, execution=execution, error=execution.error)


def _check(current: str, target: str) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"An execution cannot go from {current} to {target}.")


def _ready_after(execution: WorkflowExecution, changes: dict) -> bool:
    """Whether the execution is runnable now once `changes` are applied: claimable,
    unheld and due."""
    status = changes.get("status", execution.status)
    run_at = changes.get("run_at", execution.run_at)
    held = changes.get("locked_by", execution.locked_by) is not None
    return status in CLAIMED_AS and not held and run_at is not None and run_at <= clock.now()


def _write(execution: WorkflowExecution, fenced: bool, **changes: Any) -> None:
    """Apply `changes` to the row and the object, if the caller still owns the row.

    `ready` follows from the rest, here only: claimable, unheld and due now.
    """
    changes["ready"] = _ready_after(execution, changes)
    rows = WorkflowExecution.objects.filter(id=execution.id)
    if fenced:
        rows = rows.filter(run_token=execution.run_token)
    else:
        rows = rows.filter(status=execution.status)
    if not rows.update(**changes):
        raise LeaseLost(execution.id)
    _apply(execution, changes)


def _apply(execution: WorkflowExecution, changes: dict) -> None:
    """The in-memory execution says what the row now says."""
    for name, value in changes.items():
        setattr(execution, name, value)


def _close_open_attempts(
    execution: WorkflowExecution,
    own_end: tuple[uuid.UUID, dict] | None,
    now: datetime,
    error: dict,
) -> None:
    """The caller's attempt ends as it says; others still running, or parked on a wait,
    end with the execution."""
    open_attempts = StepExecution.objects.filter(
        execution=execution, status__in=(StepStatus.RUNNING, StepStatus.WAITING)
    )
    if own_end is not None:
        own_id, ending = own_end
        StepExecution.objects.filter(id=own_id).update(**ending)
        open_attempts = open_attempts.exclude(id=own_id)
    open_attempts.update(status=StepStatus.FAILED, completed_at=now, error=error)


def _interruption(status: str, cancel_reason: str | None) -> dict:
    """What an attempt still open when its execution ended is closed with."""
    if status == ExecutionStatus.CANCELLED:
        reason = f": {cancel_reason}" if cancel_reason else "."
        message = f"The execution was cancelled{reason}"
        return {"type": "Cancelled", "message": message, "traceback": ""}
    message = f"The execution ended ({status}) while this attempt was open."
    return {"type": "ExecutionEnded", "message": message, "traceback": ""}
