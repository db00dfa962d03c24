"""Schedules fired by real worker processes: each due time starts one run, however many
workers see it at once."""

from datetime import UTC, datetime, timedelta

import pytest

from django_durable import schedules
from django_durable.models import WorkflowExecution
from tests.worker_support import IS_POSTGRES, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EVERY = 2  # seconds between due times


def test_workers_fire_each_due_time_exactly_once(workers):
    """Four workers on PostgreSQL (SQLite takes one)."""
    schedule = schedules.create_schedule(
        "every-two-seconds", "tests.sched.plain_report", f"* * * * * */{EVERY}"
    )
    for _ in range(4 if IS_POSTGRES else 1):
        workers.start(concurrency=2, poll_interval=0.2)
    runs = WorkflowExecution.objects.filter(schedule=schedule)
    wait_for(lambda: runs.count() >= 5, "five scheduled runs", report=workers.report)
    schedules.disable_schedule("every-two-seconds")
    wait_for(
        lambda: not runs.exclude(status="completed").exists(),
        "the scheduled runs to complete",
        report=workers.report,
    )
    keys = list(runs.values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))  # one run per due time
    dues = sorted(schedule_due(key) for key in keys)
    gaps = {later - earlier for earlier, later in zip(dues, dues[1:], strict=False)}
    assert gaps == {timedelta(seconds=EVERY)}, (dues, workers.report())  # none skipped
    assert len({run.schedule_id for run in runs}) == 1
    # Workers synced the declared schedules when they started.
    assert schedules.get_schedule("tests.sched.daily_report").declared


def schedule_due(key: str) -> datetime:
    return datetime.strptime(key.rsplit(":", 1)[1], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
