"""Running a claimed execution's steps, one attempt at a time, and recording each.

A claimed execution is run by `run_claimed`, which the worker's threads and
`testing.run_until_idle` both call. Each attempt is a `StepExecution` row inserted when
the attempt starts; when it ends, the door (`executions`) closes that row, moves the
execution on and, if the next step runs here too, opens the next attempt's row, all at
once: a chained step is one statement and one commit on PostgreSQL (three statements
in one transaction on SQLite). Every write is fenced on the execution's `run_token`,
the id of the attempt allowed to write.

Every step receives the context decoded from exactly what was stored: the engine
encodes what a step returns once, writes that, and hands the next step a fresh decode
of it, whether the next step runs here at once, after a retry or on another worker.
"""

import logging
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from . import claims, clock, codec, compensations, conf, executions, forks, registry, waits
from .dsl import End, Fork, Goto, Move, Next, Retry, Step, Workflow
from .errors import (
    ContextNotSerializable,
    DurableError,
    StepReturnedInvalidValue,
    StepTimeout,
    WorkflowTimeout,
)
from .executions import LeaseLost
from .models import RELEASED_AS, ExecutionStatus, StepExecution, StepStatus, WorkflowExecution
from .scope import DATABASE_ERRORS, Interrupted, StepScope, Superseded, Suspend, entered

UNKNOWN_RETRY = timedelta(minutes=1)

log = logging.getLogger("django_durable.engine")


@dataclass
class Outcome:
    """What one attempt produced, before anything is written. `stored` is the context
    to keep, already encoded (JSON-native); None keeps the one the step received."""

    finished_at: datetime
    stored: Any = None
    error: dict | None = None
    retryable: bool = True
    suspension: Suspend | None = None
    superseded: bool = False
    move: Move | None = None  # the node chose where to go (a jump, a case, a fork)

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class Run:
    """The execution a thread holds, and what it needs to go on with it."""

    execution: WorkflowExecution
    definition: Workflow
    worker: str
    queues: Sequence[str] | None
    tokens: set
    stored: Any  # the context as the row holds it, JSON-native


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
        definition = registry.get(execution.workflow_name)
        run = Run(execution, definition, worker, queues, tokens, codec.encode(execution.context))
        attempt = _open_first_attempt(run, running_node(definition, execution))
    except DurableError as exc:
        _set_aside(execution, exc)
        return 0
    attempts = 0
    while attempt is not None:
        node = running_node(definition, execution)
        if on_attempt is not None:
            on_attempt(attempt, node)
        outcome = _run_step(execution, node, attempt, codec.decode(run.stored), _unit(run))
        attempts += 1
        must_stop = keep_going is not None and not keep_going(attempts)
        attempt = _record(run, attempt, outcome, must_stop)
    return attempts


def running_node(definition: Workflow, execution: WorkflowExecution) -> Step:
    """What a claimed execution runs next: its current node, or while it compensates,
    the compensation of the next step to undo."""
    if execution.status == ExecutionStatus.COMPENSATING:
        entry = compensations.next_entry(execution)
        if entry is None:
            raise DurableError("Nothing is left to compensate.")
        return compensations.compensation(definition, entry)
    if execution.status != ExecutionStatus.RUNNING:
        raise DurableError(f"A worker does not run {execution.status} executions.")
    return definition.node(execution.current_step)


def _unit(run: Run) -> forks.Unit:
    execution, graph = run.execution, run.definition.graph
    if execution.status == ExecutionStatus.COMPENSATING:
        return compensations.CompensationUnit(execution, graph, compensations.next_entry(execution))
    return forks.Unit(execution, graph, execution.current_step)


def _new_attempt(
    run: Run, node: Step, attempt_id: uuid.UUID, number: int, undoes: dict | None = None
) -> StepExecution:
    """An attempt row for `node`; for a compensation, of the plan entry it `undoes`."""
    return StepExecution(
        id=attempt_id,
        execution=run.execution,
        step_name=node.name if undoes else run.execution.current_step,
        attempt=number,
        status=StepStatus.RUNNING,
        worker=run.worker,
        started_at=clock.now(),
        is_compensation=undoes is not None,
        compensation_for=undoes["step"] if undoes else None,
    )


def _open_first_attempt(run: Run, node: Step) -> StepExecution | None:
    """The claim's first attempt, if the claim still holds (see `claims.start_attempt`)."""
    execution = run.execution
    undoes = None
    if execution.status == ExecutionStatus.COMPENSATING:
        undoes = compensations.next_entry(execution)
    attempt = _new_attempt(run, node, execution.run_token, execution.attempt, undoes)
    if not claims.start_attempt(attempt, execution.id, execution.run_token):
        return None
    return attempt


def _set_aside(execution: WorkflowExecution, exc: DurableError) -> None:
    """A claimed execution this process cannot run (an unknown workflow or step, as when
    a worker still runs older code during a deploy): give it back for one that can."""
    log.warning(
        "Execution %s cannot run here (%s); retrying in %s.", execution.id, exc, UNKNOWN_RETRY
    )
    try:
        note = (
            {} if execution.status == ExecutionStatus.COMPENSATING else {"error": error_record(exc)}
        )
        executions.transition(
            execution,
            RELEASED_AS[execution.status],
            run_at=clock.now() + UNKNOWN_RETRY,
            **note,  # shown in the admin until a worker that knows it claims it
            **claims.LEASE_CLEARED,
        )
    except LeaseLost:
        pass


def _run_step(
    execution: WorkflowExecution, step: Step, attempt: StepExecution, ctx, unit: forks.Unit
) -> Outcome:
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
        return Outcome(finished_at=clock.now(), suspension=suspension)
    except Superseded:
        return Outcome(finished_at=clock.now(), superseded=True)
    except Interrupted as interrupted:
        # The database's failure, not the step's: the worker releases it, no retry spent.
        raise interrupted.error from None
    except BaseException as exc:  # even SystemExit from a step fails only that step
        finished_at = clock.now()
        if _overran(step, attempt, finished_at):
            return _timed_out(step, finished_at)
        return Outcome(
            finished_at=finished_at,
            error=error_record(exc),
            retryable=getattr(exc, "retryable", True),
        )
    finished_at = clock.now()
    if _overran(step, attempt, finished_at):
        return _timed_out(step, finished_at)
    if returned is None:
        return Outcome(finished_at=finished_at)
    if isinstance(returned, Move):
        return _moved(returned, finished_at)
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
        stored = codec.encode(returned)
    except (ContextNotSerializable, RecursionError) as exc:
        return Outcome(finished_at=finished_at, retryable=False, error=error_record(exc))
    return Outcome(finished_at=finished_at, stored=stored)


def _moved(move: Move, finished_at: datetime) -> Outcome:
    """A node that chose where to go: what it carries must be storable, or the node
    fails for good (running it again would choose the same)."""
    try:
        if isinstance(move, Goto):
            return Outcome(finished_at=finished_at, stored=codec.encode(move.context), move=move)
        if isinstance(move, Fork):
            for member in move.members:
                codec.encode(member.item, f"item {member.index}")
    except (ContextNotSerializable, RecursionError) as exc:
        return Outcome(finished_at=finished_at, retryable=False, error=error_record(exc))
    return Outcome(finished_at=finished_at, move=move)


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


def _overran(step: Step, attempt: StepExecution, finished_at: datetime) -> bool:
    return step.timeout is not None and finished_at - attempt.started_at > step.timeout


def _timed_out(step: Step, finished_at: datetime) -> Outcome:
    """An attempt past its step timeout: whatever it returned or raised is discarded."""
    message = f"Step {step.name!r} ran longer than its timeout of {step.timeout}."
    return Outcome(finished_at=finished_at, error=error_record(StepTimeout(message)))


# -- recording ---------------------------------------------------------------------------


def _record(run: Run, attempt: StepExecution, outcome: Outcome, must_stop: bool):
    """Write an attempt's outcome and the execution's next state in one transaction.

    Returns the next attempt when this thread continues with it, else None.
    """
    if outcome.superseded:
        _close_superseded(attempt)
        return None
    execution = run.execution
    # The door updates the in-memory execution as it writes; if the transaction then
    # rolls back, the object must say again what the database says.
    committed = dict(execution.__dict__)
    try:
        if execution.status == ExecutionStatus.COMPENSATING:
            return _compensation_done(run, attempt, outcome, must_stop)
        if outcome.suspension is not None:
            with transaction.atomic():
                _park(execution, attempt, outcome)
            return None
        if outcome.failed:
            with transaction.atomic():
                record_failure(execution, run.definition, attempt, outcome)
            return None
        return _step_completed(run, attempt, outcome, must_stop)
    except LeaseLost:
        _close_superseded(attempt)
        return None
    except DATABASE_ERRORS:
        execution.__dict__.update(committed)
        raise  # the connection, not the outcome: the worker releases and retries later
    except Exception as exc:
        execution.__dict__.update(committed)
        _record_unrecordable(run, attempt, outcome, exc)
        return None


def _step_completed(run: Run, attempt: StepExecution, outcome: Outcome, must_stop: bool):
    """Keep what the step returned and follow the move the graph makes next."""
    if outcome.stored is not None:
        run.stored = outcome.stored  # else None: the stored context stays as it was
    move = outcome.move or run.definition.after(attempt.step_name, lambda: codec.decode(run.stored))
    return _FOLLOW[type(move)](run, attempt, outcome, move, must_stop)


def _complete(run: Run, attempt: StepExecution, outcome: Outcome, move: End, must_stop: bool):
    with _transaction_if_needed(run.execution):
        _finish_completed(run, attempt, outcome)


def _transaction_if_needed(execution: WorkflowExecution):
    """The ending of an execution without a parent is one statement on PostgreSQL: no
    BEGIN and COMMIT round trips around it. With a parent, the parent's lock comes first
    in the same transaction."""
    if connection.vendor == "postgresql" and execution.parent_id is None:
        return nullcontext()
    return transaction.atomic()


def _finish_completed(run: Run, attempt: StepExecution, outcome: Outcome) -> None:
    executions.finish(
        run.execution,
        ExecutionStatus.COMPLETED,
        now=outcome.finished_at,
        own_end=(attempt.id, _attempt_end(attempt, StepStatus.COMPLETED, outcome)),
        context=codec.Encoded(run.stored),
        current_step=None,
        recoveries=0,
    )


def _next_step(run: Run, attempt: StepExecution, outcome: Outcome, move: Next, must_stop: bool):
    """Run the next step here at once, or hand it to its queue; past the workflow's
    deadline, fail instead."""
    execution, now = run.execution, outcome.finished_at
    moves = {
        "context": codec.Encoded(run.stored),
        "current_step": move.node_id,
        "attempt": 1,
        "step_seq": execution.step_seq + 1,
        "recoveries": 0,
    }
    if execution.deadline is not None and now >= execution.deadline:
        with transaction.atomic():
            executions.finish(
                execution,
                ExecutionStatus.FAILED,
                error=workflow_timeout(execution),
                now=now,
                own_end=(attempt.id, _attempt_end(attempt, StepStatus.COMPLETED, outcome)),
                **moves,  # resume continues after the step that completed
            )
        return None
    next_queue = run.definition.run_queue(move.node_id, execution.queue)
    if must_stop or (run.queues is not None and next_queue not in run.queues):
        with transaction.atomic():
            executions.transition(
                execution,
                ExecutionStatus.PENDING,
                run_queue=next_queue,
                run_at=now,
                **moves,
                **claims.LEASE_CLEARED,
            )
            _close_attempt(attempt, StepStatus.COMPLETED, outcome)
            claims.notify(next_queue)
        return None
    next_attempt = StepExecution(
        id=uuid.uuid4(),
        execution=execution,
        step_name=move.node_id,
        attempt=1,
        status=StepStatus.RUNNING,
        worker=run.worker,
        started_at=now,
    )
    run.tokens.add(next_attempt.id)
    executions.hand_over(
        execution,
        attempt.id,
        _attempt_end(attempt, StepStatus.COMPLETED, outcome),
        next_attempt,
        run_queue=next_queue,
        **moves,
    )
    return next_attempt


def _go_to(run: Run, attempt: StepExecution, outcome: Outcome, move: Goto, must_stop: bool):
    """A jump: the named node is reached next on the context the jump carries, stored
    (and checked) like a step's result. An unknown node or an unstorable context fails
    the node that jumped. A jump back (a loop) goes through the queue, so a long loop
    lets higher-priority work and a stopping worker in between its rounds."""
    run.definition.node(move.node_id)
    run.stored = codec.encode(move.context)
    backward = run.definition.graph.is_backward(attempt.step_name, move.node_id)
    reached = run.definition.graph.resolve(move.node_id, lambda: codec.decode(run.stored))
    if isinstance(reached, Goto):
        return _go_to(run, attempt, outcome, reached, must_stop or backward)
    return _FOLLOW[type(reached)](run, attempt, outcome, reached, must_stop or backward)


def _fork(run: Run, attempt: StepExecution, outcome: Outcome, move: Fork, must_stop: bool):
    """A block starts its members and the execution parks until the last one ends."""
    ending = _attempt_end(attempt, StepStatus.WAITING, outcome)
    executions.fork(run.execution, (attempt.id, ending), move, run.definition)


# How each move the graph can make is followed: a new kind of move is a new entry here.
_FOLLOW = {End: _complete, Next: _next_step, Goto: _go_to, Fork: _fork}


def _park(execution: WorkflowExecution, attempt: StepExecution, outcome: Outcome) -> None:
    """Park the execution on its wait, unless the wait was satisfied while parking."""
    suspension = outcome.suspension
    executions.transition(
        execution,
        ExecutionStatus.WAITING,
        run_at=suspension.wake_at,
        recoveries=0,  # the attempt ended normally
        **claims.LEASE_CLEARED,
    )
    _close_attempt(attempt, StepStatus.WAITING, outcome)
    if waits.can_resume(execution.id, execution.step_seq, suspension.key):
        executions.wake(execution)


def _compensation_done(run: Run, attempt: StepExecution, outcome: Outcome, must_stop: bool):
    """A compensation attempt ended: retry it if its policy allows, else keep its result
    and go on with the next one (here at once, or through the queue), or end the
    compensating phase after the last. A compensation cannot wait."""
    if outcome.suspension is not None:
        cannot_wait = DurableError("A compensation cannot wait (sleep, events or input).")
        outcome = Outcome(outcome.finished_at, error=error_record(cannot_wait), retryable=False)
    execution = run.execution
    if outcome.failed and _retries_left(execution, run.definition, outcome):
        with transaction.atomic():
            record_failure(execution, run.definition, attempt, outcome)
        return None
    upcoming = compensations.entry_after(execution)
    if upcoming is None or must_stop:
        with transaction.atomic():
            _undone(execution, attempt, outcome)
        return None
    node = compensations.compensation(run.definition, upcoming)
    next_attempt = _new_attempt(run, node, uuid.uuid4(), 1, upcoming)
    run.tokens.add(next_attempt.id)
    ending, moves = _undo_result(execution, attempt, outcome)
    executions.hand_over(execution, attempt.id, ending, next_attempt, **moves)
    return next_attempt


def _undo_result(execution: WorkflowExecution, attempt: StepExecution, outcome: Outcome):
    """How a compensation's attempt ends, and the execution's changes that keep its result."""
    entry = compensations.next_entry(execution)
    results = [*execution.compensation_results, compensations.result(entry, outcome.error)]
    status = StepStatus.FAILED if outcome.failed else StepStatus.COMPLETED
    moves = {"compensation_results": results, "attempt": 1, "recoveries": 0}
    return _attempt_end(attempt, status, outcome), moves


def _undone(execution: WorkflowExecution, attempt: StepExecution, outcome: Outcome) -> None:
    """Keep a compensation's result; after the last one the phase ends, else the next
    one goes through the queue."""
    ending, moves = _undo_result(execution, attempt, outcome)
    if compensations.entry_after(execution) is None:
        status = compensations.final_status(moves["compensation_results"])
        executions.finish(
            execution, status, now=outcome.finished_at, own_end=(attempt.id, ending), **moves
        )
        return
    executions.transition(
        execution, execution.status, run_at=outcome.finished_at, **moves, **claims.LEASE_CLEARED
    )
    StepExecution.objects.filter(id=attempt.id).update(**ending)
    claims.notify(execution.run_queue)


def _retries_left(execution: WorkflowExecution, definition: Workflow, outcome: Outcome) -> bool:
    policy = retry_policy(definition, running_node(definition, execution))
    return outcome.retryable and execution.attempt < policy.max_attempts


def record_failure(
    execution: WorkflowExecution, definition: Workflow, attempt: StepExecution, outcome: Outcome
) -> None:
    """A failed attempt: retry later if the policy allows, else the execution fails (a
    compensation that fails for good is kept as such, and the next one runs)."""
    now = outcome.finished_at
    if _retries_left(execution, definition, outcome):
        policy = retry_policy(definition, running_node(definition, execution))
        executions.transition(
            execution,
            RELEASED_AS[execution.status],
            attempt=execution.attempt + 1,
            recoveries=0,
            run_at=now + policy.delay_after(execution.attempt),
            **claims.LEASE_CLEARED,
        )
        if execution.ready:  # a retry due later is this worker's timer, not a NOTIFY
            claims.notify(execution.run_queue)
        _close_attempt(attempt, StepStatus.FAILED, outcome)
    elif execution.status == ExecutionStatus.COMPENSATING:
        _undone(execution, attempt, outcome)
    else:
        executions.finish(
            execution,
            ExecutionStatus.FAILED,
            error=outcome.error,
            now=now,
            own_end=(attempt.id, _attempt_end(attempt, StepStatus.FAILED, outcome)),
        )


def _record_unrecordable(run: Run, attempt: StepExecution, outcome: Outcome, exc: Exception):
    """The database refused the outcome (a value it cannot store, say): fail the step
    for good instead of running it again and again."""
    prefix = f"The outcome of step {attempt.step_name!r} could not be stored: "
    failure = Outcome(
        finished_at=outcome.finished_at, retryable=False, error=error_record(exc, prefix)
    )
    try:
        with transaction.atomic():
            record_failure(run.execution, run.definition, attempt, failure)
    except LeaseLost:
        _close_superseded(attempt)


def _close_superseded(attempt: StepExecution) -> None:
    """An attempt that lost its execution: close its row if nothing else did."""
    StepExecution.objects.filter(id=attempt.id, status=StepStatus.RUNNING).update(
        status=StepStatus.FAILED,
        completed_at=clock.now(),
        error={
            "type": "Superseded",
            "message": "The attempt lost its claim (cancelled, timed out or reclaimed); "
            "its result was discarded.",
            "traceback": "",
        },
    )


def _close_attempt(attempt: StepExecution, status: str, outcome: Outcome) -> None:
    StepExecution.objects.filter(id=attempt.id).update(**_attempt_end(attempt, status, outcome))


def _attempt_end(attempt: StepExecution, status: str, outcome: Outcome) -> dict:
    """How an attempt's row ends. The context it produced is kept once, on the
    execution; the attempt does not repeat it."""
    return {
        "status": status,
        "error": outcome.error,
        "completed_at": outcome.finished_at,
        "duration_ms": _milliseconds(outcome.finished_at - attempt.started_at),
    }


def retry_policy(definition: Workflow, step: Step) -> Retry:
    """The step's own policy, else the workflow's, else DURABLE["DEFAULT_RETRY"], else once."""
    return step.retry or definition.retry or Retry.coerce(conf.get("DEFAULT_RETRY")) or Retry()


def timed_out_outcome(step: Step) -> Outcome:
    """How the timers record an attempt that overran its step timeout."""
    return _timed_out(step, clock.now())


def workflow_timeout(execution: WorkflowExecution) -> dict:
    """The error an execution past its workflow timeout fails with."""
    return error_record(
        WorkflowTimeout(
            f"Workflow {execution.workflow_name!r} did not finish by its deadline "
            f"({execution.deadline:%Y-%m-%d %H:%M:%S %Z})."
        )
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
