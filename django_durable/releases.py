"""Giving held work back: a worker that stops, loses its database or dies (its lease
lapses) hands its executions back unheld, so another worker takes them.

Each release is a change of status through the door (`executions.transition`, or
`finish` when too many interruptions in a row make the execution give up), one
execution per transaction, under the lock order.
"""

import uuid
from collections.abc import Collection, Sequence

from django.db import transaction
from django.db.models import QuerySet

from . import claims, clock, conf, executions
from .errors import ExecutionNotFound
from .models import RELEASED_AS, ExecutionStatus, StepExecution, StepStatus, WorkflowExecution

RELEASE_BATCH = 500
# Where an execution interrupted too often ends, by the phase it was in.
GIVEN_UP_AS = {
    ExecutionStatus.RUNNING: ExecutionStatus.FAILED,
    ExecutionStatus.COMPENSATING: ExecutionStatus.COMPENSATION_FAILED,
}


def release(
    worker: str,
    error_type: str,
    message: str,
    execution_id: uuid.UUID | None = None,
    run_tokens: Sequence[uuid.UUID] = (),
    keep: Collection[uuid.UUID] = (),
) -> int:
    """Give back what `worker` holds (but the executions in `keep`), or its claim of
    `execution_id` held under one of `run_tokens`, so another worker takes it."""
    held = WorkflowExecution.objects.filter(locked_by=worker).exclude(id__in=list(keep))
    if execution_id is not None:
        held = held.filter(id=execution_id, run_token__in=list(run_tokens))
    return requeue(held, error_type, message)


def give_back_lost_claim(worker: str, token: uuid.UUID, counted: bool = False) -> int:
    """Give back what a claim leased to `worker` under `token`, if the database kept the
    claim although the worker could not take it (`claims.claim_and_start`): its reply
    was lost, or reading it failed. Its attempt never began: the row the claim opened is
    removed. A lost reply costs nothing; a failure after the reply is `counted` as a
    recovery, so one that repeats ends at MAX_RECOVERIES instead of looping."""
    held = WorkflowExecution.objects.filter(locked_by=worker, run_token=token)
    message = "The worker could not take up its claim; the step runs again."
    return requeue(held, "WorkerError", message, unheard=True, counted=counted)


def requeue(
    candidates: QuerySet,
    error_type: str,
    message: str,
    unheard: bool = False,
    counted: bool = False,
) -> int:
    """Give held executions back unheld (running -> pending, compensating stays), up to
    RELEASE_BATCH of them, each in its own transaction and under its row lock.

    Clearing `run_token` fences the interrupted attempt: if it is still running
    somewhere, nothing it returns can be recorded. An interruption does not use up a
    retry; an attempt that really started counts towards DURABLE["MAX_RECOVERIES"], so
    a step that keeps killing its worker fails instead of running forever, while a
    claim lost before its attempt began (the database went away) costs nothing.
    """
    ids = list(candidates.order_by("id").values_list("id", flat=True)[:RELEASE_BATCH])
    released = 0
    for execution_id in ids:
        with transaction.atomic():
            try:
                execution = executions.lock(execution_id)
            except ExecutionNotFound:
                continue
            if not candidates.filter(id=execution_id).exists():
                continue  # let go meanwhile: finished, or released by someone else
            _requeue_one(execution, error_type, message, unheard, counted)
            released += 1
    return released


def _requeue_one(
    execution: WorkflowExecution, error_type: str, message: str, unheard: bool, counted: bool
) -> None:
    now = clock.now()
    interruption = {"type": error_type, "message": message, "traceback": ""}
    started = 0
    if unheard:
        claims.discard_opened_attempt(execution.run_token)
        started = int(counted)
    elif execution.run_token is not None:
        started = StepExecution.objects.filter(
            id=execution.run_token, status=StepStatus.RUNNING
        ).update(status=StepStatus.FAILED, completed_at=now, error=interruption)
    limit = conf.get("MAX_RECOVERIES")
    recoveries = execution.recoveries + started
    if recoveries >= limit:
        too_many = {
            "type": "TooManyInterruptions",
            "message": f"The step was interrupted {limit} times in a row ({error_type}: "
            f"{message}); it is not run again. Resume the execution to try once more.",
            "traceback": "",
        }
        given_up = GIVEN_UP_AS[execution.status]
        executions.finish(execution, given_up, error=too_many, fenced=False, now=now)
        return
    executions.transition(
        execution,
        RELEASED_AS[execution.status],
        fenced=False,
        run_at=now,
        recoveries=recoveries,
        **claims.LEASE_CLEARED,
    )
    claims.notify(execution.run_queue)
