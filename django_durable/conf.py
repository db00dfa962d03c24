"""The DURABLE setting, merged over its defaults."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "QUEUES": {"default": {"concurrency": 10, "poll_interval": 1.0}},
    "LEASE_SECONDS": 300,
    "HEARTBEAT_SECONDS": 30,
    "DEFAULT_RETRY": None,
    "LOG_CAPTURE": True,
    "LOG_CAPTURE_LEVEL": "INFO",
    "SCHEDULE_AUTO_DISABLE_AFTER": 10,
    "SHUTDOWN_GRACE_SECONDS": 30,
    "MAX_RECOVERIES": 10,
    "PREPARED_STATEMENTS": None,  # None: yes, unless DISABLE_SERVER_SIDE_CURSORS
}

QUEUE_DEFAULTS: dict[str, Any] = {"concurrency": 10, "poll_interval": 1.0}


def get(name: str) -> Any:
    """One DURABLE option, read at call time so tests can override settings."""
    return getattr(settings, "DURABLE", {}).get(name, DEFAULTS[name])


def queue_options(queue: str) -> dict[str, Any]:
    return {**QUEUE_DEFAULTS, **get("QUEUES").get(queue, {})}
