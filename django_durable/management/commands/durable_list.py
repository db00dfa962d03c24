from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from django_durable import clock
from django_durable.management.base import (
    DurableCommand,
    add_format_arguments,
    parse_duration,
    short_span,
    usage_error,
)
from django_durable.models import ExecutionKind, ExecutionStatus, WorkflowExecution

HEADERS = ["id", "workflow", "status", "step", "queue", "created", "duration"]


class Command(DurableCommand):
    help = (
        "List executions, newest first: id, workflow, status, current step, queue, when "
        "created and how long it ran (for one still active: how long it has been running). "
        "Only workflows (also child workflows) unless --all-kinds adds parallel branches "
        "and foreach items."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--status",
            action="extend",
            nargs="+",
            metavar="STATUS",
            help="Only these statuses (several, or repeat the option; commas work too): "
            + ", ".join(ExecutionStatus.values)
            + ".",
        )
        parser.add_argument("--workflow", metavar="NAME", help="Only this workflow.")
        parser.add_argument("--queue", metavar="NAME", help="Only this queue.")
        parser.add_argument(
            "--since",
            metavar="AGE_OR_DATE",
            help="Only executions created since then: an age such as 7d, 12h, 30m, or an "
            "ISO date or date-time (2024-03-01, 2024-03-01T09:30; the current time zone "
            "unless it has an offset).",
        )
        parser.add_argument(
            "--limit", type=int, default=50, metavar="N", help="At most N rows (default 50)."
        )
        parser.add_argument(
            "--all-kinds",
            action="store_true",
            help="Also list the rows of parallel branches and foreach items.",
        )
        add_format_arguments(parser)

    def handle(self, *args, **options):
        if options["limit"] < 1:
            raise usage_error("--limit must be at least 1.")
        executions = WorkflowExecution.objects.order_by("-created_at", "-id")
        if not options["all_kinds"]:
            executions = executions.filter(kind=ExecutionKind.WORKFLOW)
        if options["status"]:
            executions = executions.filter(status__in=parse_statuses(options["status"]))
        if options["workflow"]:
            executions = executions.filter(workflow_name=options["workflow"])
        if options["queue"]:
            executions = executions.filter(queue=options["queue"])
        if options["since"]:
            executions = executions.filter(created_at__gte=parse_since(options["since"]))
        rows = list(executions[: options["limit"]])
        now = clock.now()
        if options["format"] == "json":
            self.write_json([as_json(execution, now) for execution in rows])
            return
        headers = HEADERS + (["kind"] if options["all_kinds"] else [])
        self.write_table(
            [as_row(execution, now, options["all_kinds"]) for execution in rows], headers
        )


def parse_statuses(values: list[str]) -> list[str]:
    statuses = [part.strip() for value in values for part in value.split(",") if part.strip()]
    unknown = [status for status in statuses if status not in ExecutionStatus.values]
    if unknown:
        raise usage_error(
            f"Unknown status {unknown[0]!r}: use one of {', '.join(ExecutionStatus.values)}."
        )
    return statuses


def parse_since(text: str) -> datetime:
    """An age (`7d`: created in the last 7 days) or an ISO date or date-time."""
    text = text.strip()
    if text[-1:].isalpha() and text[:1].isdigit() and "-" not in text:
        return clock.now() - parse_duration(text)
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = None if day is None else datetime(day.year, day.month, day.day)
    except ValueError:
        moment = None
    if moment is None:
        raise usage_error(
            f"--since {text!r} is neither an age (7d, 12h, 30m) nor an ISO date "
            "(2024-03-01, 2024-03-01T09:30)."
        )
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def elapsed(execution: WorkflowExecution, now: datetime) -> timedelta | None:
    """How long it ran (finished), or has been running (active); None before it started."""
    started = execution.started_at
    if execution.completed_at is not None:
        return execution.completed_at - (started or execution.created_at)
    return None if started is None else now - started


def local(moment: datetime | None) -> datetime | None:
    return None if moment is None else timezone.localtime(moment)


def brief_error(error: dict | None) -> dict | None:
    """An execution's error without its traceback (`durable_inspect` shows that)."""
    if not error:
        return None
    return {key: value for key, value in error.items() if key != "traceback"}


def as_row(execution: WorkflowExecution, now: datetime, with_kind: bool) -> list:
    row = [
        str(execution.id)[:8],
        execution.workflow_name,
        execution.status,
        execution.current_step,
        execution.queue,
        local(execution.created_at),
        short_span(elapsed(execution, now)),
    ]
    return row + ([execution.kind] if with_kind else [])


def as_json(execution: WorkflowExecution, now: datetime) -> dict:
    span = elapsed(execution, now)
    return {
        "id": execution.id,
        "workflow": execution.workflow_name,
        "status": execution.status,
        "current_step": execution.current_step,
        "queue": execution.queue,
        "priority": execution.priority,
        "kind": execution.kind,
        "parent": execution.parent_id,
        "created_at": execution.created_at,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "duration_seconds": None if span is None else round(span.total_seconds(), 3),
        "error": brief_error(execution.error),
        "cancel_reason": execution.cancel_reason,
    }
