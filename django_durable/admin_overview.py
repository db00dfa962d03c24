"""The admin's overview page: what runs, what failed, what waits for a person, who works.

Registered on the `Overview` proxy model, so the admin index and the app index list it
("Overview") next to the executions it summarises; its changelist is the page, and it
has no other view. Whoever may view executions may see it.

It stays fast with millions of executions: every query is bounded, and only one is not:

- **All-time and last-24-hours counts by status and workflow**: one aggregate query
  (GROUP BY status, workflow_name over workflow rows), kept in Django's cache for
  `COUNTS_CACHE_SECONDS` per database alias and shown "as of" when it ran. It reads the
  whole table, at most once a minute per cache.
- **Active counts** (running, waiting, pending, compensating), pending inputs and
  schedules: one query of counts each stopped at `LIVE_CAP` (`COUNT(*)` over a
  `LIMIT`ed subquery that walks the status index in its order, so it reads at most
  `LIVE_CAP` + 1 rows each), so they are live. Beyond it the page shows the cached count
  instead, marked as such.
- **Recent failures**, **pending inputs waiting longest**, **next schedule runs**: the
  first `LIST_SIZE` rows in the order of an index (durable_exec_status,
  durable_input_status, durable_schedule_due).
- **Workers** and their load: the first `WORKERS_SHOWN` worker rows, and the rows held
  now grouped by holder, read through the lease index (durable_exec_lease: held rows only).
- **Health**: `health.check()`, bounded queries on partial indexes.

So a page load runs the same number of queries however large the tables are.
"""

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import router
from django.db.models import Count, F, Q, QuerySet
from django.db.models.fields.json import KT
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.timesince import timesince, timeuntil

from . import clock, health
from .colours import STATUS_COLOURS
from .models import (
    ExecutionKind,
    ExecutionStatus,
    InputStatus,
    Overview,
    PendingInput,
    Schedule,
    Worker,
    WorkflowExecution,
)

COUNTS_CACHE_SECONDS = 60
RECENT = timedelta(hours=24)
LIST_SIZE = 10
LIVE_CAP = 1_000  # live counts stop here; beyond, the cached count is shown
WORKERS_SHOWN = 50
WORKFLOWS_SHOWN = 25
ACTIVE = (
    ExecutionStatus.RUNNING,
    ExecutionStatus.WAITING,
    ExecutionStatus.PENDING,
    ExecutionStatus.COMPENSATING,
)
VIEW_PERMISSIONS = (
    "django_durable.view_workflowexecution",
    "django_durable.change_workflowexecution",
)


@admin.register(Overview)
class OverviewAdmin(admin.ModelAdmin):
    """The overview page as the changelist of `Overview`; nothing to add, change or
    delete, and no other URL."""

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        """Whoever may view executions (as Django's admin reads it: the view or the
        change permission on WorkflowExecution); the proxy's own permissions are not
        used."""
        return any(request.user.has_perm(permission) for permission in VIEW_PERMISSIONS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.changelist_view), name=name)]

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Overview",
            **overview(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/django_durable/overview.html", context)


# -- what the page shows --------------------------------------------------------------------


def overview(request: HttpRequest) -> dict[str, Any]:
    """The page's context: everything already counted, worded and linked, so the
    template runs no query."""
    now = clock.now()
    alias = router.db_for_read(WorkflowExecution)
    executions = WorkflowExecution.objects.using(alias)
    workflows = executions.filter(kind=ExecutionKind.WORKFLOW)
    live = health.count_up_to(
        alias,
        {
            # In the order of durable_exec_status (status, -created_at): the count walks
            # that index, never a scan of the table hoping to meet enough matches early.
            **{
                status: workflows.filter(status=status).order_by("-created_at") for status in ACTIVE
            },
            "inputs": PendingInput.objects.using(alias).filter(status=InputStatus.PENDING),
            "schedules": Schedule.objects.using(alias).filter(enabled=True),
            "auto_disabled": Schedule.objects.using(alias).filter(
                enabled=False, auto_disabled_at__isnull=False
            ),
        },
        LIVE_CAP,
    )
    counts = cached_counts(alias, now)
    workers = _workers(alias, now)
    return {
        "now": now,
        "health": _health(health.check(now, using=alias)),
        "active": [_status_cell(status, live[status], counts) for status in ACTIVE],
        "inputs_waiting": _capped(live["inputs"]),
        "inputs_url": _url("pendinginput", status__exact=InputStatus.PENDING),
        "by_status": _by_status(counts),
        "by_workflow": _by_workflow(counts),
        "counts": counts,
        "cache_seconds": COUNTS_CACHE_SECONDS,
        "live_cap": f"{LIVE_CAP:,}",
        "failures": _failures(workflows, now),
        "failed_url": _url("workflowexecution", status__exact=ExecutionStatus.FAILED),
        "inputs": _pending_inputs(alias, now),
        "can_answer": request.user.has_perm("django_durable.respond_pendinginput"),
        **workers,
        "schedules": _schedules(alias, now),
        "schedules_enabled": _capped(live["schedules"]),
        "schedules_auto_disabled": live["auto_disabled"],
        "schedules_auto_disabled_text": _capped(live["auto_disabled"]),
        "schedules_url": _url("schedule"),
        "auto_disabled_url": _url("schedule", enabled__exact=0),
        "executions_url": _url("workflowexecution"),
    }


def cached_counts(alias: str, now: datetime) -> dict[str, Any]:
    """Workflow executions by (status, workflow name): all time and created in the last
    24 hours, from one aggregate query kept `COUNTS_CACHE_SECONDS` in the default cache,
    keyed by database alias. `as_of` is when it ran; the 24 hours end then."""
    key = f"django_durable:overview:counts:{alias}"
    counts = cache.get(key)
    if counts is None:
        since = now - RECENT
        rows = (
            WorkflowExecution.objects.using(alias)
            .filter(kind=ExecutionKind.WORKFLOW)
            .order_by()
            .values_list("status", "workflow_name")
            .annotate(total=Count("pk"), recent=Count("pk", filter=Q(created_at__gte=since)))
        )
        counts = {"as_of": now, "since": since, "rows": [tuple(row) for row in rows]}
        cache.set(key, counts, COUNTS_CACHE_SECONDS)
    return counts


def _failures(workflows: QuerySet, now: datetime) -> list[dict[str, Any]]:
    """The last failed workflows (by start, newest first: durable_exec_status), with the
    type and message of their error, not its traceback."""
    rows = (
        workflows.filter(status=ExecutionStatus.FAILED)
        .order_by("-created_at")
        .values(
            "id",
            "workflow_name",
            "current_step",
            "created_at",
            "completed_at",
            error_type=KT("error__type"),
            error_message=KT("error__message"),
        )[:LIST_SIZE]
    )
    failures = []
    for row in rows:
        when = row["completed_at"] or row["created_at"]
        failures.append(
            {
                **row,
                "short_id": str(row["id"])[:8],
                "url": reverse("admin:django_durable_workflowexecution_change", args=[row["id"]]),
                "when": when,
                "ago": _ago(when, now),
                "workflow_url": _url(
                    "workflowexecution",
                    workflow_name__exact=row["workflow_name"],
                    status__exact=ExecutionStatus.FAILED,
                ),
            }
        )
    return failures


def _pending_inputs(alias: str, now: datetime) -> list[dict[str, Any]]:
    """The questions waiting longest for an answer (durable_input_status)."""
    rows = (
        PendingInput.objects.using(alias)
        .filter(status=InputStatus.PENDING)
        .order_by("created_at")
        .values(
            "id",
            "input_name",
            "input_type",
            "prompt",
            "step_name",
            "created_at",
            "timeout_at",
            "root_id",
            workflow=F("execution__workflow_name"),
        )[:LIST_SIZE]
    )
    return [
        {
            **row,
            "age": _ago(row["created_at"], now),
            "answer_url": reverse("admin:django_durable_pendinginput_answer", args=[row["id"]]),
            "execution_url": reverse(
                "admin:django_durable_workflowexecution_change", args=[row["root_id"]]
            ),
            "short_id": str(row["root_id"])[:8],
            "times_out": _in(row["timeout_at"], now) if row["timeout_at"] else "",
        }
        for row in rows
    ]


def _workers(alias: str, now: datetime) -> dict[str, Any]:
    """Worker rows (live or not yet removed) and how many executions each holds now.
    Held rows are read through the lease index, which holds only them."""
    rows = list(
        Worker.objects.using(alias)
        .order_by("name")
        .values("name", "host", "pid", "queues", "concurrency", "started_at", "last_seen_at")[
            : WORKERS_SHOWN + 1
        ]
    )
    held = dict(
        WorkflowExecution.objects.using(alias)
        .filter(locked_until__isnull=False)
        .order_by()
        .values_list("locked_by")
        .annotate(n=Count("pk"))
    )
    live_since = now - health.live_window()
    workers = []
    for row in rows[:WORKERS_SHOWN]:
        holding = held.pop(row["name"], 0)
        workers.append(
            {
                **row,
                "queues": ", ".join(row["queues"] or []),
                "live": row["last_seen_at"] >= live_since,
                "seen_ago": _ago(row["last_seen_at"], now),
                "holding": holding,
                "load": f"{holding} / {row['concurrency']}",
                "busy": row["concurrency"] and holding >= row["concurrency"],
            }
        )
    for row in rows[WORKERS_SHOWN:]:
        held.pop(row["name"], None)
    return {
        "workers": workers,
        "workers_more": len(rows) > WORKERS_SHOWN,
        "workers_live": sum(worker["live"] for worker in workers),
        "workers_url": _url("worker"),
        # Held by names with no worker row: a process gone without a trace (its leases
        # lapse and are reclaimed), or `testing.run_until_idle`.
        "held_elsewhere": sorted(
            ((name or "?", count) for name, count in held.items()), key=lambda item: item[0]
        ),
    }


def _schedules(alias: str, now: datetime) -> list[dict[str, Any]]:
    """The enabled schedules due next (durable_schedule_due)."""
    rows = (
        Schedule.objects.using(alias)
        .filter(enabled=True, next_run_at__isnull=False)
        .order_by("next_run_at")
        .values(
            "id",
            "name",
            "workflow_name",
            "cron",
            "timezone",
            "next_run_at",
            "last_run_at",
            "consecutive_failures",
        )[:LIST_SIZE]
    )
    return [
        {
            **row,
            "url": reverse("admin:django_durable_schedule_change", args=[row["id"]]),
            "due": _in(row["next_run_at"], now),
            "overdue": row["next_run_at"] < now - health.LATE_AFTER,
        }
        for row in rows
    ]


def _by_status(counts: dict[str, Any]) -> list[dict[str, Any]]:
    totals = {status: [0, 0] for status in ExecutionStatus.values}
    for status, _, total, recent in counts["rows"]:
        pair = totals.setdefault(status, [0, 0])
        pair[0] += total
        pair[1] += recent
    since = counts["since"].isoformat()
    return [
        {
            **_badge(status),
            "total": f"{total:,}",
            "recent": f"{recent:,}",
            "url": _url("workflowexecution", status__exact=status),
            "recent_url": _url("workflowexecution", status__exact=status, created_at__gte=since),
        }
        for status, (total, recent) in totals.items()
    ]


def _by_workflow(counts: dict[str, Any]) -> dict[str, Any]:
    """Per workflow: executions in the last 24 hours and all time, and of them the
    failed and the active ones; the most run first."""
    per: dict[str, dict[str, int]] = {}
    for status, name, total, recent in counts["rows"]:
        entry = per.setdefault(name, {"total": 0, "recent": 0, "failed": 0, "active": 0})
        entry["total"] += total
        entry["recent"] += recent
        if status == ExecutionStatus.FAILED:
            entry["failed"] += total
        elif status in ACTIVE:
            entry["active"] += total
    ranked = sorted(per.items(), key=lambda item: (-item[1]["total"], item[0]))
    since = counts["since"].isoformat()
    rows = []
    for name, entry in ranked[:WORKFLOWS_SHOWN]:
        rows.append(
            {
                "name": name,
                **{key: f"{value:,}" for key, value in entry.items()},
                "failed_n": entry["failed"],
                "url": _url("workflowexecution", workflow_name__exact=name),
                "recent_url": _url(
                    "workflowexecution", workflow_name__exact=name, created_at__gte=since
                ),
                "failed_url": _url(
                    "workflowexecution",
                    workflow_name__exact=name,
                    status__exact=ExecutionStatus.FAILED,
                ),
            }
        )
    return {"rows": rows, "more": max(0, len(ranked) - WORKFLOWS_SHOWN)}


def _health(report: dict[str, Any]) -> dict[str, Any]:
    failed = [item for item in report["checks"] if not item["ok"]]
    return {
        **report,
        "failed": failed,
        "colour": {"healthy": "#198754", "degraded": "#b58900"}.get(report["status"], "#dc3545"),
    }


# -- small helpers ------------------------------------------------------------------------


def _badge(status: str) -> dict[str, str]:
    return {
        "status": status,
        "label": ExecutionStatus(status).label if status in ExecutionStatus.values else status,
        "colour": STATUS_COLOURS.get(status, "#666"),
    }


def _status_cell(status: str, count: int, counts: dict[str, Any]) -> dict[str, str]:
    """A live count; above `LIVE_CAP`, the cached one (as of `counts["as_of"]`)."""
    cached = ""
    if count > LIVE_CAP:
        total = sum(row[2] for row in counts["rows"] if row[0] == status)
        cached = f"≈{max(total, LIVE_CAP + 1):,}"
    return {
        **_badge(status),
        "count": cached or _capped(count),
        "cached": bool(cached),
        "url": _url("workflowexecution", status__exact=status),
    }


def _capped(count: int) -> str:
    return f"{LIVE_CAP:,}+" if count > LIVE_CAP else f"{count:,}"


def _url(model: str, **query: Any) -> str:
    url = reverse(f"admin:django_durable_{model}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


def _ago(then: datetime, now: datetime) -> str:
    """ "3 hours ago" (the largest unit only), "just now" within a minute."""
    if (now - then).total_seconds() < 60:
        return "just now"
    return f"{timesince(then, now).split(',')[0]} ago"


def _in(then: datetime, now: datetime) -> str:
    """ "in 3 hours", "in under a minute"; for a time already past, "3 hours ago"."""
    seconds = (then - now).total_seconds()
    if seconds < 0:
        return _ago(then, now)
    if seconds < 60:
        return "in under a minute"
    return f"in {timeuntil(then, now).split(',')[0]}"
