"""Workflows that run workflows: a step starts a child and waits for it, or lets it go.

A child is an execution of its own (`kind` workflow, its own root, so events for the
parent do not reach it), linked by `parent` and by the step attempt that started it
(`StepExecution.child`). It is started in the transaction that records the step's
`Wait` for it (key `child:<workflow>[:<ref>]`), fenced on the step's claim: a step that
runs again finds its child there and never starts a second one, whenever it crashed.
`call_workflow` parks the step until the child finishes; the child's ending (the door,
`executions.finish`) wakes the parent in the same transaction.
"""

import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from . import clock, events, executions, registry, starting
from .dsl.names import NODE_ID, checked_name
from .durations import to_timedelta
from .errors import ChildWorkflowFailed, ExecutionNotActive, WorkflowDefinitionError
from .models import (
    FINAL_STATUSES,
    ExecutionKind,
    ExecutionStatus,
    StepExecution,
    Wait,
    WaitStatus,
    WorkflowExecution,
)
from .scope import StepScope, Suspend, check_still_owner, current, engine_call, is_due

KEY_PREFIX = "child:"
TIMED_OUT = "timed_out"


@engine_call
def call_workflow(
    workflow: "registry.Definition | str",
    input: dict | None = None,
    *,
    ref: str | None = None,
    timeout: timedelta | int | float | None = None,
    queue: str | None = None,
) -> dict:
    """Run a child workflow and return its final context; the step waits (parked, not
    holding a worker) until the child finishes. Raises `ChildWorkflowFailed` if the
    child does not complete, or, with `timeout`, if it has not by then (the child is
    cancelled, reason "parent timed out", and `.status` is "timed_out")."""
    scope = current("call_workflow")
    delta = to_timedelta(timeout, "call_workflow timeout")
    wait = _child_wait(scope, workflow, input, ref, queue, delta, waits=True)
    child = WorkflowExecution.objects.get(id=wait.result["child"])
    if wait.status != WaitStatus.TIMED_OUT and child.status in FINAL_STATUSES:
        events.end_wait(wait, WaitStatus.RESOLVED)
        return _outcome(child)
    if wait.status == WaitStatus.TIMED_OUT or is_due(wait.wake_at):
        _give_up_on(child, wait)
        raise ChildWorkflowFailed(
            f"Child workflow {child.workflow_name!r} ({child.id}) did not finish within "
            f"{delta}; it was cancelled.",
            execution_id=child.id,
            status=TIMED_OUT,
        )
    raise Suspend(wait.key, wait.wake_at)


@engine_call
def start_workflow(
    workflow: "registry.Definition | str",
    input: dict | None = None,
    *,
    ref: str | None = None,
    queue: str | None = None,
) -> uuid.UUID:
    """Start a child workflow and return its id at once; the step goes on. The child is
    cancelled with its parent, but the parent does not wait for it."""
    scope = current("start_workflow")
    wait = _child_wait(scope, workflow, input, ref, queue, None, waits=False)
    return uuid.UUID(wait.result["child"])


def list_children(parent_id: "uuid.UUID | str", status: str | None = None) -> QuerySet:
    """The child workflows an execution (or its branches and items) started, oldest first."""
    parent = executions.get_execution(parent_id)
    children = WorkflowExecution.objects.filter(
        kind=ExecutionKind.WORKFLOW, parent__root_id=parent.root_id
    ).exclude(id=parent.id)
    if status is not None:
        children = children.filter(status=status)
    return children.order_by("created_at", "id")


def child_finished(wait: Wait) -> bool:
    """Whether the child a parked step waits for has finished (it may have while the
    step was parking)."""
    status = WorkflowExecution.objects.filter(id=wait.result["child"]).values_list(
        "status", flat=True
    )
    return status.first() in FINAL_STATUSES


# -- internals ---------------------------------------------------------------------------


def _child_wait(
    scope: StepScope,
    workflow: Any,
    input: dict | None,
    ref: str | None,
    queue: str | None,
    timeout: timedelta | None,
    *,
    waits: bool,
) -> Wait:
    """The step visit's record of its child, starting the child the first time."""
    definition = registry.get(workflow)
    key = _key(definition.name, ref)
    if key in scope.children:
        raise WorkflowDefinitionError(
            f"This step starts workflow {definition.name!r} twice with the same ref "
            f"({ref!r}); give each call its own ref=... so a re-run can tell them apart."
        )
    scope.children.add(key)
    found = Wait.objects.filter(
        execution_id=scope.execution_id, step_seq=scope.step_seq, key=key
    ).first()
    if found is not None:
        return found
    now = clock.now()
    with transaction.atomic():
        check_still_owner(scope)  # locks the parent: one child, by the attempt that owns it
        parent = WorkflowExecution.objects.get(id=scope.execution_id)
        child_id = starting.create_execution(
            definition,
            input,
            queue=queue,
            parent=parent,
            parent_step_seq=scope.step_seq if waits else None,
        )
        StepExecution.objects.filter(id=scope.run_token).update(child_id=child_id)
        return Wait.objects.create(
            execution_id=scope.execution_id,
            root_id=scope.root_id,
            step_seq=scope.step_seq,
            step_name=scope.step_name,
            key=key,
            kind=Wait.Kind.CHILD,
            event_names=[],
            status=WaitStatus.WAITING if waits else WaitStatus.RESOLVED,
            wake_at=now + timeout if timeout else None,
            result={"child": str(child_id)},
            created_at=now,
            resolved_at=None if waits else now,
        )


def _key(workflow_name: str, ref: str | None) -> str:
    if ref is None:
        return f"{KEY_PREFIX}{workflow_name}"
    return f"{KEY_PREFIX}{workflow_name}:{checked_name(ref, 'A child ref', NODE_ID)}"


def _outcome(child: WorkflowExecution) -> dict:
    if child.status == ExecutionStatus.COMPLETED:
        return child.context
    raise ChildWorkflowFailed(
        f"Child workflow {child.workflow_name!r} ({child.id}) ended {child.status}"
        + (f": {child.error.get('message')}" if child.error else "."),
        execution_id=child.id,
        status=child.status,
        error=child.error,
    )


def _give_up_on(child: WorkflowExecution, wait: Wait) -> None:
    """The call's timeout passed: cancel the child (if it still runs) and keep that."""
    if child.status not in FINAL_STATUSES:
        try:
            executions.cancel(child.id, "parent timed out")
        except ExecutionNotActive:
            pass  # it finished meanwhile; the step asks again next time
    events.end_wait(wait, WaitStatus.TIMED_OUT)
