"""Recording what an attempt produced, through the door, in one transaction.

The engine (`engine.run_claimed`) runs an attempt and hands its `Outcome` here. A step
that completed moves the execution on by the move its node made or the graph makes
after it (`_FOLLOW`): the next step (handed over to this same thread in one statement
on PostgreSQL), a jump, a fork into members, or the end. A failure is retried by the
step's policy or fails the execution; a wait parks it; a compensation's result is kept
and the next one follows. Every write is fenced on the run token of the attempt that
makes it, so an attempt that lost its claim records nothing.
"""

import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from . import claims, clock, codec, compensations, conf, executions, ids, signals, waits
from .dsl import End, Fork, Goto, Move, Next, Park, Retry, Step, Workflow
from .errors import DurableError, StepTimeout, WorkflowTimeout, error_record
from .executions import LeaseLost
from .models import (
    RELEASED_AS,
    ExecutionStatus,
    StepExecution,
    StepStatus,
    WorkflowExecution,
)
from .scope import DATABASE_ERRORS, Suspend


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
    logs: list | None = None  # what the attempt logged and printed (`logcapture`)

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


def new_attempt(
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


def overran(step: Step, attempt: StepExecution, finished_at: datetime) -> bool:
    return step.timeout is not None and finished_at - attempt.started_at > step.timeout


def timed_out(step: Step, finished_at: datetime) -> Outcome:
    """An attempt past its step timeout: whatever it returned or raised is discarded."""
    message = f"Step {step.name!r} ran longer than its timeout of {step.timeout}."
    return Outcome(finished_at=finished_at, error=error_record(StepTimeout(message)))


# -- recording ---------------------------------------------------------------------------


def record(run: Run, attempt: StepExecution, outcome: Outcome, must_stop: bool):
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
        with signals.held() as caused:
            next_attempt = _write_outcome(run, attempt, outcome, must_stop)
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
    _announce(run, attempt, outcome, next_attempt)
    signals.release(caused)
    return next_attempt


def _write_outcome(run: Run, attempt: StepExecution, outcome: Outcome, must_stop: bool):
    execution = run.execution
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


def _announce(run: Run, attempt: StepExecution, outcome: Outcome, next_attempt) -> None:
    """The step signals for a recorded attempt and the one this thread goes on with;
    the attempt object is brought up to date only for receivers that will see it."""
    if outcome.suspension is None:
        signal = signals.step_failed if outcome.failed else signals.step_completed
        if signal.receivers:
            status = StepStatus.FAILED if outcome.failed else StepStatus.COMPLETED
            for name, value in attempt_end(attempt, status, outcome).items():
                setattr(attempt, name, value)
            failure = {"error": outcome.error} if outcome.failed else {}
            signals.emit(signal, StepExecution, execution=run.execution, step=attempt, **failure)
    if next_attempt is not None:
        announce_start(run.execution, next_attempt)


def announce_start(execution: WorkflowExecution, attempt: StepExecution) -> None:
    signals.emit(signals.step_started, StepExecution, execution=execution, step=attempt)


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
        own_end=(attempt.id, attempt_end(attempt, StepStatus.COMPLETED, outcome)),
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
                own_end=(attempt.id, attempt_end(attempt, StepStatus.COMPLETED, outcome)),
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
        id=ids.time_ordered(),
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
        attempt_end(attempt, StepStatus.COMPLETED, outcome),
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
    if move is not outcome.move:  # a node's own jump was encoded with its outcome
        run.stored = codec.encode(move.context)
    backward = run.definition.graph.is_backward(attempt.step_name, move.node_id)
    reached = run.definition.graph.resolve(move.node_id, lambda: codec.decode(run.stored))
    if isinstance(reached, Goto):
        return _go_to(run, attempt, outcome, reached, must_stop or backward)
    return _FOLLOW[type(reached)](run, attempt, outcome, reached, must_stop or backward)


def _fork(run: Run, attempt: StepExecution, outcome: Outcome, move: Fork, must_stop: bool):
    """A block starts its members and the execution parks until the last one ends."""
    ending = attempt_end(attempt, StepStatus.WAITING, outcome)
    executions.fork(run.execution, (attempt.id, ending), move, run.definition)


def _idle(run: Run, attempt: StepExecution, outcome: Outcome, move: Park, must_stop: bool):
    """Nothing to run now: the execution waits, with no timer, to be woken from outside."""
    with transaction.atomic():
        executions.transition(
            run.execution,
            ExecutionStatus.WAITING,
            run_at=None,
            recoveries=0,
            **claims.LEASE_CLEARED,
        )
        _close_attempt(attempt, StepStatus.COMPLETED, outcome)


# How each move the graph can make is followed: a new kind of move is a new entry here
# (`follow_with`, for a module that brings its own moves).
_FOLLOW = {End: _complete, Next: _next_step, Goto: _go_to, Fork: _fork, Park: _idle}


def follow_with(move_type: type, follow) -> None:
    _FOLLOW[move_type] = follow


def is_move(returned: Any) -> bool:
    """Whether a node returned a move (followed here) rather than a context."""
    return type(returned) in _FOLLOW


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
        outcome = Outcome(
            outcome.finished_at,
            error=error_record(cannot_wait),
            retryable=False,
            logs=outcome.logs,
        )
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
    next_attempt = new_attempt(run, node, ids.time_ordered(), 1, upcoming)
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
    return attempt_end(attempt, status, outcome), moves


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
            own_end=(attempt.id, attempt_end(attempt, StepStatus.FAILED, outcome)),
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
    close_attempt(attempt, attempt_end(attempt, status, outcome))


def close_attempt(attempt: StepExecution, ending: dict) -> None:
    StepExecution.objects.filter(id=attempt.id).update(**ending)


def attempt_end(attempt: StepExecution, status: str, outcome: Outcome) -> dict:
    """How an attempt's row ends. The context it produced is kept once, on the
    execution; the attempt does not repeat it. Its captured logs go in the same write."""
    ending = {
        "status": status,
        "error": outcome.error,
        "completed_at": outcome.finished_at,
        "duration_ms": _milliseconds(outcome.finished_at - attempt.started_at),
    }
    if outcome.logs:
        ending["logs"] = outcome.logs
    return ending


def retry_policy(definition: Workflow, step: Step) -> Retry:
    """The step's own policy, else the workflow's, else DURABLE["DEFAULT_RETRY"], else once."""
    return step.retry or definition.retry or Retry.coerce(conf.get("DEFAULT_RETRY")) or Retry()


def timed_out_outcome(step: Step) -> Outcome:
    """How the timers record an attempt that overran its step timeout."""
    return timed_out(step, clock.now())


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
