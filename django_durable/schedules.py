"""Cron schedules: declared with `workflow(..., schedule=cron(...))` or made at run time,
kept as `Schedule` rows, and fired by the workers' timers.

Firing a due schedule starts its workflow with an idempotency key made of the schedule
and the due time (`_fire`), so the database itself guarantees each due time starts one
execution however many workers fire it at once. The next due time is computed from
now, not from the missed one: after downtime a schedule fires once, not once per slot.
Each run's outcome is counted on its schedule by the door (`executions.finish`).
"""

import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from . import clock, registry, signals, starting
from .dsl.cron import Cron, cron_problem, next_time
from .dsl.names import QUEUE, WORKFLOW_NAME, checked_name
from .errors import DurableError, UnknownWorkflow, WorkflowDefinitionError
from .models import Schedule

FIRE_BATCH = 100
_upcoming: datetime | None = None  # the next due time the last `fire_due` saw
EDITABLE = ("workflow", "cron", "timezone", "input", "queue", "enabled")


class ScheduleNotFound(DurableError):
    """No schedule has the given name."""


def create_schedule(
    name: str,
    workflow: "registry.Definition | str",
    cron: str,
    *,
    timezone: str = "UTC",
    input: dict | None = None,
    queue: str | None = None,
    enabled: bool = True,
) -> Schedule:
    """Make a schedule; a name already taken, a bad cron or zone is a ValidationError,
    an unknown workflow UnknownWorkflow."""
    definition = registry.get(workflow)
    _check(name, cron, timezone, input, queue)
    now = clock.now()
    schedule = Schedule(
        name=name,
        workflow_name=definition.name,
        cron=cron,
        timezone=timezone,
        input=input or {},
        queue=queue,
        enabled=enabled,
        next_run_at=next_time(cron, timezone, now) if enabled else None,
        created_at=now,
        updated_at=now,
    )
    try:
        with transaction.atomic():
            schedule.save(force_insert=True)
    except IntegrityError:
        raise ValidationError(f"A schedule named {name!r} already exists.") from None
    return schedule


def get_schedule(name: str) -> Schedule:
    try:
        return Schedule.objects.get(name=name)
    except Schedule.DoesNotExist:
        raise ScheduleNotFound(f"No schedule named {name!r}.") from None


def update_schedule(name: str, /, **changes: Any) -> Schedule:
    """Change a schedule's workflow, cron, timezone, input, queue or enabled; a changed
    cron or zone moves its next due time."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValidationError(f"Cannot update {sorted(unknown)}; editable: {', '.join(EDITABLE)}.")
    with transaction.atomic():
        schedule = _locked(name)
        before = (schedule.cron, schedule.timezone, schedule.enabled)
        if "workflow" in changes:
            schedule.workflow_name = registry.get(changes.pop("workflow")).name
        for field, value in changes.items():
            setattr(schedule, field, value)
        _check(schedule.name, schedule.cron, schedule.timezone, schedule.input, schedule.queue)
        now = clock.now()
        if (schedule.cron, schedule.timezone, schedule.enabled) != before:
            _reschedule(schedule, now, enabling=schedule.enabled and not before[2])
        schedule.updated_at = now
        schedule.save()
    return schedule


def delete_schedule(name: str) -> None:
    deleted, _ = Schedule.objects.filter(name=name).delete()
    if not deleted:
        raise ScheduleNotFound(f"No schedule named {name!r}.")


def enable_schedule(name: str) -> Schedule:
    """Enable a schedule (also one disabled after too many failures): it fires next at
    its next due time from now, with its failure count reset."""
    return update_schedule(name, enabled=True)


def disable_schedule(name: str) -> Schedule:
    return update_schedule(name, enabled=False)


def trigger_schedule(name: str, *, input: dict | None = None) -> uuid.UUID:
    """Start the schedule's workflow now, outside its times; returns the execution id."""
    schedule = get_schedule(name)
    return _start(schedule, schedule.input if input is None else input, key=None)


def list_schedules(
    enabled: bool | None = None, workflow: "registry.Definition | str | None" = None
) -> QuerySet:
    schedules = Schedule.objects.order_by("name")
    if enabled is not None:
        schedules = schedules.filter(enabled=enabled)
    if workflow is not None:
        name = workflow if isinstance(workflow, str) else workflow.name
        schedules = schedules.filter(workflow_name=name)
    return schedules


def sync() -> None:
    """Make the declared schedules' rows follow the code: cron, zone, input and queue as
    declared; `enabled` and the run times people set are kept; a declared schedule whose
    declaration is gone is disabled, not deleted. Workers run it when they start."""
    now = clock.now()
    known = registry.all_workflows()
    declared = {wf.name: wf for wf in known if isinstance(wf.schedule, Cron)}
    undeclared = [wf.name for wf in known if wf.name not in declared]
    with transaction.atomic():
        for name, definition in declared.items():
            _sync_one(name, definition, now)
        # Only a declaration this code knows was removed: a worker still running older
        # code (during a deploy) leaves the schedules of workflows it does not know be.
        gone = Schedule.objects.filter(declared=True, workflow_name__in=undeclared)
        gone.update(enabled=False, declared=False, next_run_at=None, updated_at=now)


def fire_due(limit: int = FIRE_BATCH) -> int:
    """Start the workflows of the schedules that are due; returns how many started.

    One query when nothing is due: it reads the earliest schedules in time order
    (durable_schedule_due), fires those whose time came and remembers when the next is
    due, for `next_due`, so an idle worker asks the schedules table once per poll."""
    global _upcoming
    now = clock.now()
    earliest = list(
        Schedule.objects.filter(enabled=True, next_run_at__isnull=False)
        .order_by("next_run_at")
        .values_list("id", "next_run_at")[:limit]
    )
    due = [schedule_id for schedule_id, at in earliest if at <= now]
    upcoming = [at for _, at in earliest if at > now]
    fired = 0
    for schedule_id in due:
        started, following = _fire(schedule_id, now)
        fired += started
        upcoming.extend([following] if following else [])
    if len(due) == limit:
        upcoming.append(now)  # more are due than one call fires: come back at once
    _upcoming = min(upcoming, default=None)
    return fired


def upcoming(cron: str, timezone: str, count: int = 5, after: datetime | None = None):
    """The next `count` times a cron fires in `timezone` (for a preview), in UTC."""
    times, moment = [], after or clock.now()
    for _ in range(count):
        moment = next_time(cron, timezone, moment)
        times.append(moment)
    return times


def next_due() -> datetime | None:
    """When a schedule is next due, as the last `fire_due` of this process saw it (a
    schedule made since is seen at the next poll at the latest)."""
    return _upcoming


def run_key(schedule: Schedule, due: datetime) -> str:
    """The idempotency key of a schedule's run at a due time: one execution per time."""
    return f"schedule:{schedule.id}:{due.strftime('%Y%m%dT%H%M%S.%fZ')}"


# -- internals ---------------------------------------------------------------------------


def _sync_one(name: str, definition: registry.Definition, now: datetime) -> None:
    declaration: Cron = definition.schedule
    # Workers starting together sync together: get_or_create takes the row another one
    # inserted meanwhile instead of failing on the unique name.
    schedule, created = Schedule.objects.select_for_update().get_or_create(
        name=name,
        defaults={
            "workflow_name": definition.name,
            "cron": declaration.expression,
            "timezone": declaration.timezone,
            "declared": True,
            "created_at": now,
            "updated_at": now,
        },
    )
    if created or not schedule.declared:
        # New, or its declaration came back (or it was made by hand under this name):
        # the code declares it, so it runs.
        schedule.enabled, schedule.next_run_at = True, None
    moved = (schedule.cron, schedule.timezone) != (declaration.expression, declaration.timezone)
    schedule.workflow_name = definition.name
    schedule.cron = declaration.expression
    schedule.timezone = declaration.timezone
    schedule.input = declaration.input
    schedule.queue = declaration.queue
    schedule.declared = True
    schedule.updated_at = now
    if schedule.enabled and (moved or schedule.next_run_at is None):
        schedule.next_run_at = next_time(schedule.cron, schedule.timezone, now)
    schedule.save()


def _fire(schedule_id: int, now: datetime) -> tuple[int, datetime | None]:
    """Start one due schedule's run and move it to its next time, under its row lock;
    returns how many runs started (0 or 1) and its next time."""
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update(skip_locked=True)
            .filter(id=schedule_id, enabled=True, next_run_at__lte=now)
            .first()
        )
        if schedule is None:
            return 0, None  # fired by another worker meanwhile
        due = schedule.next_run_at
        try:
            _start(schedule, schedule.input, key=run_key(schedule, due))
        except UnknownWorkflow:
            return 0, None  # left for a worker that knows it (a deploy under way)
        schedule.last_run_at = due
        schedule.next_run_at = next_time(schedule.cron, schedule.timezone, max(now, due))
        schedule.updated_at = now
        schedule.save(update_fields=["last_run_at", "next_run_at", "updated_at"])
    return 1, schedule.next_run_at


def _start(schedule: Schedule, input: dict, key: str | None) -> uuid.UUID:
    definition = registry.get(schedule.workflow_name)
    execution_id = starting.create_execution(
        definition, input, queue=schedule.queue, idempotency_key=key, schedule=schedule
    )
    signals.emit(signals.schedule_triggered, Schedule, schedule=schedule, execution_id=execution_id)
    return execution_id


def _reschedule(schedule: Schedule, now: datetime, enabling: bool) -> None:
    """A changed time (or state): the next due time follows from now. Enabling starts
    afresh, also after an auto-disable: the failure count is reset."""
    if not schedule.enabled:
        schedule.next_run_at = None
        return
    schedule.next_run_at = next_time(schedule.cron, schedule.timezone, now)
    if enabling:
        schedule.auto_disabled_at = None
        schedule.consecutive_failures = 0


def _locked(name: str) -> Schedule:
    schedule = Schedule.objects.select_for_update().filter(name=name).first()
    if schedule is None:
        raise ScheduleNotFound(f"No schedule named {name!r}.")
    return schedule


def _check(name: Any, cron: Any, timezone: Any, input: Any, queue: Any) -> None:
    try:
        checked_name(name, "A schedule name", WORKFLOW_NAME)
        if queue is not None:
            checked_name(queue, "A schedule's queue", QUEUE)
    except WorkflowDefinitionError as exc:
        raise ValidationError(str(exc)) from None
    problem = cron_problem(cron, timezone)
    if problem:
        raise ValidationError(problem)
    if input is not None and not isinstance(input, dict):
        raise ValidationError("A schedule's input must be a dict.")
