"""Running a claimed execution: one attempt at a time, each recorded before the next.

A claimed execution is run by `run_claimed`, which the worker's threads and
`testing.run_until_idle` both call. Each attempt is a `StepExecution` row inserted when
the attempt starts (fenced on the claim, `claims.start_attempt`); the node runs (a step
calls its function, a container routes or forks) and what it produced is judged here
and written by `recording`, which also hands over the next step when this thread runs
it too. A chained step is one statement and one commit on PostgreSQL.

Every step receives the context decoded from exactly what was stored: the engine
encodes what a step returns once, writes that, and hands the next step a fresh decode
of it, whether the next step runs here at once, after a retry or on another worker.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.db import connection, transaction

from . import (
    claims,
    clock,
    codec,
    compensations,
    conf,
    executions,
    forks,
    logcapture,
    recording,
    registry,
    signals,
)
from .dsl import Fork, Goto, Move, Step
from .errors import (
    ContextNotSerializable,
    DurableError,
    StepReturnedInvalidValue,
    error_record,
)
from .executions import LeaseLost
from .models import (
    RELEASED_AS,
    ExecutionKind,
    ExecutionStatus,
    StepExecution,
    WorkflowExecution,
)
from .scope import Interrupted, StepScope, Superseded, Suspend, entered

UNKNOWN_RETRY = timedelta(minutes=1)


log = logging.getLogger("django_durable.engine")


def run_claimed(
    execution: WorkflowExecution,
    *,
    worker: str,
    queues: Sequence[str] | None,
    keep_going: Callable[[int], bool] | None = None,
    on_attempt: Callable[[StepExecution, Step], None] | None = None,
    tokens: set | None = None,
) -> int:
    """Run a claimed execution's steps until it finishes, waits, or must go elsewhere.

    The worker keeps the execution while the next step is runnable on one of `queues`
    (None: any) and `keep_going(attempts run so far)` allows, so a chain of steps needs
    one claim. `on_attempt` is told of each attempt as it starts (the worker watches
    step timeouts with it). `tokens` collects every run token this thread may hold the
    execution by, added *before* the commit that installs it, so after a commit whose
    outcome is unknown the worker can still release whatever the database kept.
    Returns the attempts run.
    """
    tokens = set() if tokens is None else tokens
    tokens.add(execution.run_token)
    try:
        definition = registry.for_execution(execution)
        run = recording.Run(
            execution, definition, worker, queues, tokens, codec.encode(execution.context)
        )
        attempt = _open_first_attempt(run, recording.running_node(definition, execution))
    except DurableError as exc:
        _set_aside(execution, exc)
        return 0
    attempts = 0
    while attempt is not None:
        node = recording.running_node(definition, execution)
        if on_attempt is not None:
            on_attempt(attempt, node)
        outcome = _run_captured(execution, node, attempt, codec.decode(run.stored), _unit(run))
        attempts += 1
        must_stop = keep_going is not None and not keep_going(attempts)
        attempt = recording.record(run, attempt, outcome, must_stop)
    return attempts


def _unit(run: recording.Run) -> forks.Unit:
    execution, graph = run.execution, run.definition.graph
    if execution.status == ExecutionStatus.COMPENSATING:
        return compensations.CompensationUnit(execution, graph, compensations.next_entry(execution))
    return forks.Unit(execution, graph, execution.current_step)


def _open_first_attempt(run: recording.Run, node: Step) -> StepExecution | None:
    """The claim's first attempt: opened by the claim itself (`claims.claim_and_start`),
    or here if the claim still holds (see `claims.start_attempt`)."""
    execution = run.execution
    attempt = getattr(execution, "opened_attempt", None)
    if attempt is None:
        undoes = None
        if execution.status == ExecutionStatus.COMPENSATING:
            undoes = compensations.next_entry(execution)
        attempt = recording.new_attempt(run, node, execution.run_token, execution.attempt, undoes)
        if not claims.start_attempt(attempt, execution.id, execution.run_token):
            return None
    claimed_from = getattr(execution, "claimed_from", None)
    if claimed_from == ExecutionStatus.WAITING and execution.kind == ExecutionKind.WORKFLOW:
        signals.emit(
            signals.workflow_resumed, WorkflowExecution, execution=execution, reason="wait"
        )
    recording.announce_start(execution, attempt)
    return attempt


def _set_aside(execution: WorkflowExecution, exc: DurableError) -> None:
    """A claimed execution this process cannot run (an unknown workflow or step, as when
    a worker still runs older code during a deploy): give it back for one that can."""
    log.warning(
        "Execution %s cannot run here (%s); retrying in %s.", execution.id, exc, UNKNOWN_RETRY
    )
    error = error_record(exc)
    opened = getattr(execution, "opened_attempt", None)
    now = clock.now()
    try:
        with transaction.atomic():
            note = {} if execution.status == ExecutionStatus.COMPENSATING else {"error": error}
            executions.transition(
                execution,
                RELEASED_AS[execution.status],
                run_at=now + UNKNOWN_RETRY,
                **note,  # shown in the admin until a worker that knows it claims it
                **claims.LEASE_CLEARED,
            )
            if opened is not None:  # the claim opened an attempt: nothing of it ran
                claims.discard_opened_attempt(opened.id)
    except LeaseLost:
        pass


def _run_captured(
    execution: WorkflowExecution, step: Step, attempt: StepExecution, ctx, unit: forks.Unit
) -> recording.Outcome:
    """Run the node, keeping what it logs and prints for its attempt row (`logcapture`)."""
    if not conf.get("LOG_CAPTURE"):
        return _run_step(execution, step, attempt, ctx, unit)
    with logcapture.captured() as capture:
        outcome = _run_step(execution, step, attempt, ctx, unit)
    outcome.logs = capture.entries
    return outcome


def _run_step(
    execution: WorkflowExecution, step: Step, attempt: StepExecution, ctx, unit: forks.Unit
) -> recording.Outcome:
    """Run the node (a step calls its function) and judge what it returned."""
    scope = StepScope(
        execution.id,
        attempt.id,
        step.name,
        execution.step_seq,
        root_id=execution.root_id,
        atomic_depth=len(connection.atomic_blocks),
    )
    try:
        with entered(scope), _shielded_caller_transaction():
            returned = step.run(ctx, unit)
    except Suspend as suspension:
        return recording.Outcome(finished_at=clock.now(), suspension=suspension)
    except Superseded:
        return recording.Outcome(finished_at=clock.now(), superseded=True)
    except Interrupted as interrupted:
        # The database's failure, not the step's: the worker releases it, no retry spent.
        raise interrupted.error from None
    except BaseException as exc:  # even SystemExit from a step fails only that step
        finished_at = clock.now()
        if recording.overran(step, attempt, finished_at):
            return recording.timed_out(step, finished_at)
        return recording.Outcome(
            finished_at=finished_at,
            error=error_record(exc),
            retryable=getattr(exc, "retryable", True),
        )
    finished_at = clock.now()
    if recording.overran(step, attempt, finished_at):
        return recording.timed_out(step, finished_at)
    if returned is None:
        return recording.Outcome(finished_at=finished_at)
    if recording.is_move(returned):
        return _moved(returned, finished_at)
    if not isinstance(returned, dict):
        return recording.Outcome(
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
        stored = codec.encode(returned)
    except (ContextNotSerializable, RecursionError) as exc:
        return recording.Outcome(finished_at=finished_at, retryable=False, error=error_record(exc))
    return recording.Outcome(finished_at=finished_at, stored=stored)


def _moved(move: Move, finished_at: datetime) -> recording.Outcome:
    """A node that chose where to go: what it carries must be storable, or the node
    fails for good (running it again would choose the same)."""
    try:
        if isinstance(move, Goto):
            return recording.Outcome(
                finished_at=finished_at, stored=codec.encode(move.context), move=move
            )
        if isinstance(move, Fork):
            for member in move.members:
                codec.encode(member.item, f"item {member.index}")
    except (ContextNotSerializable, RecursionError) as exc:
        return recording.Outcome(finished_at=finished_at, retryable=False, error=error_record(exc))
    return recording.Outcome(finished_at=finished_at, move=move)


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
