"""Starting executions: checking what a caller asks for, and the one INSERT that makes
a workflow run (also for a child workflow, a parallel branch or a foreach item).

A start with an `idempotency_key` already used for its workflow returns the execution
that key started; the database's unique constraint settles two starts at once.
"""

import uuid
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction

from . import claims, clock, codec, registry, signals
from .dsl.moves import End, Park
from .dsl.names import IDEMPOTENCY_KEY, QUEUE, checked_name
from .errors import ContextNotSerializable, InvalidWorkflowInput, WorkflowDefinitionError
from .models import ExecutionKind, ExecutionStatus, WorkflowExecution


def start(
    workflow_or_name: "registry.Definition | str",
    input: dict | None = None,
    *,
    queue: str | None = None,
    priority: int = 0,
    scheduled_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> uuid.UUID:
    """Create an execution and make it runnable; returns its id.

    With an `idempotency_key` already used for this workflow, returns the id of the
    execution that key created instead of starting another one.
    """
    definition = registry.get(workflow_or_name)
    return create_execution(
        definition,
        input,
        queue=queue,
        priority=priority,
        scheduled_at=scheduled_at,
        idempotency_key=idempotency_key,
    )


def create_execution(
    definition: registry.Definition,
    input: dict | None,
    *,
    queue: str | None = None,
    priority: int = 0,
    scheduled_at: datetime | None = None,
    idempotency_key: str | None = None,
    parent: WorkflowExecution | None = None,
    kind: str = ExecutionKind.WORKFLOW,
    item_index: int | None = None,
    parent_step_seq: int | None = None,
    schedule: Any = None,
) -> uuid.UUID:
    """The row behind `start`, also for what runs under a parent: a child workflow
    (its own root), a parallel branch or a foreach item (addressed through the parent's
    root, so events and inputs sent to the workflow reach their waits)."""
    input = _checked_input(input)
    _check_start_options(queue, priority, scheduled_at)
    _check_idempotency_key(idempotency_key)
    if idempotency_key is not None:
        existing = _by_idempotency_key(definition.name, idempotency_key)
        if existing is not None:
            return existing
    now = clock.now()
    run_at = max(scheduled_at, now) if scheduled_at else now
    queue = queue or definition.queue
    execution = WorkflowExecution(
        id=uuid.uuid4(),
        workflow_name=definition.name,
        workflow_version=definition.version,
        queue=queue,
        priority=priority,
        input=input,
        context=input,
        idempotency_key=idempotency_key,
        scheduled_at=scheduled_at,
        run_at=run_at,
        deadline=run_at + definition.timeout if definition.timeout else None,
        ready=run_at <= now,
        created_at=now,
        parent=parent,
        kind=kind,
        item_index=item_index,
        parent_step_seq=parent_step_seq,
        schedule=schedule,
    )
    execution.root_id = execution.id
    if parent is not None and kind != ExecutionKind.WORKFLOW:
        execution.root_id = parent.root_id
    _place_at_entry(execution, definition, now)
    # One INSERT is atomic on its own; inside the caller's transaction a savepoint keeps
    # an idempotency-key collision from breaking it.
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with savepoint:
            execution.save(force_insert=True)
            if execution.ready:
                claims.notify(execution.run_queue)
            elif execution.run_at is not None:
                claims.notify(execution.run_queue, due_at=execution.run_at)
    except IntegrityError:
        existing = _by_idempotency_key(definition.name, idempotency_key)
        if idempotency_key is None or existing is None:
            raise
        return existing
    if kind == ExecutionKind.WORKFLOW:
        signals.emit(signals.workflow_started, WorkflowExecution, execution=execution)
    return execution.id


def _place_at_entry(
    execution: WorkflowExecution, definition: registry.Definition, now: datetime
) -> None:
    """Point a new execution at its first step; one whose graph has none is complete,
    one with nothing to run yet (a graph of values no input has reached) waits."""
    move = definition.entry(lambda: codec.decode(codec.encode(execution.input)))
    if isinstance(move, End):
        execution.status = ExecutionStatus.COMPLETED
        execution.completed_at = now
        execution.run_at = None
        execution.ready = False
        return
    if isinstance(move, Park):  # nothing to run until something from outside comes
        execution.status = ExecutionStatus.WAITING
        execution.run_at = None
        execution.ready = False
        return
    execution.current_step = move.node_id
    execution.run_queue = definition.run_queue(move.node_id, execution.queue)


def _checked_input(input: Any) -> dict:
    if input is None:
        return {}
    if not isinstance(input, dict):
        raise InvalidWorkflowInput(f"Workflow input must be a dict, not {type(input).__name__}.")
    try:
        codec.encode(input)
    except ContextNotSerializable as exc:
        raise InvalidWorkflowInput(f"Workflow input cannot be stored: {exc}") from exc
    return input


def _check_start_options(queue: Any, priority: Any, scheduled_at: Any) -> None:
    if queue is not None:
        try:
            checked_name(queue, "queue", QUEUE)
        except WorkflowDefinitionError as exc:
            raise InvalidWorkflowInput(str(exc)) from None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidWorkflowInput(f"priority must be an int, not {type(priority).__name__}.")
    if not -(2**31) <= priority < 2**31:
        raise InvalidWorkflowInput("priority must fit in 32 bits (-2**31 to 2**31 - 1).")
    if scheduled_at is not None:
        if not isinstance(scheduled_at, datetime) or scheduled_at.tzinfo is None:
            raise InvalidWorkflowInput("scheduled_at must be a time-zone aware datetime.")


def _check_idempotency_key(key: Any) -> None:
    if key is None:
        return
    try:
        checked_name(key, "idempotency_key", IDEMPOTENCY_KEY)
        codec.encode(key, "idempotency_key")
    except (WorkflowDefinitionError, ContextNotSerializable) as exc:
        raise InvalidWorkflowInput(str(exc)) from None


def _by_idempotency_key(workflow_name: str, key: str | None) -> uuid.UUID | None:
    return (
        WorkflowExecution.objects.filter(workflow_name=workflow_name, idempotency_key=key)
        .values_list("id", flat=True)
        .first()
    )
