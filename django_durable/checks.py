"""System checks for the DURABLE setting, run by `manage.py check` and at startup.

Registered by `DurableConfig.ready()`. One id per condition:
E001 DURABLE is not a dict; E002 an unknown option; E003 a timing option that is not a
positive number; E004 heartbeats no shorter than leases; E005 a bad DEFAULT_RETRY;
E006 QUEUES is not a non-empty dict; E007 a queue's concurrency; E008 a queue's
poll_interval; E009 a queue's options are not a dict; W001 SQLite without IMMEDIATE
transactions.
"""

from django.conf import settings
from django.core import checks

from .conf import DEFAULTS, QUEUE_DEFAULTS
from .dsl import Retry
from .errors import WorkflowDefinitionError


def check_durable_settings(app_configs, **kwargs) -> list[checks.CheckMessage]:
    options = getattr(settings, "DURABLE", {})
    if not isinstance(options, dict):
        return [checks.Error("DURABLE must be a dict.", id="durable.E001")]
    errors = []
    for name in sorted(set(options) - set(DEFAULTS)):
        errors.append(
            checks.Error(
                f"DURABLE has an unknown option {name!r}.",
                hint=f"Known options: {', '.join(sorted(DEFAULTS))}.",
                id="durable.E002",
            )
        )
    errors += _check_queues(options.get("QUEUES", DEFAULTS["QUEUES"]))
    for name in ("LEASE_SECONDS", "HEARTBEAT_SECONDS", "SHUTDOWN_GRACE_SECONDS", "MAX_RECOVERIES"):
        value = options.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            errors.append(
                checks.Error(f"DURABLE[{name!r}] must be a positive number.", id="durable.E003")
            )
    lease = options.get("LEASE_SECONDS", DEFAULTS["LEASE_SECONDS"])
    heartbeat = options.get("HEARTBEAT_SECONDS", DEFAULTS["HEARTBEAT_SECONDS"])
    if not any(error.id == "durable.E003" for error in errors) and heartbeat >= lease:
        errors.append(
            checks.Error(
                "DURABLE['HEARTBEAT_SECONDS'] must be shorter than LEASE_SECONDS, or leases "
                "lapse while their work is still running.",
                id="durable.E004",
            )
        )
    try:
        Retry.coerce(options.get("DEFAULT_RETRY"))
    except WorkflowDefinitionError as exc:
        errors.append(checks.Error(f"DURABLE['DEFAULT_RETRY']: {exc}", id="durable.E005"))
    return errors


def _check_queues(queues) -> list[checks.CheckMessage]:
    if not isinstance(queues, dict) or not queues:
        return [checks.Error("DURABLE['QUEUES'] must be a non-empty dict.", id="durable.E006")]
    errors = []
    for name, options in queues.items():
        if not isinstance(options, dict):
            errors.append(
                checks.Error(f"DURABLE['QUEUES'][{name!r}] must be a dict.", id="durable.E009")
            )
            continue
        concurrency = options.get("concurrency", QUEUE_DEFAULTS["concurrency"])
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            errors.append(
                checks.Error(
                    f"DURABLE['QUEUES'][{name!r}]['concurrency'] must be a positive int.",
                    id="durable.E007",
                )
            )
        interval = options.get("poll_interval", QUEUE_DEFAULTS["poll_interval"])
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            errors.append(
                checks.Error(
                    f"DURABLE['QUEUES'][{name!r}]['poll_interval'] must be a positive number.",
                    id="durable.E008",
                )
            )
    return errors


def check_sqlite_transaction_mode(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """SQLite's deferred transactions fail at once ("database is locked") when a reading
    transaction must write while a worker thread holds the write lock."""
    warnings = []
    for alias, options in settings.DATABASES.items():
        if options.get("ENGINE") != "django.db.backends.sqlite3":
            continue
        if options.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
            warnings.append(
                checks.Warning(
                    f"Database {alias!r} is SQLite without "
                    "OPTIONS['transaction_mode'] = 'IMMEDIATE'.",
                    hint="Set 'OPTIONS': {'transaction_mode': 'IMMEDIATE', 'timeout': 20} "
                    "so workers and web requests wait for SQLite's write lock.",
                    id="durable.W001",
                )
            )
    return warnings
