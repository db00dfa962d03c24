"""Small helpers for step functions: context updates and durations.

The context helpers return a new dict and never mutate the one they are given, so a
step that fails half-way leaves nothing behind.
"""

from collections.abc import Callable
from datetime import timedelta
from typing import Any


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
