"""Is django-durable working? A health report built from a few bounded queries.

`check()` answers with a JSON-able dict, for the admin's overview page, a monitoring
endpoint or a management command::

    {
        "status": "healthy" | "degraded" | "unhealthy",
        "checked_at": "2026-12-01T09:00:00+00:00",
        "database": "default",
        "live_workers": 2,
        "thresholds": {"live_window_seconds": 90.0, "late_after_seconds": 300.0},
        "checks": [
            {"name": "database", "ok": True, "severity": None, "detail": "..."},
            ...
        ],
    }

Each check is `{"name", "ok", "severity", "detail"}`: `severity` is None when `ok`, else
"degraded" (work is late or something needs a look, but work still gets done) or
"unhealthy" (work is not getting done). The overall `status` is the worst severity of
the checks that failed, "healthy" when none did. `detail` is one sentence for a person.

The checks, in order (their names are stable):

- `database`: the database answers (`SELECT 1`). If not, the others are not run and
  report so; the status is unhealthy.
- `workers`: at least one worker is live, i.e. heartbeated within `live_window()` (three
  heartbeats, `DURABLE["HEARTBEAT_SECONDS"]`, as workers themselves judge each other).
  None live is unhealthy when work is waiting (ready rows, timers due, lapsed leases),
  degraded otherwise (nothing would run if something were started).
- `leases`: no execution is held by a lease that lapsed more than `live_window()` ago.
  Any live worker's timers hand such rows back within a poll interval, so one that stays
  means no worker is reclaiming them (degraded).
- `ready_work`: no runnable execution has been ready for more than `LATE_AFTER` while
  workers are live; the detail names the queues, and those no live worker serves
  (degraded: workers are saturated or do not serve that queue).
- `timers`: no timer (a retry, a sleep, a wait's timeout, a start scheduled ahead) fell
  due more than `LATE_AFTER` ago without being made ready (degraded: timers lag).
- `compensations`: no `compensating` execution sits unheld and not ready with no timer
  that will make it ready (degraded: a saga is stuck and needs a person).
- `schedules`: no enabled schedule's run is more than `LATE_AFTER` overdue (degraded).

A report runs the same 8 queries whatever the tables hold, each bounded: a LIMIT (or a
COUNT over a LIMITed subquery, `count_up_to`) on a partial index that holds only the
rows concerned (durable_exec_ready, durable_exec_lease, durable_exec_timer,
durable_schedule_due), or on the status index for `compensating` rows; none counts the
whole executions table. Counts in the details stop at `CAP` ("100+"). A check whose
query fails (a DatabaseError) is reported as unhealthy, never raised.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, router
from django.db.models import Q, QuerySet

from . import clock, conf
from .models import ExecutionStatus, Schedule, Worker, WorkflowExecution

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
CHECK_NAMES = (
    "database",
    "workers",
    "leases",
    "ready_work",
    "timers",
    "compensations",
    "schedules",
)
# How long ready work, a due timer or a schedule's run may wait before it counts as late.
LATE_AFTER = timedelta(minutes=5)
CAP = 100  # rows read at most per check; counts beyond show as "100+"
WORKER_CAP = 1000  # live worker rows read at most


def live_window() -> timedelta:
    """How recent a worker's heartbeat must be for it to count as live: three heartbeat
    intervals, at least 10 s. The same window after which workers remove each other's
    rows (`worker.Worker._remove_stale_workers`)."""
    return timedelta(seconds=max(3 * conf.get("HEARTBEAT_SECONDS"), 10))


def check(now: datetime | None = None, *, using: str | None = None) -> dict[str, Any]:
    """The health report (see the module's docstring) at `now`, by default the engine
    clock's time (`django_durable.clock.now()`), read from database alias `using`, by
    default where the router reads executions from."""
    now = clock.now() if now is None else now
    alias = using or router.db_for_read(WorkflowExecution)
    report = {
        "status": HEALTHY,
        "checked_at": now.isoformat(),
        "database": alias,
        "live_workers": 0,
        "thresholds": {
            "live_window_seconds": live_window().total_seconds(),
            "late_after_seconds": LATE_AFTER.total_seconds(),
        },
        "checks": [],
    }
    probe = _Probe(now, alias)
    database = _run("database", probe.database)
    report["checks"].append(database)
    if not database["ok"]:
        for name in CHECK_NAMES[1:]:
            report["checks"].append(
                _result(name, UNHEALTHY, "Not checked: the database did not answer.")
            )
    else:
        for name in CHECK_NAMES[1:]:
            report["checks"].append(_run(name, getattr(probe, name)))
        report["live_workers"] = len(probe.workers_live)
    failed = [item["severity"] for item in report["checks"] if not item["ok"]]
    report["status"] = max(failed, key=_RANK.__getitem__, default=HEALTHY)
    return report


# -- the checks ----------------------------------------------------------------------------


class _Probe:
    """The checks of one report. Each returns (severity or None, detail); `workers` runs
    before the others, which read what it found."""

    def __init__(self, now: datetime, alias: str):
        self.now = now
        self.alias = alias
        self.workers_live: dict[str, list[str]] = {}  # name -> queues served

    def _executions(self):
        return WorkflowExecution.objects.using(self.alias)

    def database(self) -> tuple[str | None, str]:
        with connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return None, f"The database ({self.alias}) answers."

    def workers(self) -> tuple[str | None, str]:
        window = live_window()
        live = (
            Worker.objects.using(self.alias)
            .filter(last_seen_at__gte=self.now - window)
            .order_by("name")
            .values_list("name", "queues")[:WORKER_CAP]
        )
        self.workers_live = {name: list(queues or []) for name, queues in live}
        # Read whether or not a worker is live, so a report always runs the same queries.
        executions = self._executions()
        waiting = count_up_to(
            self.alias,
            {
                "ready": executions.runnable(),
                "timers due": executions.timers_due(self.now),
                "lapsed leases": executions.lease_lapsed(self.now),
            },
            CAP,
        )
        if self.workers_live:
            queues = sorted({q for served in self.workers_live.values() for q in served})
            return None, (
                f"{_plural(len(self.workers_live), 'live worker')} "
                f"(queues: {', '.join(queues) or 'none'})."
            )
        seconds = int(window.total_seconds())
        if any(waiting.values()):
            found = ", ".join(
                f"{_capped(count)} {what}" for what, count in waiting.items() if count
            )
            return UNHEALTHY, (
                f"No live worker (none heartbeated in the last {seconds} s) "
                f"while work waits to run ({found})."
            )
        return DEGRADED, (
            f"No live worker (none heartbeated in the last {seconds} s): "
            "nothing started now would run."
        )

    def leases(self) -> tuple[str | None, str]:
        lapsed = list(
            self._executions()
            .lease_lapsed(self.now)
            .order_by("locked_until")
            .values_list("locked_until", "locked_by")[: CAP + 1]
        )
        if not lapsed:
            return None, "No lease has lapsed."
        cutoff = self.now - live_window()
        stale = [(until, holder) for until, holder in lapsed if until < cutoff]
        if not stale:
            return None, (
                f"{_counted(len(lapsed), 'lease')} lapsed in the last "
                f"{int(live_window().total_seconds())} s; a worker will reclaim them."
            )
        holders = sorted({holder or "?" for _, holder in stale})
        return DEGRADED, (
            f"{_counted(len(stale), 'execution')} held by a lease that lapsed "
            f"{_ago(stale[0][0], self.now)} ago and was not reclaimed "
            f"(held by {', '.join(holders[:5])}{', ...' if len(holders) > 5 else ''})."
        )

    def ready_work(self) -> tuple[str | None, str]:
        late = list(
            self._executions()
            .runnable()
            .filter(run_at__lt=self.now - LATE_AFTER)
            .order_by()  # any late rows: stop at the first CAP + 1 found
            .values_list("run_queue", flat=True)[: CAP + 1]
        )
        if not late:
            return None, f"No execution has been ready for more than {_span(LATE_AFTER)}."
        queues = sorted(set(late))
        served = {q for served in self.workers_live.values() for q in served}
        unserved = [queue for queue in queues if queue not in served]
        detail = (
            f"{_counted(len(late), 'execution')} ready for more than {_span(LATE_AFTER)} "
            f"(queues: {', '.join(queues)})"
        )
        if not self.workers_live:
            return DEGRADED, f"{detail}; no worker is live."
        if unserved:
            return DEGRADED, f"{detail}; no live worker serves {', '.join(unserved)}."
        return DEGRADED, f"{detail}; the workers are not keeping up."

    def timers(self) -> tuple[str | None, str]:
        late = list(
            self._executions()
            .timers_due(self.now - LATE_AFTER)
            .order_by("run_at")
            .values_list("run_at", flat=True)[: CAP + 1]
        )
        if not late:
            return None, f"No timer is more than {_span(LATE_AFTER)} overdue."
        return DEGRADED, (
            f"{_counted(len(late), 'timer')} due for more than {_span(LATE_AFTER)} "
            f"(the oldest {_ago(late[0], self.now)}) and not made ready: timers lag."
        )

    def compensations(self) -> tuple[str | None, str]:
        stuck = list(
            self._executions()
            .filter(status=ExecutionStatus.COMPENSATING, locked_by__isnull=True, ready=False)
            .filter(Q(run_at__isnull=True) | Q(run_at__lt=self.now - LATE_AFTER))
            .order_by()
            .values_list("id", flat=True)[: CAP + 1]
        )
        if not stuck:
            return None, "No compensation is stuck."
        return DEGRADED, (
            f"{_counted(len(stuck), 'compensating execution')} neither held, ready nor "
            f"due later (e.g. {str(stuck[0])[:8]}): the undoing is stuck."
        )

    def schedules(self) -> tuple[str | None, str]:
        late = list(
            Schedule.objects.using(self.alias)
            .filter(enabled=True, next_run_at__lt=self.now - LATE_AFTER)
            .order_by("next_run_at")
            .values_list("name", "next_run_at")[: CAP + 1]
        )
        if not late:
            return None, f"No schedule is more than {_span(LATE_AFTER)} overdue."
        name, due = late[0]
        return DEGRADED, (
            f"{_counted(len(late), 'schedule')} overdue (the oldest, {name}, was due "
            f"{_ago(due, self.now)} ago)."
        )


def _run(name: str, probe: Callable[[], tuple[str | None, str]]) -> dict[str, Any]:
    try:
        severity, detail = probe()
    except DatabaseError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        severity, detail = UNHEALTHY, f"Could not check: {type(exc).__name__}: {first_line}"
    return _result(name, severity, detail)


def _result(name: str, severity: str | None, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": severity is None, "severity": severity, "detail": detail}


# -- wording -------------------------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def count_up_to(alias: str, querysets: dict[str, QuerySet], cap: int) -> dict[str, int]:
    """How many rows each queryset has, each counted only up to `cap` + 1 (a COUNT over
    a LIMITed subquery, which stops walking its index there), all in one query. Returns
    the counts by the same keys; a count above `cap` means "more than `cap`". Give a
    queryset an order matching an index to make sure that index is walked."""
    parts, params = [], []
    for index, queryset in enumerate(querysets.values()):
        # An explicit order is kept (it can pin the index walked); the model's default
        # ordering is dropped.
        ordered = queryset if queryset.query.order_by else queryset.order_by()
        inner = ordered.values("pk")[: cap + 1]
        sql, inner_params = inner.query.get_compiler(using=alias).as_sql()
        parts.append(f"(SELECT COUNT(*) FROM ({sql}) AS capped_{index})")
        params.extend(inner_params)
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(parts)}", params)
        row = cursor.fetchone()
    return dict(zip(querysets, row, strict=True))


def _capped(count: int) -> str:
    return f"{CAP}+" if count > CAP else str(count)


def _counted(found: int, noun: str) -> str:
    """A count read with LIMIT CAP + 1: beyond CAP it is "100+"."""
    if found > CAP:
        return f"{CAP}+ {noun}s"
    return _plural(found, noun)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 60 == 0 and seconds >= 60:
        return _plural(seconds // 60, "minute")
    return f"{seconds} s"


def _ago(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
