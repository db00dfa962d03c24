"""Cron schedules: declarations, the API, firing each due time once, DST, failures."""

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.db import connections

import django_durable as durable
from django_durable import WorkflowDefinitionError, clock, cron, schedules, timers
from django_durable.dsl.cron import next_time
from django_durable.errors import UnknownWorkflow
from django_durable.models import Schedule, WorkflowExecution
from django_durable.schedules import ScheduleNotFound
from django_durable.testing import advance_clock, run_until_idle
from tests.worker_support import IS_POSTGRES
from tests.workflows_app import scheduled_workflows as wf

pytestmark = pytest.mark.django_db

NEW_YORK = "America/New_York"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- times -------------------------------------------------------------------------------


def test_next_time_reads_the_expression_in_its_zone():
    assert next_time("0 9 * * *", NEW_YORK, at("2026-01-05T12:00:00+00:00")) == at(
        "2026-01-05T14:00:00+00:00"
    )
    assert next_time("0 9 * * *", NEW_YORK, at("2026-07-05T12:00:00+00:00")) == at(
        "2026-07-05T13:00:00+00:00"
    )


def test_a_time_skipped_by_spring_forward_runs_once_an_hour_later():
    # 2026-03-08: New York goes from 02:00 EST straight to 03:00 EDT.
    before = at("2026-03-08T01:00:00-05:00")
    first = next_time("30 2 * * *", NEW_YORK, before)
    assert first == at("2026-03-08T03:30:00-04:00")
    assert next_time("30 2 * * *", NEW_YORK, first) == at("2026-03-09T02:30:00-04:00")


def test_a_time_repeated_by_fall_back_runs_once():
    # 2026-11-01: New York goes from 02:00 EDT back to 01:00 EST, so 01:30 happens twice.
    before = at("2026-11-01T00:00:00-04:00")
    first = next_time("30 1 * * *", NEW_YORK, before)
    assert first == at("2026-11-01T01:30:00-04:00")
    assert next_time("30 1 * * *", NEW_YORK, first) == at("2026-11-02T01:30:00-05:00")
    daily = next_time("30 2 * * *", NEW_YORK, before)
    assert daily == at("2026-11-01T02:30:00-05:00")
    assert next_time("30 2 * * *", NEW_YORK, daily) == at("2026-11-02T02:30:00-05:00")


def test_a_schedule_must_be_declared_with_cron():
    with pytest.raises(WorkflowDefinitionError, match=r"cron\(\.\.\.\)"):
        durable.workflow("tests.sched.bad", [wf.report], schedule="0 9 * * *")


def test_bad_expressions_and_zones_are_refused_when_declared():
    with pytest.raises(WorkflowDefinitionError, match="not a valid cron"):
        cron("every day")
    with pytest.raises(WorkflowDefinitionError, match="not a known time zone"):
        cron("0 9 * * *", timezone="Mars/Olympus")


# -- declarations ------------------------------------------------------------------------


def test_sync_creates_declared_schedules_and_keeps_what_people_set():
    schedules.sync()
    schedule = schedules.get_schedule("tests.sched.daily_report")
    assert (schedule.cron, schedule.timezone, schedule.input) == (
        "0 9 * * *",
        NEW_YORK,
        {"kind": "sales"},
    )
    assert schedule.enabled and schedule.declared and schedule.next_run_at is not None
    schedules.disable_schedule("tests.sched.daily_report")
    Schedule.objects.filter(name="tests.sched.daily_report").update(cron="5 5 * * *")
    schedules.sync()
    schedule = schedules.get_schedule("tests.sched.daily_report")
    assert schedule.cron == "0 9 * * *"  # follows the code
    assert not schedule.enabled  # a person's choice survives


def test_a_schedule_whose_declaration_is_gone_is_disabled_not_deleted():
    Schedule.objects.create(
        name="tests.sched.removed",
        workflow_name="tests.sched.plain_report",
        cron="0 * * * *",
        declared=True,
        enabled=True,
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    schedules.sync()
    assert schedules.get_schedule("tests.sched.removed").enabled is False


# -- the API -----------------------------------------------------------------------------


def test_create_get_update_list_and_delete():
    made = schedules.create_schedule(
        "nightly", "tests.sched.plain_report", "0 2 * * *", input={"a": 1}
    )
    assert schedules.get_schedule("nightly").id == made.id
    updated = schedules.update_schedule("nightly", cron="0 3 * * *", timezone=NEW_YORK)
    assert (updated.cron, updated.timezone) == ("0 3 * * *", NEW_YORK)
    assert [s.name for s in schedules.list_schedules(workflow="tests.sched.plain_report")] == [
        "nightly"
    ]
    schedules.disable_schedule("nightly")
    assert [s.name for s in schedules.list_schedules(enabled=False)] == ["nightly"]
    assert schedules.get_schedule("nightly").next_run_at is None
    schedules.delete_schedule("nightly")
    with pytest.raises(ScheduleNotFound):
        schedules.get_schedule("nightly")
    with pytest.raises(ScheduleNotFound):
        schedules.delete_schedule("nightly")


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValidationError, match="not a valid cron"):
        schedules.create_schedule("x", "tests.sched.plain_report", "61 * * * *")
    with pytest.raises(ValidationError, match="time zone"):
        schedules.create_schedule("x", "tests.sched.plain_report", "0 * * * *", timezone="Nowhere")
    with pytest.raises(UnknownWorkflow):
        schedules.create_schedule("x", "no.such.workflow", "0 * * * *")
    schedules.create_schedule("x", "tests.sched.plain_report", "0 * * * *")
    with pytest.raises(ValidationError, match="already exists"):
        schedules.create_schedule("x", "tests.sched.plain_report", "0 * * * *")
    with pytest.raises(ValidationError, match="editable"):
        schedules.update_schedule("x", name="y")
    with pytest.raises(ScheduleNotFound):
        schedules.trigger_schedule("nope")


def test_trigger_starts_a_run_now_without_moving_the_schedule():
    made = schedules.create_schedule("now", "tests.sched.plain_report", "0 2 * * *")
    eid = schedules.trigger_schedule("now", input={"manual": True})
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.input, execution.schedule_id) == ({"manual": True}, made.id)
    assert schedules.get_schedule("now").next_run_at == made.next_run_at


# -- firing ------------------------------------------------------------------------------


def test_a_due_schedule_fires_once_per_due_time():
    made = schedules.create_schedule("hourly", "tests.sched.plain_report", "0 * * * *")
    due = made.next_run_at
    advance_clock(due - clock.now() + timedelta(seconds=1))
    assert schedules.fire_due() == 1
    assert schedules.fire_due() == 0  # already moved on
    runs = WorkflowExecution.objects.filter(schedule=made)
    assert runs.count() == 1
    assert runs.get().idempotency_key == schedules.run_key(made, due)
    schedule = schedules.get_schedule("hourly")
    assert (schedule.last_run_at, schedule.next_run_at) == (due, due + timedelta(hours=1))


def test_firing_the_same_due_time_again_starts_no_second_run():
    made = schedules.create_schedule("hourly", "tests.sched.plain_report", "0 * * * *")
    due = made.next_run_at
    advance_clock(due - clock.now() + timedelta(seconds=1))
    schedules.fire_due()
    Schedule.objects.filter(id=made.id).update(next_run_at=due)  # as if a worker raced
    schedules.fire_due()
    assert WorkflowExecution.objects.filter(schedule=made).count() == 1


def test_after_downtime_a_missed_time_fires_once_not_once_per_slot():
    made = schedules.create_schedule("hourly", "tests.sched.plain_report", "0 * * * *")
    advance_clock(timedelta(hours=5))
    timers.run_timers()
    timers.run_timers()
    assert WorkflowExecution.objects.filter(schedule=made).count() == 1
    assert schedules.get_schedule("hourly").next_run_at > clock.now()


def test_failures_are_counted_and_disable_the_schedule_after_too_many(settings):
    settings.DURABLE = {**getattr(settings, "DURABLE", {}), "SCHEDULE_AUTO_DISABLE_AFTER": 2}
    schedules.create_schedule("flaky", "tests.sched.plain_report", "0 * * * *", input={"fail": 1})
    for _ in range(2):
        advance_clock(timedelta(hours=1))
        run_until_idle()
    schedule = schedules.get_schedule("flaky")
    assert schedule.consecutive_failures == 2
    assert schedule.last_error["message"] == "report source down"
    assert (schedule.enabled, schedule.next_run_at) == (False, None)
    assert schedule.auto_disabled_at is not None
    schedules.update_schedule("flaky", input={})
    schedules.enable_schedule("flaky")
    assert schedules.get_schedule("flaky").consecutive_failures == 0
    advance_clock(timedelta(hours=1))
    run_until_idle()
    schedule = schedules.get_schedule("flaky")
    assert (schedule.consecutive_failures, schedule.last_error) == (0, None)


def test_the_workers_timers_wake_for_the_next_schedule():
    made = schedules.create_schedule("soon", "tests.sched.plain_report", "0 * * * *")
    timers.run_timers()  # what a worker does every poll interval
    assert timers.next_wakeup() == made.next_run_at


def test_an_idle_worker_reads_the_schedules_table_once_per_poll(django_assert_num_queries):
    schedules.create_schedule("later", "tests.sched.plain_report", "0 * * * *")
    with django_assert_num_queries(1):
        schedules.fire_due()
        schedules.next_due()


def test_cron_is_importable_from_the_package():
    assert durable.cron is cron


def fired_each_hour_for(hours: int) -> list[datetime]:
    """Move the engine clock an hour at a time, firing what falls due; the due times."""
    for _ in range(hours):
        advance_clock(timedelta(hours=1))
        timers.run_timers()
    keys = WorkflowExecution.objects.exclude(schedule=None).values_list(
        "idempotency_key", flat=True
    )
    return sorted(
        datetime.strptime(key.rsplit(":", 1)[1], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
        for key in keys
    )


def test_a_daily_0230_job_runs_once_each_day_across_spring_forward(frozen):
    # The frozen clock starts on Wednesday 2024-03-06 12:00 UTC; New York springs
    # forward on Sunday 2024-03-10, when 02:30 does not exist.
    made = schedules.create_schedule(
        "early", "tests.sched.plain_report", "30 2 * * *", timezone=NEW_YORK
    )
    runs = fired_each_hour_for(24 * 6)
    local = [run.astimezone(ZoneInfo(NEW_YORK)) for run in runs]
    assert [run.date().isoformat() for run in local] == [
        "2024-03-07",
        "2024-03-08",
        "2024-03-09",
        "2024-03-10",
        "2024-03-11",
        "2024-03-12",
    ]
    assert [run.strftime("%H:%M") for run in local] == ["02:30"] * 3 + ["03:30"] + ["02:30"] * 2
    assert WorkflowExecution.objects.filter(schedule=made).count() == 6


def test_a_job_at_a_repeated_hour_runs_once_on_fall_back(frozen):
    # New York falls back on 2024-11-03: 01:30 happens twice.
    advance_clock(datetime(2024, 11, 1, 12, tzinfo=UTC) - clock.now())
    made = schedules.create_schedule(
        "repeat", "tests.sched.plain_report", "30 1 * * *", timezone=NEW_YORK
    )
    runs = fired_each_hour_for(24 * 3)
    assert runs == [
        datetime(2024, 11, 2, 5, 30, tzinfo=UTC),
        datetime(2024, 11, 3, 5, 30, tzinfo=UTC),  # 01:30 EDT, the first of the two
        datetime(2024, 11, 4, 6, 30, tzinfo=UTC),  # 01:30 EST
    ]
    assert WorkflowExecution.objects.filter(schedule=made).count() == 3


def test_a_schedule_of_a_workflow_this_code_does_not_know_is_left_alone():
    """A worker still on older code (during a deploy) must not disable what newer code
    declared, nor fail trying to fire it."""
    Schedule.objects.create(
        name="tests.sched.newer",
        workflow_name="tests.sched.only_in_newer_code",
        cron="0 * * * *",
        declared=True,
        enabled=True,
        next_run_at=clock.now() - timedelta(minutes=1),
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    schedules.sync()
    assert schedules.get_schedule("tests.sched.newer").enabled
    assert schedules.fire_due() == 0
    assert not WorkflowExecution.objects.exists()


def test_a_declaration_that_comes_back_runs_again():
    schedules.sync()
    Schedule.objects.filter(name="tests.sched.daily_report").update(
        declared=False,
        enabled=False,
        next_run_at=None,  # as sync leaves a removed one
    )
    schedules.sync()
    schedule = schedules.get_schedule("tests.sched.daily_report")
    assert (schedule.enabled, schedule.declared) == (True, True)
    assert schedule.next_run_at is not None


def test_changing_only_the_input_keeps_the_time_and_the_failure_count():
    made = schedules.create_schedule("keep", "tests.sched.plain_report", "0 * * * *")
    Schedule.objects.filter(id=made.id).update(consecutive_failures=3)
    schedules.update_schedule("keep", input={"fail": 0})
    schedule = schedules.get_schedule("keep")
    assert (schedule.consecutive_failures, schedule.next_run_at) == (3, made.next_run_at)


@pytest.mark.skipif(not IS_POSTGRES, reason="concurrent writers need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_workers_starting_together_sync_without_tripping_over_each_other():
    """Regression: two workers that both found no row both inserted it, and the second
    crashed at start on the unique name."""
    barrier, errors = threading.Barrier(4), []

    def sync():
        try:
            barrier.wait(10)
            schedules.sync()
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sync) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert Schedule.objects.filter(name="tests.sched.daily_report").count() == 1
