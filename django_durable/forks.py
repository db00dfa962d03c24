"""Members: the parallel branches and foreach items an execution forks, as rows.

A fork inserts one execution row per member (kind `branch` or `item`) under the
execution, in the transaction that parks it (`executions.fork`). Members are claimed,
leased and fenced like any execution; when one finishes, the door (`executions.finish`)
asks here what that means for its block: release the next held item, fail the block
at once, or, for the last one, wake the parent, which runs the block's node again to
join the results (`members_of`).

Items beyond a foreach's `concurrency` are inserted held: pending, not ready and with no
run time, so neither claims nor timers see them until a finishing item releases the next.
"""

import uuid
from datetime import datetime
from typing import Any

from . import codec
from .dsl import Fork, Graph, MemberResult
from .models import (
    MEMBER_KINDS,
    ExecutionKind,
    ExecutionStatus,
    StepExecution,
    WorkflowExecution,
)
from .scope import Suspend

JOIN_KEY = "join"  # what a block's node parks on while its members run
INSERT_BATCH = 1000
_CONTEXT_CACHE_SIZE = 64
_parent_contexts: dict[tuple, Any] = {}  # (parent, its visit, item's visit) -> context

# How a member that ended shows in its block's results; any other status: still running.
_RESULT_STATUS = {
    ExecutionStatus.COMPLETED: "completed",
    ExecutionStatus.FAILED: "failed",
    ExecutionStatus.CANCELLED: "cancelled",
}


class Unit:
    """What a running node is told about where it runs (see `dsl.graph.Unit`)."""

    def __init__(self, execution: WorkflowExecution, graph: Graph, node_id: str) -> None:
        self.execution = execution
        self.graph = graph
        self.node_id = node_id

    @property
    def item(self) -> Any:
        return self.execution.input

    @property
    def index(self) -> int | None:
        return self.execution.item_index

    def members(self) -> list[MemberResult] | None:
        return members_of(self.execution)

    def parent_context(self) -> dict:
        return parent_context(self.execution)


def insert(execution: WorkflowExecution, fork: Fork, definition, now: datetime) -> set[str]:
    """Insert the members of `fork` under `execution`; returns the queues to wake."""
    rows, queues = [], set()
    for member in fork.members:
        held = fork.concurrency is not None and member.index >= fork.concurrency
        run_queue = definition.run_queue(member.entry, execution.queue)
        row = WorkflowExecution(
            id=uuid.uuid4(),
            workflow_name=execution.workflow_name,
            workflow_version=execution.workflow_version,
            kind=fork.kind,
            parent_id=execution.id,
            root_id=execution.root_id,
            item_index=member.index,
            parent_step_seq=execution.step_seq,
            queue=execution.queue,
            run_queue=run_queue,
            priority=execution.priority,
            input=member.item if fork.kind == ExecutionKind.ITEM else {},
            context=member.context,
            current_step=member.entry,
            run_at=None if held else now,
            ready=not held,
            created_at=now,
        )
        rows.append(row)
        if not held:
            queues.add(run_queue)
    WorkflowExecution.objects.bulk_create(rows, batch_size=INSERT_BATCH)
    return queues


def members_of(execution: WorkflowExecution) -> list[MemberResult] | None:
    """How the members of the block `execution` is at ended, in member order; None if it
    has not forked yet. While some still run the node parks again (JOIN_KEY)."""
    rows = list(
        _members(execution.id, execution.step_seq)
        .order_by("item_index")
        .values_list("item_index", "status", "kind", "context", "error", "completed_at")
    )
    if not rows:
        return None
    results = []
    for index, status, kind, context, error, completed_at in rows:
        outcome = _RESULT_STATUS.get(status)
        if outcome is None:
            raise Suspend(JOIN_KEY, None)
        data = None
        if outcome == "completed":
            data = context.get("result") if kind == ExecutionKind.ITEM else context
        results.append(MemberResult(index, outcome, data, error, completed_at))
    return results


def members_to_reopen(execution: WorkflowExecution) -> list[WorkflowExecution] | None:
    """The members of the block `execution` stopped at that failed or were cancelled,
    locked, in member order; None if it had not forked at this visit."""
    members = _members(execution.id, execution.step_seq)
    if not members.exists():
        return None
    stopped = members.filter(status__in=(ExecutionStatus.FAILED, ExecutionStatus.CANCELLED))
    return list(stopped.select_for_update().order_by("item_index"))


def open_members(parent_id: uuid.UUID, visit: int):
    """The members of a block (forked at the parent's step visit `visit`) that have not
    finished (durable_exec_open_members)."""
    return _members(parent_id, visit).active()


def all_joined(parent_id: uuid.UUID, visit: int) -> bool:
    """Whether no member of the block forked at that visit still runs."""
    return not open_members(parent_id, visit).exists()


def release_next_held(parent_id: uuid.UUID, visit: int, now: datetime) -> str | None:
    """Let the next held item of a block run; returns its queue (None: none). The
    parent is locked by the caller, so two ending items never release the same one."""
    held = (
        open_members(parent_id, visit)
        .filter(status=ExecutionStatus.PENDING, ready=False, run_at__isnull=True)
        .order_by("item_index")
        .values_list("id", "run_queue")
        .first()
    )
    if held is None:
        return None
    member_id, run_queue = held
    WorkflowExecution.objects.filter(id=member_id).update(run_at=now, ready=True)
    return run_queue


def parent_context(member: WorkflowExecution) -> dict:
    """The context of the block an item belongs to, as stored: the parent is parked on
    the block while its items run, so it is read once per visit (and again for items
    restarted by a resume, whose own visit count moved on) and decoded per use."""
    key = (member.parent_id, member.parent_step_seq, member.step_seq)
    stored = _parent_contexts.get(key)
    if stored is None:
        context = WorkflowExecution.objects.filter(id=member.parent_id).values_list(
            "context", flat=True
        )
        stored = codec.encode(context.first() or {})
        if len(_parent_contexts) >= _CONTEXT_CACHE_SIZE:
            _parent_contexts.pop(next(iter(_parent_contexts)))
        _parent_contexts[key] = stored
    return codec.decode(stored)


def _members(parent_id: uuid.UUID, visit: int):
    """The members forked at the parent's step visit `visit`."""
    return WorkflowExecution.objects.filter(parent_id=parent_id, parent_step_seq=visit).exclude(
        kind=ExecutionKind.WORKFLOW
    )


def timeline(execution: WorkflowExecution) -> list[StepExecution]:
    """The attempts of an execution and of its members, in an order a person can
    follow: its own attempts as they started, each block's members right after the
    attempt that forked them, member by member (in item order), and each member's own
    attempts (and its members') in turn. Every row tells which unit ran it: `unit` is
    None for the execution's own rows, else the member's `kind` and `item_index`."""
    rows = list(
        StepExecution.objects.filter(execution__root_id=execution.root_id)
        .select_related("execution")
        .order_by("started_at", "attempt")
    )
    own: dict[uuid.UUID, list] = {}
    for row in rows:
        own.setdefault(row.execution_id, []).append(row)
    members: dict[uuid.UUID, list[WorkflowExecution]] = {}
    for member in {row.execution for row in rows if row.execution.kind in MEMBER_KINDS}:
        members.setdefault(member.parent_id, []).append(member)
    ordered = _walk(execution.id, own, members)
    for row in ordered:
        unit = row.execution
        row.unit = None if unit.id == execution.id else (unit.kind, unit.item_index)
    return ordered


def _walk(execution_id: uuid.UUID, own: dict, members: dict) -> list[StepExecution]:
    ordered, under = [], sorted(members.get(execution_id, []), key=_member_order)
    for row in own.get(execution_id, []):
        ordered.append(row)
        while under and under[0].created_at <= _next_start(row, own[execution_id]):
            ordered.extend(_walk(under.pop(0).id, own, members))
    for member in under:
        ordered.extend(_walk(member.id, own, members))
    return ordered


def _member_order(member: WorkflowExecution) -> tuple:
    return (member.created_at, member.parent_step_seq or 0, member.item_index or 0)


def _next_start(row: StepExecution, rows: list[StepExecution]) -> datetime:
    """When the attempt after `row` started: members created before then are its."""
    later = [other.started_at for other in rows if other.started_at > row.started_at]
    return min(later) if later else datetime.max.replace(tzinfo=row.started_at.tzinfo)
