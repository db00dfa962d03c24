"""Queue controls: pause a queue (no worker claims from it), resume it, drain it (wait
until nothing on it is running or runnable), and read its state.

A pause is a row (`PausedQueue`), so it holds for every worker and across restarts; the
claim itself skips paused queues, so a worker needs no message to honour it. What a
worker already holds when the pause lands runs on to its next release.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction

from . import claims, clock
from .dsl.names import QUEUE, checked_name
from .errors import DurableError, WorkflowDefinitionError
from .models import TIMER_SET, PausedQueue, Worker, WorkflowExecution

DRAIN_POLL_SECONDS = 0.5


class InvalidQueueName(DurableError, ValueError):
    """Not a name a queue can have."""


@dataclass
class QueueState:
    """What a queue holds now: `running` (held by workers), `runnable` (ready, waiting
    for a worker), `scheduled` (due later: retries, sleeps, scheduled starts)."""

    name: str
    paused: bool
    paused_at: datetime | None
    reason: str
    running: int
    runnable: int
    scheduled: int
    workers: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def pause_queue(name: str, reason: str = "") -> PausedQueue:
    """Stop workers claiming from `name` (pausing a paused queue keeps its first pause)."""
    name = _checked(name)
    try:
        with transaction.atomic():
            return PausedQueue.objects.create(name=name, paused_at=clock.now(), reason=reason)
    except IntegrityError:
        return PausedQueue.objects.get(name=name)


def resume_queue(name: str) -> bool:
    """Let workers claim from `name` again, waking the idle ones; False if it was not
    paused."""
    deleted, _ = PausedQueue.objects.filter(name=_checked(name)).delete()
    if deleted:
        claims.notify(name)
    return bool(deleted)


def paused_queues() -> list[PausedQueue]:
    return list(PausedQueue.objects.all())


def queue_state(name: str) -> QueueState:
    """The queue's pause and counts. Running rows are found through the lease index,
    runnable ones through the claim's, scheduled ones through the timers'."""
    name = _checked(name)
    pause = PausedQueue.objects.filter(name=name).first()
    rows = WorkflowExecution.objects.filter(run_queue=name)
    serving = [
        worker.name for worker in Worker.objects.all() if not worker.queues or name in worker.queues
    ]
    return QueueState(
        name=name,
        paused=pause is not None,
        paused_at=pause.paused_at if pause else None,
        reason=pause.reason if pause else "",
        running=rows.filter(locked_until__isnull=False).count(),
        runnable=rows.filter(ready=True).count(),
        scheduled=rows.filter(TIMER_SET).count(),
        workers=serving,
    )


def drain(
    name: str,
    timeout: timedelta,
    on_progress: Callable[[QueueState], None] | None = None,
) -> bool:
    """Wait until nothing on `name` is running or runnable (work scheduled for later
    does not count); True if that happened within `timeout`. On a paused queue only
    what is running counts: pause then drain is how a queue is emptied of work in
    flight before a deploy or a migration, its backlog kept for later."""
    give_up = time.monotonic() + timeout.total_seconds()
    while True:
        state = queue_state(name)
        if on_progress is not None:
            on_progress(state)
        if state.running == 0 and (state.paused or state.runnable == 0):
            return True
        if time.monotonic() >= give_up:
            return False
        time.sleep(DRAIN_POLL_SECONDS)


def _checked(name: str) -> str:
    try:
        return checked_name(name, "A queue name", QUEUE)
    except WorkflowDefinitionError as exc:
        raise InvalidQueueName(str(exc)) from None
