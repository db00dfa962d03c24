"""Wake-up times for `schedule_at`: next_business_day, next_weekday, end_of_day (SPEC §3).

The helpers read the engine clock, so each test pins it with `now_is(...)`. Calendar used
below: 2024-03-06 is a Wednesday, 2024-03-08 a Friday, and the US switched to summer
time on Sunday 2024-03-10 (New York: UTC-5 before, UTC-4 after).
"""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from django_durable import clock, workflow
from django_durable.helpers import days, end_of_day, hours, minutes, next_business_day, next_weekday
from django_durable.models import WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from django_durable.waits import schedule_at

NEW_YORK = ZoneInfo("America/New_York")

WEDNESDAY = datetime(2024, 3, 6, 7, 0, tzinfo=UTC)
THURSDAY = datetime(2024, 3, 7, 16, 0, tzinfo=UTC)
FRIDAY = datetime(2024, 3, 8, 10, 0, tzinfo=UTC)
SATURDAY = datetime(2024, 3, 9, 10, 0, tzinfo=UTC)
SUNDAY = datetime(2024, 3, 10, 23, 0, tzinfo=UTC)
MONDAY_9 = datetime(2024, 3, 11, 9, 0, tzinfo=UTC)


@pytest.fixture
def now_is(monkeypatch):
    """`now_is(moment)` pins the engine clock at `moment`."""

    def pin(moment: datetime) -> None:
        monkeypatch.setattr(clock, "now", lambda: moment)

    return pin


def test_durations_are_timedeltas():
    assert days(3) == timedelta(days=3)
    assert hours(1.5) == timedelta(minutes=90)
    assert minutes(2) == timedelta(seconds=120)


# -- next_business_day -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "today, expected",
    [
        pytest.param(FRIDAY, MONDAY_9, id="friday-to-monday"),
        pytest.param(SATURDAY, MONDAY_9, id="saturday-to-monday"),
        pytest.param(SUNDAY, MONDAY_9, id="sunday-to-monday"),
        pytest.param(WEDNESDAY, datetime(2024, 3, 7, 9, 0, tzinfo=UTC), id="wednesday-to-thursday"),
        pytest.param(THURSDAY, datetime(2024, 3, 8, 9, 0, tzinfo=UTC), id="thursday-to-friday"),
    ],
)
def test_next_business_day(now_is, today, expected):
    now_is(today)

    result = next_business_day()

    assert result == expected
    assert result.utcoffset() == timedelta(0)


def test_next_business_day_is_after_today_even_before_the_hour(now_is):
    now_is(datetime(2024, 3, 6, 0, 5, tzinfo=UTC))  # Wednesday, long before 9:00

    assert next_business_day() == datetime(2024, 3, 7, 9, 0, tzinfo=UTC)


def test_next_business_day_hour_and_minute(now_is):
    now_is(FRIDAY)

    assert next_business_day(hour=14, minute=30) == datetime(2024, 3, 11, 14, 30, tzinfo=UTC)
    assert next_business_day(hour=0) == datetime(2024, 3, 11, 0, 0, tzinfo=UTC)


def test_next_business_day_in_a_named_time_zone(now_is):
    # 03:00 UTC on Friday is still Thursday evening (22:00) in New York.
    now_is(datetime(2024, 3, 8, 3, 0, tzinfo=UTC))

    result = next_business_day(tz="America/New_York")

    assert result.tzinfo is not None
    assert result.tzinfo.key == "America/New_York"
    assert (result.year, result.month, result.day, result.hour, result.minute) == (
        2024,
        3,
        8,
        9,
        0,
    )
    assert result.utcoffset() == timedelta(hours=-5)
    assert result == datetime(2024, 3, 8, 14, 0, tzinfo=UTC)


def test_next_business_day_across_a_daylight_saving_change(now_is):
    now_is(FRIDAY)  # 05:00 in New York, winter time

    result = next_business_day(tz="America/New_York")

    assert result.replace(tzinfo=None) == datetime(2024, 3, 11, 9, 0)
    assert result.utcoffset() == timedelta(hours=-4)  # summer time by Monday
    assert result == datetime(2024, 3, 11, 13, 0, tzinfo=UTC)


def test_next_business_day_with_a_tzinfo_object(now_is):
    now_is(datetime(2024, 3, 8, 23, 30, tzinfo=UTC))  # already Saturday 00:30 in Paris

    result = next_business_day(hour=8, tz=ZoneInfo("Europe/Paris"))

    assert result == datetime(2024, 3, 11, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert result.utcoffset() == timedelta(hours=1)


# -- next_weekday ----------------------------------------------------------------------------


def test_next_weekday_from_the_same_weekday_is_a_week_later(now_is):
    now_is(FRIDAY)  # 10:00, before 17:00

    assert next_weekday("friday", hour=17) == datetime(2024, 3, 15, 17, 0, tzinfo=UTC)


def test_next_weekday_later_this_week(now_is):
    now_is(WEDNESDAY)

    assert next_weekday("friday", hour=17) == datetime(2024, 3, 8, 17, 0, tzinfo=UTC)
    assert next_weekday("thursday") == datetime(2024, 3, 7, 9, 0, tzinfo=UTC)
    assert next_weekday("monday", hour=8, minute=15) == datetime(2024, 3, 11, 8, 15, tzinfo=UTC)
    assert next_weekday("tuesday") == datetime(2024, 3, 12, 9, 0, tzinfo=UTC)


def test_next_weekday_ignores_case(now_is):
    now_is(WEDNESDAY)

    assert next_weekday("Friday") == next_weekday("FRIDAY") == next_weekday("friday")


def test_next_weekday_in_a_time_zone(now_is):
    # Friday 03:00 UTC is Thursday in New York, so the next Friday there is tomorrow (local).
    now_is(datetime(2024, 3, 8, 3, 0, tzinfo=UTC))

    result = next_weekday("friday", hour=17, tz="America/New_York")

    assert result == datetime(2024, 3, 8, 17, 0, tzinfo=NEW_YORK)
    assert result.tzinfo.key == "America/New_York"


@pytest.mark.parametrize("weekday", ["funday", "fri", "", None, 4])
def test_next_weekday_rejects_unknown_weekdays(now_is, weekday):
    now_is(WEDNESDAY)

    with pytest.raises(ValueError, match="weekday"):
        next_weekday(weekday)


# -- end_of_day ------------------------------------------------------------------------------


def test_end_of_day(now_is):
    now_is(FRIDAY)

    result = end_of_day()

    assert result == datetime(2024, 3, 8, 23, 59, 59, tzinfo=UTC)
    assert result > FRIDAY


def test_end_of_day_in_a_time_zone(now_is):
    now_is(datetime(2024, 3, 8, 3, 0, tzinfo=UTC))  # Thursday 22:00 in New York

    result = end_of_day(tz="America/New_York")

    assert result == datetime(2024, 3, 7, 23, 59, 59, tzinfo=NEW_YORK)
    assert result.tzinfo.key == "America/New_York"


# -- with schedule_at ------------------------------------------------------------------------


def wait_for_monday(ctx):
    schedule_at(next_business_day())
    return {**ctx, "woke": True}


monday_morning = workflow("time_helpers.monday_morning", [wait_for_monday])


@pytest.mark.django_db
def test_schedule_at_next_business_day_waits_over_the_weekend(monkeypatch):
    # The clock's wall-clock part is pinned; advance_clock still moves it forward.
    monkeypatch.setattr(clock, "timezone", SimpleNamespace(now=lambda: FRIDAY))
    eid = monday_morning.start({})

    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "waiting"
    assert execution.run_at == MONDAY_9

    # On Saturday the step re-runs only when due; the wake time was fixed on Friday.
    advance_clock(MONDAY_9 - FRIDAY - timedelta(seconds=1))
    assert run_until_idle() == 0

    advance_clock(timedelta(seconds=1))
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"woke": True}
