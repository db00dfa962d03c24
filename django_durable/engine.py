"""The engine: starting executions and running their steps.

A claimed execution is run by `run_claimed`, which the worker's threads and
`testing.run_until_idle` both call. Each attempt is a `StepExecution` row inserted when
the attempt starts; when it ends, one transaction closes that row, advances the
execution and (if the next step runs here too) opens the next attempt's row, so a chained
step costs three statements and one commit. Every write to the execution is fenced on
its `run_token`, the id of the attempt allowed to write.
"""

import copy
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import QuerySet

from . import claims, clock, codec, conf, events, registry, waits
from .dsl import Retry, Step, Workflow
from .errors import (
    ContextNotSerializable,
    DurableError,
    ExecutionNotActive,
    ExecutionNotResumable,
    InvalidWorkflowInput,
    StepReturnedInvalidValue,
    StepTimeout,
    WorkflowTimeout,
)
from .models import (
    ACTIVE_STATUSES,
    ExecutionStatus,
    InputStatus,
    PendingInput,
    StepExecution,
    StepStatus,
    WorkflowExecution,
)
from .scope import StepScope, Superseded, Suspend, entered

UNKNOWN_RETRY = timedelta(minutes=1)
DEADLINE_BATCH = 500

log = logging.getLogger("django_durable.engine")


class LeaseLost(Exception):
    """The attempt no longer owns the execution; its result must be discarded."""


@dataclass
class Outcome:
    """What one attempt produced, before anything is written."""

    finished_at: datetime
    context: dict | None = None
    output: Any = None
    error: dict | None = None
    retryable: bool = True
    suspension: Suspend | None = None
    superseded: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None


# -- starting and controlling executions ------------------------------------------------


def start(
    workflow_or_name: "Workflow | str",
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
    input = _checked_input(input)
    _check_start_options(queue, priority, scheduled_at)
    if idempotency_key is not None:
        existing = _by_idempotency_key(definition.name, idempotency_key)
        if existing is not None:
            return existing
    now = clock.now()
    run_at = max(scheduled_at, now) if scheduled_at else now
    queue = queue or definition.queue
    execution = WorkflowExecution(
        workflow_name=definition.name,
        workflow_version=definition.version,
        queue=queue,
        run_queue=_run_queue(definition, definition.first_step, queue),
        priority=priority,
        input=input,
        context=input,
        current_step=definition.first_step,
        idempotency_key=idempotency_key,
        scheduled_at=scheduled_at,
        run_at=run_at,
        deadline=run_at + definition.timeout if definition.timeout else None,
        created_at=now,
    )
    try:
        with transaction.atomic():
            execution.save(force_insert=True)
            claims.notify(execution.run_queue)
    except IntegrityError:
        existing = _by_idempotency_key(definition.name, idempotency_key)
        if idempotency_key is None or existing is None:
            raise
        return existing
    return execution.id


def _run_queue(definition: Workflow, step_name: str, queue: str) -> str:
    """Where a step is claimed from: its own queue, else the execution's."""
    return definition.get_step(step_name).queue or queue


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
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise InvalidWorkflowInput("queue must be a non-empty string.")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidWorkflowInput(f"priority must be an int, not {type(priority).__name__}.")
    if not -(2**31) <= priority < 2**31:
        raise InvalidWorkflowInput("priority must fit in 32 bits (-2**31 to 2**31 - 1).")
    if scheduled_at is not None:
        if not isinstance(scheduled_at, datetime) or scheduled_at.tzinfo is None:
            raise InvalidWorkflowInput("scheduled_at must be a time-zone aware datetime.")


def _by_idempotency_key(workflow_name: str, key: str | None) -> uuid.UUID | None:
    return (
        WorkflowExecution.objects.filter(workflow_name=workflow_name, idempotency_key=key)
        .values_list("id", flat=True)
        .first()
    )


def get_execution(
    execution_id: "uuid.UUID | str", include_steps: bool = False
) -> WorkflowExecution:
    """Load an execution; with `include_steps`, `execution.steps` lists its attempts in order."""
    execution = WorkflowExecution.objects.by_id(execution_id)
    if include_steps:
        execution.steps = list(execution.step_executions.order_by("started_at", "attempt"))
    return execution


def list_executions(
    workflow: "Workflow | str | None" = None,
    status: str | Sequence[str] | None = None,
    queue: str | None = None,
    parent: "uuid.UUID | str | None" = None,
    limit: int = 100,
    offset: int = 0,
) -> QuerySet:
    """Executions, newest first, optionally filtered."""
    executions = WorkflowExecution.objects.order_by("-created_at")
    if workflow is not None:
        executions = executions.filter(
            workflow_name=workflow.name if isinstance(workflow, Workflow) else workflow
        )
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        executions = executions.filter(status__in=statuses)
    if queue is not None:
        executions = executions.filter(queue=queue)
    if parent is not None:
        executions = executions.filter(parent_id=parent)
    return executions[offset : offset + limit]


def cancel(
    execution_id: "uuid.UUID | str", reason: str | None = None, *, compensate: bool = False
) -> WorkflowExecution:
    """Stop an active execution (and its active children); a running attempt's result is
    discarded because the cancellation revokes its run token."""
    if compensate:
        raise NotImplementedError("cancel(compensate=True) arrives with compensations.")
    with transaction.atomic():
        execution = WorkflowExecution.objects.select_for_update().by_id(execution_id)
        if execution.status not in ACTIVE_STATUSES:
            raise ExecutionNotActive(
                f"Execution {execution.id} is {execution.status}; only pending, running or "
                "waiting executions can be cancelled."
            )
        _cancel_tree(execution, reason, clock.now())
    return get_execution(execution.id)


def _cancel_tree(execution: WorkflowExecution, reason: str | None, now: datetime) -> None:
    _interrupt_attempt(execution, now, "Cancelled", "The execution was cancelled.")
    _withdraw_inputs(execution)
    WorkflowExecution.objects.filter(id=execution.id).update(
        status=ExecutionStatus.CANCELLED,
        cancel_reason=reason,
        completed_at=now,
        **claims.LEASE_CLEARED,
    )
    for child in execution.children.select_for_update().filter(status__in=ACTIVE_STATUSES):
        _cancel_tree(child, reason, now)


def _withdraw_inputs(execution: WorkflowExecution) -> None:
    """Questions of an execution that stopped can no longer be answered."""
    PendingInput.objects.filter(execution=execution, status=InputStatus.PENDING).update(
        status=InputStatus.CANCELLED
    )


def _interrupt_attempt(
    execution: WorkflowExecution, now: datetime, error_type: str, message: str
) -> None:
    if execution.run_token:
        StepExecution.objects.filter(id=execution.run_token, status=StepStatus.RUNNING).update(
            status=StepStatus.FAILED,
            completed_at=now,
            error={"type": error_type, "message": message, "traceback": ""},
        )


def resume(execution_id: "uuid.UUID | str") -> WorkflowExecution:
    """Run a failed or cancelled execution again from the step that stopped it."""
    with transaction.atomic():
        execution = WorkflowExecution.objects.select_for_update().by_id(execution_id)
        if execution.status not in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
            raise ExecutionNotResumable(
                f"Execution {execution.id} is {execution.status}; only failed or cancelled "
                "executions can be resumed."
            )
        definition = registry.get(execution.workflow_name)
        now = clock.now()
        current = execution.current_step or definition.first_step
        run_queue = _run_queue(definition, current, execution.queue)
        WorkflowExecution.objects.filter(id=execution.id).update(
            status=ExecutionStatus.PENDING,
            current_step=current,
            attempt=1,
            step_seq=execution.step_seq + 1,
            recoveries=0,
            error=None,
            completed_at=None,
            run_at=now,
            run_queue=run_queue,
            deadline=now + definition.timeout if definition.timeout else None,
            **claims.LEASE_CLEARED,
        )
        claims.notify(run_queue)
    return get_execution(execution.id)


# -- running steps ---------------------------------------------------------------------


def run_claimed(
    execution: WorkflowExecution,
    *,
    worker: str,
    queues: Sequence[str] | None,
    keep_going: Callable[[int], bool] | None = None,
    on_attempt: Callable[[StepExecution, Step], None] | None = None,
) -> int:
    """Run a claimed execution's steps until it finishes, waits, or must go elsewhere.

    The worker keeps the execution while the next step is runnable on one of `queues`
    (None: any) and `keep_going(attempts run so far)` allows, so a chain of steps needs
    one claim. `on_attempt` is told of each attempt as it starts (the worker watches
    step timeouts with it). Returns the attempts run.
    """
    try:
        definition = registry.get(execution.workflow_name)
        definition.get_step(execution.current_step)
    except DurableError as exc:
        _set_aside_unrunnable(execution, exc)
        return 0
    run = _open_attempt(execution, worker)
    attempts = 0
    while run is not None:
        step = definition.get_step(run.step_name)
        if on_attempt is not None:
            on_attempt(run, step)
        outcome = _run_step(execution, step, run)
        attempts += 1
        must_stop = keep_going is not None and not keep_going(attempts)
        run = _record(execution, definition, run, outcome, worker, queues, must_stop)
    return attempts


def _open_attempt(execution: WorkflowExecution, worker: str) -> StepExecution:
    run = StepExecution(
        id=execution.run_token,
        execution=execution,
        step_name=execution.current_step,
        attempt=execution.attempt,
        status=StepStatus.RUNNING,
        worker=worker,
        started_at=clock.now(),
    )
    run.save(force_insert=True)
    return run


def _set_aside_unrunnable(execution: WorkflowExecution, exc: DurableError) -> None:
    """A claimed execution whose workflow or step this process does not know, as when a
    worker still runs older code during a deploy: give it back for a worker that does."""
    log.warning(
        "Execution %s cannot run here (%s); retrying in %s.", execution.id, exc, UNKNOWN_RETRY
    )
    WorkflowExecution.objects.filter(id=execution.id, run_token=execution.run_token).update(
        status=ExecutionStatus.PENDING,
        run_at=clock.now() + UNKNOWN_RETRY,
        error=error_record(exc),  # shown in the admin until a worker that knows it claims it
        **claims.LEASE_CLEARED,
    )


def _run_step(execution: WorkflowExecution, step: Step, run: StepExecution) -> Outcome:
    """Call the step function on a private copy of the context and judge what it returned."""
    context = execution.context
    scope = StepScope(
        execution.id, run.id, step.name, execution.step_seq, len(connection.atomic_blocks)
    )
    try:
        with entered(scope), _shielded_caller_transaction():
            returned = step.fn(copy.deepcopy(context))
    except Suspend as suspension:
        return Outcome(finished_at=clock.now(), suspension=suspension)
    except Superseded:
        return Outcome(finished_at=clock.now(), superseded=True)
    except BaseException as exc:  # even SystemExit from a step fails only that step
        finished_at = clock.now()
        if _overran(step, run, finished_at):
            return _timed_out(step, finished_at)
        return Outcome(
            finished_at=finished_at,
            error=error_record(exc),
            retryable=getattr(exc, "retryable", True),
        )
    finished_at = clock.now()
    if _overran(step, run, finished_at):
        return _timed_out(step, finished_at)
    if returned is None:
        return Outcome(finished_at=finished_at, context=context)
    if not isinstance(returned, dict):
        return Outcome(
            finished_at=finished_at,
            retryable=False,
            error=error_record(
                StepReturnedInvalidValue(
                    f"Step {step.name!r} returned {type(returned).__name__}; a step returns "
                    "the new context (a dict) or None to keep it unchanged."
                )
            ),
        )
    try:
        codec.encode(returned)
    except (ContextNotSerializable, RecursionError) as exc:
        return Outcome(finished_at=finished_at, retryable=False, error=error_record(exc))
    return Outcome(finished_at=finished_at, context=returned, output=returned)


@contextmanager
def _shielded_caller_transaction() -> Iterator[None]:
    """Keep a step's database error from poisoning a transaction the engine runs in.

    A worker runs steps in autocommit and needs nothing. `run_until_idle` inside a test's
    transaction does: a failed query would abort that transaction and the engine could
    not record the failure, so the step runs behind a savepoint, rolled back only when
    the step left the transaction broken.
    """
    if not connection.in_atomic_block:
        yield
        return
    savepoint = transaction.savepoint()
    try:
        yield
    except BaseException:
        if _transaction_broken():
            transaction.savepoint_rollback(savepoint)
            transaction.set_rollback(False)
        else:
            transaction.savepoint_commit(savepoint)
        raise
    transaction.savepoint_commit(savepoint)


def _transaction_broken() -> bool:
    if connection.needs_rollback:
        return True
    if connection.vendor != "postgresql":
        return False
    from psycopg.pq import TransactionStatus

    return connection.connection.info.transaction_status == TransactionStatus.INERROR


def _overran(step: Step, run: StepExecution, finished_at: datetime) -> bool:
    return step.timeout is not None and finished_at - run.started_at > step.timeout


def _timed_out(step: Step, finished_at: datetime) -> Outcome:
    """An attempt past its step timeout: whatever it returned or raised is discarded."""
    message = f"Step {step.name!r} ran longer than its timeout of {step.timeout}."
    return Outcome(finished_at=finished_at, error=error_record(StepTimeout(message)))


def _record(
    execution: WorkflowExecution,
    definition: Workflow,
    run: StepExecution,
    outcome: Outcome,
    worker: str,
    queues: Sequence[str] | None,
    must_stop: bool,
) -> StepExecution | None:
    """Write an attempt's outcome and the execution's next state in one transaction.

    Returns the next attempt when this worker continues with it, else None.
    """
    if outcome.superseded:
        _close_superseded(run)
        return None
    # `_advance` updates the in-memory execution as it writes; if the transaction then
    # rolls back, the object must say again what the database says.
    committed = dict(execution.__dict__)
    try:
        with transaction.atomic():
            if outcome.suspension is not None:
                _record_suspension(execution, run, outcome)
                return None
            if outcome.failed:
                _record_failure(execution, definition, run, outcome)
                return None
            return _record_success(execution, definition, run, outcome, worker, queues, must_stop)
    except LeaseLost:
        _close_superseded(run)
        return None
    except (OperationalError, InterfaceError):
        execution.__dict__.update(committed)
        raise  # the connection, not the outcome: the worker releases and retries later
    except Exception as exc:
        execution.__dict__.update(committed)
        _record_unrecordable(execution, definition, run, outcome, exc)
        return None


def _record_unrecordable(execution, definition, run, outcome, exc: Exception) -> None:
    """The database refused the outcome (a value it cannot store, say): fail the step
    for good instead of running it again and again."""
    prefix = f"The outcome of step {run.step_name!r} could not be stored: "
    failure = Outcome(
        finished_at=outcome.finished_at, retryable=False, error=error_record(exc, prefix)
    )
    try:
        with transaction.atomic():
            _record_failure(execution, definition, run, failure)
    except LeaseLost:
        _close_superseded(run)


def _close_superseded(run: StepExecution) -> None:
    """An attempt that lost its execution: close its row if nothing else did."""
    StepExecution.objects.filter(id=run.id, status=StepStatus.RUNNING).update(
        status=StepStatus.FAILED,
        completed_at=clock.now(),
        error={
            "type": "Superseded",
            "message": "The attempt lost its claim (cancelled, timed out or reclaimed); "
            "its result was discarded.",
            "traceback": "",
        },
    )


def _record_success(execution, definition, run, outcome, worker, queues, must_stop):
    now = outcome.finished_at
    next_name = definition.step_after(run.step_name)
    if execution.deadline is not None and now >= execution.deadline and next_name:
        _advance(
            execution,
            context=outcome.context,
            current_step=next_name,  # resume continues after the step that completed
            attempt=1,
            **_failed(_workflow_timeout(execution), now),
        )
        _close_attempt(run, StepStatus.COMPLETED, outcome)
        return None
    if next_name is None:
        _advance(
            execution,
            status=ExecutionStatus.COMPLETED,
            context=outcome.context,
            current_step=None,
            completed_at=now,
            recoveries=0,
            **claims.LEASE_CLEARED,
        )
        _close_attempt(run, StepStatus.COMPLETED, outcome)
        return None
    next_queue = _run_queue(definition, next_name, execution.queue)
    stays_here = not must_stop and (queues is None or next_queue in queues)
    moves = {
        "context": outcome.context,
        "current_step": next_name,
        "attempt": 1,
        "step_seq": execution.step_seq + 1,
        "recoveries": 0,
    }
    if not stays_here:
        _advance(
            execution,
            status=ExecutionStatus.PENDING,
            run_queue=next_queue,
            run_at=now,
            **moves,
            **claims.LEASE_CLEARED,
        )
        _close_attempt(run, StepStatus.COMPLETED, outcome)
        claims.notify(next_queue)
        return None
    next_run = StepExecution(
        id=uuid.uuid4(),
        execution=execution,
        step_name=next_name,
        attempt=1,
        status=StepStatus.RUNNING,
        worker=worker,
        started_at=now,
    )
    _advance(execution, run_queue=next_queue, run_token=next_run.id, **moves)
    _close_attempt(run, StepStatus.COMPLETED, outcome)
    next_run.save(force_insert=True)
    return next_run


def _record_suspension(execution, run, outcome) -> None:
    """Park the execution on its wait, unless the wait was satisfied while parking."""
    suspension = outcome.suspension
    _advance(
        execution,
        status=ExecutionStatus.WAITING,
        run_at=suspension.wake_at,
        recoveries=0,  # the attempt ended normally
        **claims.LEASE_CLEARED,
    )
    _close_attempt(run, StepStatus.WAITING, outcome)
    if waits.can_resume(execution.id, execution.step_seq, suspension.key):
        events.wake(execution)


def _record_failure(execution, definition, run, outcome) -> None:
    now = outcome.finished_at
    policy = retry_policy(definition, definition.get_step(run.step_name))
    if outcome.retryable and execution.attempt < policy.max_attempts:
        _advance(
            execution,
            status=ExecutionStatus.PENDING,
            attempt=execution.attempt + 1,
            recoveries=0,
            run_at=now + policy.delay_after(execution.attempt),
            **claims.LEASE_CLEARED,
        )
        claims.notify(execution.run_queue)
    else:
        _advance(execution, **_failed(outcome.error, now))
    _close_attempt(run, StepStatus.FAILED, outcome)


def retry_policy(definition: Workflow, step: Step) -> Retry:
    """The step's own policy, else the workflow's, else DURABLE["DEFAULT_RETRY"], else once."""
    return step.retry or definition.retry or Retry.coerce(conf.get("DEFAULT_RETRY")) or Retry()


def _failed(error: dict, now: datetime) -> dict:
    return {
        "status": ExecutionStatus.FAILED,
        "error": error,
        "completed_at": now,
        **claims.LEASE_CLEARED,
    }


def _workflow_timeout(execution: WorkflowExecution) -> dict:
    return error_record(
        WorkflowTimeout(
            f"Workflow {execution.workflow_name!r} did not finish by its deadline "
            f"({execution.deadline:%Y-%m-%d %H:%M:%S %Z})."
        )
    )


def _advance(execution: WorkflowExecution, **changes: Any) -> None:
    """Apply `changes` to the execution if this attempt still owns it, else LeaseLost."""
    updated = WorkflowExecution.objects.filter(
        id=execution.id, run_token=execution.run_token
    ).update(**changes)
    if not updated:
        raise LeaseLost(execution.id)
    for name, value in changes.items():
        setattr(execution, name, value)


def _close_attempt(run: StepExecution, status: str, outcome: Outcome) -> None:
    StepExecution.objects.filter(id=run.id).update(
        status=status,
        output=outcome.output,
        error=outcome.error,
        completed_at=outcome.finished_at,
        duration_ms=_milliseconds(outcome.finished_at - run.started_at),
    )


def _milliseconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


def error_record(exc: BaseException, prefix: str = "") -> dict:
    """How an error is stored: its type, message and traceback (NUL-free for PostgreSQL)."""
    return {
        "type": type(exc).__name__,
        "message": _storable(prefix + str(exc)),
        "traceback": _storable("".join(traceback.format_exception(exc))),
    }


def _storable(text: str) -> str:
    return text.replace("\x00", "\\x00")


# -- timers ----------------------------------------------------------------------------


def time_out_attempt(execution_id: uuid.UUID, run_token: uuid.UUID) -> bool:
    """Fail an attempt still running past its step timeout; its late result is discarded."""
    execution = WorkflowExecution.objects.filter(id=execution_id, run_token=run_token).first()
    if execution is None:
        return False
    definition = registry.get(execution.workflow_name)
    step = definition.get_step(execution.current_step)
    run = StepExecution.objects.get(id=run_token)
    outcome = _timed_out(step, clock.now())
    try:
        with transaction.atomic():
            _record_failure(execution, definition, run, outcome)
    except LeaseLost:
        return False
    return True


def expire_deadlines() -> int:
    """Fail active executions whose workflow timeout has passed."""
    now = clock.now()
    expired = 0
    with transaction.atomic():
        overdue = WorkflowExecution.objects.select_for_update(skip_locked=True).filter(
            status__in=ACTIVE_STATUSES, deadline__lte=now
        )[:DEADLINE_BATCH]
        for execution in overdue:
            _interrupt_attempt(execution, now, "WorkflowTimeout", "The workflow timed out.")
            _withdraw_inputs(execution)
            WorkflowExecution.objects.filter(id=execution.id).update(
                **_failed(_workflow_timeout(execution), now)
            )
            expired += 1
    return expired


def run_timers() -> None:
    """Due work that no claim picks up by itself: lapsed leases and passed deadlines."""
    claims.reclaim_expired_leases()
    expire_deadlines()
