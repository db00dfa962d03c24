"""Waking workers: NOTIFY only for work runnable now, sent after the commit, coalesced
per queue, and a worker that hears a notice claims once more shortly after it."""

import time
from datetime import timedelta

import pytest
from django.db import connection

from django_durable import claims, clock, workflow
from django_durable.worker import Worker
from tests.worker_support import IS_POSTGRES


def noop(ctx):
    return ctx


quick = workflow("notify.quick", [noop])


def listen():
    import psycopg

    params = {
        key: value
        for key, value in connection.get_connection_params().items()
        if key not in ("cursor_factory", "context")
    }
    listener = psycopg.connect(**params, autocommit=True)
    listener.execute(f"LISTEN {claims.CHANNEL}")
    return listener


def heard(listener) -> list[str]:
    return [notice.payload for notice in listener.notifies(timeout=0.3)]


@pytest.fixture
def fresh_coalescing(monkeypatch):
    monkeypatch.setattr(claims, "_last_sent", {})


@pytest.mark.skipif(not IS_POSTGRES, reason="LISTEN/NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_starts_close_together_send_one_notice_and_later_ones_another(fresh_coalescing):
    listener = listen()
    try:
        quick.start({})
        quick.start({})  # within COALESCE_SECONDS of the first: coalesced
        assert heard(listener) == ["default"]
        time.sleep(claims.COALESCE_SECONDS)
        quick.start({})
        assert heard(listener) == ["default"]
    finally:
        listener.close()


@pytest.mark.skipif(not IS_POSTGRES, reason="LISTEN/NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_start_scheduled_later_sends_its_due_time_not_a_wake_up(fresh_coalescing):
    listener = listen()
    try:
        due = clock.now() + timedelta(hours=1)
        quick.start({}, scheduled_at=due)
        [payload] = heard(listener)
        assert claims.parse_notice(payload) == ("default", due)
    finally:
        listener.close()


def test_a_worker_that_hears_a_notice_claims_again_shortly_after(monkeypatch):
    ticks = [1000.0]
    monkeypatch.setattr("django_durable.worker.time.monotonic", lambda: ticks[0])
    worker = Worker(["default"], name="w-notice")
    worker._heard("default")
    assert worker._seconds_until_due() == (pytest.approx(claims.COALESCE_SECONDS), True)
    ticks[0] += 0.01  # woken early (a runner finished): the re-check still stands
    worker._recheck_done()
    seconds, rechecking = worker._seconds_until_due()
    assert rechecking and seconds == pytest.approx(claims.COALESCE_SECONDS - 0.01)
    ticks[0] += claims.COALESCE_SECONDS  # its time came: this claim is the re-check
    worker._recheck_done()
    assert worker._seconds_until_due() == (worker.poll_interval, False)
    worker._heard("other-queue")  # not served here: ignored
    assert worker._seconds_until_due() == (worker.poll_interval, False)


def test_a_worker_that_hears_a_due_time_sleeps_until_then_only(monkeypatch):
    now = clock.now()
    monkeypatch.setattr(clock, "now", lambda: now)
    worker = Worker(["default"], name="w-due")
    due = now + timedelta(seconds=worker.poll_interval / 2)
    worker._heard(f"default@{due.isoformat()}")
    assert worker._seconds_until_due() == (worker.poll_interval / 2, False)


@pytest.mark.skipif(not IS_POSTGRES, reason="LISTEN/NOTIFY is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_start_right_after_another_is_picked_up_without_polling(tmp_path):
    """The second start of each pair sends no notice of its own (coalesced), and the
    worker, woken by the first, has finished it before the second commits: its claim
    a moment after the notice must find the second, not its 30 s poll (regression: an
    early wake-up used up that claim)."""
    import django_durable as durable
    from django_durable.models import WorkflowExecution
    from tests.worker_support import WorkerPool, wait_for

    pool = WorkerPool(tmp_path)
    try:
        pool.start(poll_interval=30)
        time.sleep(0.5)  # the worker idles, its listener connected
        for _ in range(3):
            durable.start("tests.hello", {"name": "first"})
            time.sleep(claims.COALESCE_SECONDS / 2)
            second = durable.start("tests.hello", {"name": "second"})

            def completed(execution_id=second) -> bool:
                return WorkflowExecution.objects.get(id=execution_id).status == "completed"

            wait_for(completed, "the second start picked up", timeout=10, report=pool.report)
            time.sleep(claims.COALESCE_SECONDS * 2)
    finally:
        pool.close()


def test_a_queue_name_may_hold_the_separator_of_a_due_time():
    due = clock.now()
    assert claims.parse_notice("mail@eu") == ("mail@eu", None)
    assert claims.parse_notice(f"mail@eu@{due.isoformat()}") == ("mail@eu", due)
    worker = Worker(["mail@eu"], name="w-at")
    worker._heard("mail@eu")  # neither raises nor is ignored
    assert worker._seconds_until_due()[1] is True


def test_a_finished_execution_is_not_a_timer(monkeypatch):
    from django_durable.models import WorkflowExecution

    worker = Worker(["default"], name="w-finished")
    past = clock.now() - timedelta(minutes=1)
    finished = WorkflowExecution(status="completed", run_at=past, ready=False)
    worker._note_timer(finished)
    assert worker._next_due is None
    later = clock.now() + timedelta(minutes=1)
    parked = WorkflowExecution(status="waiting", run_at=later, ready=False)
    worker._note_timer(parked)
    assert worker._next_due == later


def test_an_offer_made_while_every_runner_is_awake_is_not_lost():
    """All runners were busy when work was offered: the first to find nothing looks
    once more before it sleeps, instead of leaving the work to the next poll."""
    worker = Worker(["default"], concurrency=1)
    slot = worker.slots["default"]
    worker._offer(slot)
    assert (slot.busy, slot.inbox.qsize(), slot.missed) == (1, 1, False)
    worker._offer(slot)  # no runner sleeps: remembered, not queued
    assert (slot.busy, slot.inbox.qsize(), slot.missed) == (1, 1, True)
    assert worker._sleep_unless_missed(slot) is False  # look once more
    assert (slot.busy, slot.missed) == (1, False)
    assert worker._sleep_unless_missed(slot) is True
    assert slot.busy == 0


@pytest.mark.skipif(IS_POSTGRES, reason="PostgreSQL sends NOTIFY; this is the other databases'")
@pytest.mark.django_db(transaction=True)
def test_without_notify_a_process_hears_its_own_notices_after_commit():
    """SQLite has no NOTIFY: a worker still hears at once what its own steps make
    runnable (a parent woken by its child on another queue), once it is committed."""
    from django.db import transaction

    heard = []
    stop = claims.listen_here(heard.append)
    try:
        with transaction.atomic():
            claims.notify("default")
            assert heard == []  # not before the commit
        assert heard == ["default"]
    finally:
        stop()
    claims.notify("default")
    assert heard == ["default"]  # stopped hearing


@pytest.mark.skipif(IS_POSTGRES, reason="PostgreSQL sends NOTIFY; this is the other databases'")
@pytest.mark.django_db(transaction=True)
def test_a_worker_on_sqlite_hears_its_own_process():
    worker = Worker(["default"], concurrency=1)
    worker._start_threads()
    try:
        claims.notify("default")
        assert worker._recheck_at is not None  # heard: it claims now, and again shortly
    finally:
        worker.state = "stopping"
        worker._stopped.set()
        worker._shutdown()
