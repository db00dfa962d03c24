"""The engine's clock.

Every time the engine reads (due retries, deadlines, sleeps) comes from here, so tests
can move time forward with `django_durable.testing.advance_clock` instead of waiting.
"""

import threading
from datetime import datetime, timedelta

from django.utils import timezone

_offset = timedelta()
_lock = threading.Lock()


def now() -> datetime:
    """The current engine time: wall-clock UTC plus any offset set by tests."""
    return timezone.now() + _offset


def advance(delta: timedelta) -> None:
    global _offset
    with _lock:
        _offset += delta


def reset() -> None:
    global _offset
    with _lock:
        _offset = timedelta()
