"""Small helpers for step functions: context updates, durations and wake-up times.

The context helpers return a new dict and never mutate the one they are given, so a
step that fails half-way leaves nothing behind. The time helpers read the engine clock
(so tests can move it) and return aware datetimes for `waits.schedule_at`.
"""

from collections.abc import Callable
from datetime import datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from . import clock

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def assign(ctx: dict, key: str, value: Any) -> dict:
    """Return a copy of `ctx` with `key` set to `value`."""
    return {**ctx, key: value}


def update(ctx: dict, key: str, fn: Callable[[Any], Any], default: Any = None) -> dict:
    """Return a copy of `ctx` with `key` replaced by `fn(old value)`."""
    return {**ctx, key: fn(ctx.get(key, default))}


def append(ctx: dict, key: str, value: Any) -> dict:
    """Return a copy of `ctx` with `value` appended to the list at `key`."""
    return {**ctx, key: [*ctx.get(key, []), value]}


def increment(ctx: dict, key: str, by: int | float = 1) -> dict:
    """Return a copy of `ctx` with the number at `key` (0 if missing) increased."""
    return {**ctx, key: ctx.get(key, 0) + by}


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def next_business_day(hour: int = 9, minute: int = 0, tz: str | tzinfo | None = None) -> datetime:
    """`hour:minute` on the next Monday-to-Friday after today, in `tz` (default UTC)."""
    today = _now_in(tz)
    day = today.date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, time(hour, minute), tzinfo=today.tzinfo)


def next_weekday(
    weekday: str, hour: int = 9, minute: int = 0, tz: str | tzinfo | None = None
) -> datetime:
    """`hour:minute` on the next `weekday` ("monday".."sunday") after today, in `tz`."""
    try:
        target = WEEKDAYS.index(weekday.lower())
    except (AttributeError, ValueError):
        raise ValueError(
            f"weekday must be one of {', '.join(WEEKDAYS)}, not {weekday!r}."
        ) from None
    today = _now_in(tz)
    ahead = (target - today.weekday() - 1) % 7 + 1
    day = today.date() + timedelta(days=ahead)
    return datetime.combine(day, time(hour, minute), tzinfo=today.tzinfo)


def end_of_day(tz: str | tzinfo | None = None) -> datetime:
    """The last second of today in `tz` (default UTC)."""
    today = _now_in(tz)
    return datetime.combine(today.date(), time(23, 59, 59), tzinfo=today.tzinfo)


def _now_in(tz: str | tzinfo | None) -> datetime:
    zone = ZoneInfo(tz) if isinstance(tz, str) else (tz or ZoneInfo("UTC"))
    return clock.now().astimezone(zone)
