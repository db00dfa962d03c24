"""Handing runnable executions to workers: the claim, the lease, and the wake-up.

On PostgreSQL one statement picks due executions with `FOR UPDATE SKIP LOCKED` and
leases them, so any number of workers can claim concurrently without blocking each
other or taking the same row. Elsewhere (SQLite, for development) each row is taken with
a conditional UPDATE, which is safe but serialised by the database's single writer.
"""

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F, Min
from django.db.models.functions import Coalesce

from . import clock, conf
from .models import (
    ACTIVE_STATUSES,
    CLAIMABLE_STATUSES,
    ExecutionStatus,
    StepExecution,
    StepStatus,
    WorkflowExecution,
)

CHANNEL = "durable_runnable"

# What an execution's lease is made of; cleared together whenever its holder lets go.
LEASE_CLEARED = {"locked_by": None, "locked_until": None, "run_token": None}

_CLAIM_SQL = """
WITH picked AS (
    SELECT id FROM durable_execution
    WHERE status IN ('pending', 'waiting') AND run_at <= %(now)s {queue_filter}
    ORDER BY priority DESC, run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE durable_execution AS e
SET status = 'running', locked_by = %(worker)s, locked_until = %(until)s, error = NULL,
    run_token = gen_random_uuid(), started_at = COALESCE(e.started_at, %(now)s)
FROM picked
WHERE e.id = picked.id
RETURNING e.*
"""


def lease_duration() -> timedelta:
    return timedelta(seconds=conf.get("LEASE_SECONDS"))


def claim(worker: str, queues: Sequence[str] | None, limit: int) -> list[WorkflowExecution]:
    """Lease up to `limit` due executions to `worker`, highest priority then oldest first.

    A runnable execution carries no error (a failed one is not runnable), except the note
    left by a worker that could not run it (`engine._set_aside_unrunnable`): cleared here.
    """
    now = clock.now()
    until = now + lease_duration()
    if connection.vendor == "postgresql":
        claimed = _claim_skip_locked(worker, queues, limit, now, until)
    else:
        claimed = _claim_conditional(worker, queues, limit, now, until)
    return sorted(claimed, key=lambda e: (-e.priority, e.run_at))


def _claim_skip_locked(worker, queues, limit, now, until) -> list[WorkflowExecution]:
    params = {"now": now, "until": until, "worker": worker, "limit": limit}
    queue_filter = ""
    if queues is not None and len(queues) == 1:
        # `=` rather than `= ANY(...)`, so PostgreSQL walks the partial runnable index in
        # claim order instead of sorting the whole backlog.
        queue_filter = "AND run_queue = %(queue)s"
        params["queue"] = queues[0]
    elif queues is not None:
        queue_filter = "AND run_queue = ANY(%(queues)s)"
        params["queues"] = list(queues)
    sql = _CLAIM_SQL.format(queue_filter=queue_filter)
    return list(WorkflowExecution.objects.raw(sql, params))


def _claim_conditional(worker, queues, limit, now, until) -> list[WorkflowExecution]:
    candidates = (
        WorkflowExecution.objects.runnable(now, queues)
        .in_claim_order()
        .values_list("id", flat=True)[:limit]
    )
    claimed = []
    for execution_id in list(candidates):
        taken = WorkflowExecution.objects.filter(
            id=execution_id, status__in=CLAIMABLE_STATUSES, run_at__lte=now
        ).update(
            status=ExecutionStatus.RUNNING,
            locked_by=worker,
            locked_until=until,
            error=None,
            run_token=uuid.uuid4(),
            started_at=Coalesce(F("started_at"), now),
        )
        if taken:
            claimed.append(execution_id)
    return list(WorkflowExecution.objects.filter(id__in=claimed))


def renew_leases(worker: str, execution_ids: Collection[uuid.UUID]) -> int:
    """Extend the leases of the executions `worker` is really working on.

    Only the ids the worker holds in memory: a row it claimed but never heard back
    about (the reply was lost) must lapse and be reclaimed, not be renewed forever.
    """
    if not execution_ids:
        return 0
    return WorkflowExecution.objects.filter(
        id__in=list(execution_ids), locked_by=worker, status=ExecutionStatus.RUNNING
    ).update(locked_until=clock.now() + lease_duration())


def release(
    worker: str,
    error_type: str,
    message: str,
    execution_id: uuid.UUID | None = None,
    run_tokens: Collection[uuid.UUID] = (),
) -> int:
    """Give back what `worker` holds, or its claim of `execution_id` held under one of
    `run_tokens`, so another worker takes it."""
    held = WorkflowExecution.objects.filter(locked_by=worker, status=ExecutionStatus.RUNNING)
    if execution_id is not None:
        held = held.filter(id=execution_id, run_token__in=list(run_tokens))
    return _requeue(held, error_type, message)


def reclaim_expired_leases() -> int:
    """Make executions whose worker stopped heartbeating runnable again."""
    return _requeue(
        WorkflowExecution.objects.filter(
            status=ExecutionStatus.RUNNING, locked_until__lt=clock.now()
        ),
        "LeaseExpired",
        "The worker running this attempt stopped renewing its lease; the step runs again.",
    )


def _requeue(executions, error_type: str, message: str) -> int:
    """Turn held executions back to pending and close their interrupted attempts.

    Clearing `run_token` fences the interrupted attempt: if it is still running
    somewhere, nothing it returns can be recorded. An interruption does not use up a
    retry, so a step interrupted DURABLE["MAX_RECOVERIES"] times in a row (one that
    kills its worker, say) fails instead of running forever.
    """
    now = clock.now()
    limit = conf.get("MAX_RECOVERIES")
    with transaction.atomic():
        rows = list(
            executions.select_for_update(skip_locked=True).values_list(
                "id", "run_token", "run_queue", "recoveries"
            )
        )
        if not rows:
            return 0
        exhausted = [row[0] for row in rows if row[3] + 1 >= limit]
        held = WorkflowExecution.objects.filter(status=ExecutionStatus.RUNNING)
        held.filter(id__in=[row[0] for row in rows if row[0] not in exhausted]).update(
            status=ExecutionStatus.PENDING,
            run_at=now,
            recoveries=F("recoveries") + 1,
            **LEASE_CLEARED,
        )
        held.filter(id__in=exhausted).update(
            status=ExecutionStatus.FAILED,
            completed_at=now,
            error={
                "type": "TooManyInterruptions",
                "message": f"The step was interrupted {limit} times in a row ({error_type}: "
                f"{message}); it is not run again. Resume the execution to try once more.",
                "traceback": "",
            },
            **LEASE_CLEARED,
        )
        StepExecution.objects.filter(
            id__in=[row[1] for row in rows if row[1]], status=StepStatus.RUNNING
        ).update(
            status=StepStatus.FAILED,
            completed_at=now,
            error={"type": error_type, "message": message, "traceback": ""},
        )
        for run_queue in {row[2] for row in rows}:
            notify(run_queue)
    return len(rows)


def next_wakeup(queues: Sequence[str] | None) -> datetime | None:
    """The earliest time something may become due: a run_at, a deadline, a lease's end."""
    runnable = WorkflowExecution.objects.filter(status__in=CLAIMABLE_STATUSES)
    if queues is not None:
        runnable = runnable.filter(run_queue__in=queues)
    times = [
        runnable.aggregate(at=Min("run_at"))["at"],
        WorkflowExecution.objects.filter(status__in=ACTIVE_STATUSES).aggregate(at=Min("deadline"))[
            "at"
        ],
        WorkflowExecution.objects.filter(status=ExecutionStatus.RUNNING).aggregate(
            at=Min("locked_until")
        )["at"],
    ]
    times = [at for at in times if at is not None]
    return min(times) if times else None


def notify(run_queue: str) -> None:
    """Wake idle workers of `run_queue` (PostgreSQL; delivered when the transaction commits)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, run_queue])
