"""Django signals for what happens to executions, steps, inputs and schedules.

Each is sent after the change it reports is committed (`transaction.on_commit`), so a
receiver sees the rows as they are, and never hears of a change that rolled back. A
receiver that raises is logged and ignored: it cannot fail a step, a worker or the
transition. Receivers run in the process and thread that made the change (usually a
worker thread), so slow work belongs in a workflow of its own, started from the
receiver.

Every signal is sent with `sender` the model class (`WorkflowExecution`,
`StepExecution`, `PendingInput` or `Schedule`) and these keyword arguments:

- `workflow_started(execution)`: a workflow (or child workflow) was created.
- `workflow_resumed(execution, reason)`: it runs again; `reason` is `"wait"` (a
  worker took it up after its wait ended) or `"resume"` (`resume()` restarted it).
- `workflow_waiting(execution)`: it parked on a sleep, an event, an input, a child or
  a block's members.
- `workflow_completed(execution)`, `workflow_failed(execution, error)`,
  `workflow_cancelled(execution, reason)`: it ended; a failed or cancelled execution
  whose compensations ran ends `compensated` or `compensation_failed` (see
  `execution.status`).
- `step_started(execution, step)`, `step_completed(execution, step)`,
  `step_failed(execution, step, error)`: an attempt (`step` is its `StepExecution`)
  started, completed, or failed (retried or not: `execution.status` tells).
- `input_requested(pending_input)`: a step asked for input (the `PendingInput` row;
  `pending_input.root_id` is the workflow to answer through).
- `input_provided(pending_input, value, responded_by)`: it was answered (`value` as
  the step receives it).
- `schedule_triggered(schedule, execution_id)`: a schedule started a run.

Branches and foreach items are parts of their workflow: their steps send the step
signals, but no workflow_* signal is sent for them. Graph executions (`graphs`) send
the step signals for their computes, and no workflow_* signal either.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger("django_durable.signals")

workflow_started = Signal()
workflow_resumed = Signal()
workflow_waiting = Signal()
workflow_completed = Signal()
workflow_failed = Signal()
workflow_cancelled = Signal()
step_started = Signal()
step_completed = Signal()
step_failed = Signal()
input_requested = Signal()
input_provided = Signal()
schedule_triggered = Signal()

_held: ContextVar[list | None] = ContextVar("durable_held_signals", default=None)


def emit(signal: Signal, sender: type, **payload: Any) -> None:
    """Send `signal` once the current transaction commits (at once outside one).
    Costs a list check when nobody listens: steps send these on the hot path."""
    if not signal.receivers:
        return
    held = _held.get()
    if held is not None:
        held.append((signal, sender, payload))
        return
    transaction.on_commit(partial(_deliver, signal, sender, payload))


@contextmanager
def held() -> Iterator[list]:
    """Keep what is emitted in the block, for the caller to `release` after signals of
    its own: an attempt's step_completed goes before the workflow_completed its write
    caused. What a block that raised held is dropped with its changes."""
    gathered: list = []
    token = _held.set(gathered)
    try:
        yield gathered
    finally:
        _held.reset(token)


def release(gathered: list) -> None:
    for signal, sender, payload in gathered:
        emit(signal, sender, **payload)


def _deliver(signal: Signal, sender: type, payload: dict) -> None:
    for receiver, result in signal.send_robust(sender, **payload):
        if isinstance(result, Exception):
            log.error(
                "A receiver of a django_durable signal failed: %r",
                receiver,
                exc_info=(type(result), result, result.__traceback__),
            )
