"""Attempt ids are time-ordered UUIDs (version 7): new rows land at the end of the
primary key's index instead of on a random page (bench/bench_ids.py)."""

import time
import uuid

import pytest

from django_durable import ids, workflow
from django_durable.models import StepExecution
from django_durable.testing import run_until_idle


def test_a_time_ordered_id_is_a_version_7_uuid_that_sorts_by_time():
    first = ids.time_ordered()
    time.sleep(0.002)
    second = ids.time_ordered()
    assert (first.version, first.variant) == (7, uuid.RFC_4122)
    assert first < second  # a later millisecond sorts after
    assert abs((first.int >> 80) - time.time_ns() // 1_000_000) < 5_000
    assert len({ids.time_ordered() for _ in range(1000)}) == 1000


def two(ctx):
    return {**ctx, "two": True}


def one(ctx):
    return {**ctx, "one": True}


chain = workflow("ids.chain", [one, two])


@pytest.mark.django_db
def test_attempts_get_time_ordered_ids():
    chain.start({})
    run_until_idle()
    attempts = list(StepExecution.objects.order_by("started_at"))
    assert [attempt.step_name for attempt in attempts] == ["one", "two"]
    assert all(attempt.id.version == 7 for attempt in attempts)
    assert attempts[0].id.int >> 80 <= attempts[1].id.int >> 80  # their milliseconds
