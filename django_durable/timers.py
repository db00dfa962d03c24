"""Work that falls due by time alone and that no claim picks up by itself: leases that
lapsed, workflow deadlines that passed, attempts that overran their step timeout,
schedules whose time came.

Workers run these on their poll interval (and `testing.run_until_idle` before every
claim); each change goes through the door in `executions`, one execution per
transaction under the lock order.
"""

import uuid
from datetime import datetime

from django.db import transaction
from django.db.models import Min

from . import claims, clock, executions, recording, registry, releases, schedules
from .errors import ExecutionNotFound
from .executions import LeaseLost
from .models import (
    FORWARD_STATUSES,
    TIMER_SET,
    ExecutionStatus,
    StepExecution,
    WorkflowExecution,
)

DEADLINE_BATCH = 500
WAKE_BATCH = 1000


def run_timers() -> None:
    """Everything due now: lapsed leases, passed deadlines, then waits and retries whose
    time came (made ready for the next claim)."""
    reclaim_expired_leases()
    expire_deadlines()
    schedules.fire_due()
    wake_due()


def reclaim_expired_leases() -> int:
    """Make executions whose worker stopped heartbeating runnable again."""
    return releases.requeue(
        WorkflowExecution.objects.lease_lapsed(clock.now()),
        "LeaseExpired",
        "The worker running this attempt stopped renewing its lease; the step runs again.",
    )


def expire_deadlines() -> int:
    """Fail executions still going forward past their workflow timeout (a batch a call)."""
    now = clock.now()
    overdue = WorkflowExecution.objects.overdue(now)
    expired = 0
    for execution_id in overdue.order_by("deadline").values_list("id", flat=True)[:DEADLINE_BATCH]:
        with transaction.atomic():
            try:
                execution = executions.lock(execution_id)
            except ExecutionNotFound:
                continue
            if execution.status not in FORWARD_STATUSES or execution.deadline > now:
                continue  # finished or resumed meanwhile
            executions.finish(
                execution,
                ExecutionStatus.FAILED,
                error=recording.workflow_timeout(execution),
                fenced=False,
                now=now,
            )
            expired += 1
    return expired


def time_out_attempt(execution_id: uuid.UUID, run_token: uuid.UUID) -> bool:
    """Fail an attempt still running past its step timeout; its late result is discarded."""
    execution = WorkflowExecution.objects.filter(id=execution_id, run_token=run_token).first()
    if execution is None:
        return False
    definition = registry.for_execution(execution)
    attempt = StepExecution.objects.get(id=run_token)
    outcome = recording.timed_out_outcome(recording.running_node(definition, execution))
    try:
        with transaction.atomic():
            recording.record_failure(execution, definition, attempt, outcome)
    except LeaseLost:
        return False
    return True


def next_wakeup() -> datetime | None:
    """The earliest time something falls due: a timer's `run_at`, a deadline, a lease's
    end, a schedule's next run. Each is the first entry of a partial index, so this
    reads a few buffers."""
    times = [
        schedules.next_due(),
        WorkflowExecution.objects.filter(TIMER_SET).aggregate(at=Min("run_at"))["at"],
        WorkflowExecution.objects.filter(
            status__in=FORWARD_STATUSES, deadline__isnull=False
        ).aggregate(at=Min("deadline"))["at"],
        WorkflowExecution.objects.filter(locked_until__isnull=False).aggregate(
            at=Min("locked_until")
        )["at"],
    ]
    times = [at for at in times if at is not None]
    return min(times) if times else None


def wake_due(limit: int = WAKE_BATCH) -> int:
    """Make executions whose time came runnable: retries and starts scheduled for now,
    sleeps and wait timeouts that ran out. Conditional, so workers doing it at the same
    time do it once; idle workers of the queues concerned are woken."""
    now = clock.now()
    due = WorkflowExecution.objects.timers_due(now).order_by("run_at")
    ids = list(due.values_list("id", flat=True)[:limit])
    if not ids:
        return 0
    woken = WorkflowExecution.objects.timers_due(now).filter(id__in=ids)
    with transaction.atomic():
        queues = set(woken.values_list("run_queue", flat=True))
        count = woken.update(ready=True)
        for queue in queues:
            claims.notify(queue)
    return count
