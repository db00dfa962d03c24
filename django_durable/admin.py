"""The Django admin as a window onto executions: what ran, what waits, who works.

Rows are never edited here: state changes go through the engine's API (the cancel and
resume actions, answering a pending input, enabling a schedule).
"""

import json
import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Q, QuerySet, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.timesince import timesince

from . import admin_forms, clock, events, executions, forks, inputs, schedules
from .errors import DurableError
from .models import (
    ACTIVE_STATUSES,
    Event,
    ExecutionKind,
    InputStatus,
    PendingInput,
    Schedule,
    StepExecution,
    Wait,
    Worker,
    WorkflowExecution,
)


class ReadOnlyMixin:
    """Rows change only through the engine: never added, edited or deleted here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class WaitInline(ReadOnlyInline):
    model = Wait
    fk_name = "execution"
    fields = ("step_name", "key", "status", "wake_at", "result", "resolved_at")
    readonly_fields = fields


class PendingInputInline(ReadOnlyInline):
    model = PendingInput
    fk_name = "execution"
    fields = ("input_name", "input_type", "status", "prompt", "response", "responded_by")
    readonly_fields = fields


class EventInline(ReadOnlyInline):
    model = Event
    fields = ("name", "payload", "received_at", "consumed_at")
    readonly_fields = fields


class KindFilter(admin.SimpleListFilter):
    """Workflows by default: their parallel branches and foreach items (thousands, for
    a big foreach) are shown on the workflow's page, and listed here only on request."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [*ExecutionKind.choices[1:], ("all", "All rows")]

    def choices(self, changelist):
        for lookup, title in [(None, "Workflows"), *self.lookup_choices]:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup})
                if lookup
                else changelist.get_query_string(remove=[self.parameter_name]),
                "display": title,
            }

    def queryset(self, request, queryset):
        if self.value() == "all":
            return queryset
        return queryset.filter(kind=self.value() or ExecutionKind.WORKFLOW)


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "short_id",
        "workflow_name",
        "status_badge",
        "current_step",
        "queue",
        "age",
        "duration",
    )
    list_filter = (KindFilter, "status", "workflow_name", "queue", "created_at")
    search_fields = ("id", "workflow_name", "idempotency_key")
    search_help_text = (
        "An id or the start of one (at least 4 characters), an idempotency key, "
        "or part of a workflow name."
    )

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """An id prefix is a range of the primary key (an index seek, never a scan of
        the table's text); anything else is an idempotency key or a workflow name."""
        term = search_term.strip()
        prefix = term.replace("-", "").lower()
        if len(prefix) >= ID_PREFIX_MIN and all(char in HEX for char in prefix):
            low, high = uuid.UUID(prefix.ljust(32, "0")), uuid.UUID(prefix.ljust(32, "f"))
            return queryset.filter(id__gte=low, id__lte=high), False
        if not term:
            return queryset, False
        named = Q(idempotency_key=term) | Q(workflow_name__icontains=term)
        return queryset.filter(named), False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: WorkflowExecution) -> str:
        colour = STATUS_COLOURS.get(obj.status, "#666")
        return format_html(
            '<span class="durable-status" style="color:#fff;background:{};padding:1px 6px;'
            'border-radius:8px">{}</span>',
            colour,
            obj.get_status_display(),
        )

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: WorkflowExecution) -> str:
        return timesince(obj.created_at, clock.now()).split(",")[0]

    @admin.display(description="duration")
    def duration(self, obj: WorkflowExecution) -> str:
        if obj.started_at is None or obj.completed_at is None:
            return "-"
        seconds = (obj.completed_at - obj.started_at).total_seconds()
        return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"

    date_hierarchy = "created_at"
    inlines = [WaitInline, PendingInputInline, EventInline]
    readonly_fields = [
        "controls",
        "timeline",
        "input_json",
        "context_json",
        *[
            field.name
            for field in WorkflowExecution._meta.fields
            if field.name not in ("input", "context")
        ],
    ]
    fields = readonly_fields

    @admin.display(description="Input")
    def input_json(self, obj: WorkflowExecution) -> str:
        return readable_json(obj.input)

    @admin.display(description="Context")
    def context_json(self, obj: WorkflowExecution) -> str:
        return readable_json(obj.context)

    @admin.display(description="Actions")
    def controls(self, obj: WorkflowExecution) -> str:
        """Send an event to, or cancel, an execution that is still going."""
        if obj.status not in ACTIVE_STATUSES:
            return "-"
        links = [
            (reverse(f"admin:django_durable_workflowexecution_{name}", args=[obj.pk]), label)
            for name, label in (("send_event", "Send event"), ("cancel", "Cancel…"))
        ]
        return format_html_join(" ", '<a class="button" href="{}">{}</a>', links)

    def get_urls(self):
        views = [
            ("send-event", "send_event", self.send_event_view),
            ("cancel", "cancel", self.cancel_view),
        ]
        return [
            *[
                path(
                    f"<uuid:pk>/{route}/",
                    self.admin_site.admin_view(view),
                    name=f"django_durable_workflowexecution_{name}",
                )
                for route, name, view in views
            ],
            *super().get_urls(),
        ]

    def send_event_view(self, request: HttpRequest, pk) -> HttpResponse:
        """Send an event (name and JSON payload) through `send_event`; what it refuses
        shows on the form."""

        def send(execution, form):
            data = form.cleaned_data
            events.send_event(execution.pk, data["name"], data["payload"])
            return f"Sent {data['name']!r}."

        return self._control(request, pk, admin_forms.SendEventForm, send, "Send an event")

    def cancel_view(self, request: HttpRequest, pk) -> HttpResponse:
        def cancel(execution, form):
            data = form.cleaned_data
            done = executions.cancel(
                execution.pk, data["reason"] or None, compensate=data["compensate"]
            )
            return f"Execution {done.status}."

        return self._control(request, pk, admin_forms.CancelForm, cancel, "Cancel")

    def _control(self, request, pk, form_class, act, title: str) -> HttpResponse:
        if not self.has_control_permission(request):
            raise PermissionDenied
        execution = get_object_or_404(WorkflowExecution, pk=pk)
        form = form_class(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                done = act(execution, form)
            except DurableError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, done, messages.SUCCESS)
                return redirect("admin:django_durable_workflowexecution_change", execution.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{title}: {execution}",
            "execution": execution,
            "form": form,
        }
        return TemplateResponse(
            request, "admin/django_durable/workflowexecution/control.html", context
        )

    @admin.display(description="Steps")
    def timeline(self, obj: WorkflowExecution) -> str:
        """Every attempt of the execution, of its branches and items (grouped after the
        block that started them) and its compensations, as `forks.timeline` orders them."""
        rows = forks.timeline(obj)
        if not rows:
            return "-"
        header = format_html_join("", "<th>{}</th>", [(title,) for title in TIMELINE_COLUMNS])
        body = format_html_join("", "{}", [(_timeline_row(row),) for row in rows])
        return format_html(
            '<table class="durable-timeline"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
            header,
            body,
        )

    actions = ["cancel_executions", "resume_executions"]

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: WorkflowExecution) -> str:
        return str(obj.id)[:8]

    @admin.action(description="Cancel selected executions", permissions=["control"])
    def cancel_executions(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, executions.cancel, "cancelled")

    @admin.action(description="Resume selected executions", permissions=["control"])
    def resume_executions(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, executions.resume, "resumed")

    def _apply(self, request, queryset, action, done: str) -> None:
        succeeded = 0
        for execution in queryset:
            try:
                action(execution.id)
                succeeded += 1
            except DurableError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if succeeded:
            self.message_user(request, f"{succeeded} execution(s) {done}.", messages.SUCCESS)

    def has_control_permission(self, request) -> bool:
        """Who may cancel and resume. The rows themselves are never edited in the admin:
        a form save would overwrite what a worker commits meanwhile."""
        return request.user.has_perm("django_durable.change_workflowexecution")


def readable_json(value) -> str:
    """JSON a person can read, folded away when long: typed values show as what they
    are (`Decimal(12.50)`, `datetime(2026-12-01T09:00:00+00:00)`), escaped."""

    def typed(item):
        text = item.isoformat() if hasattr(item, "isoformat") else str(item)
        return f"{type(item).__name__}({text})"

    text = json.dumps(value, indent=2, ensure_ascii=False, default=typed)
    keys = len(value) if isinstance(value, dict) else 0
    opened = " open" if len(text) < 2000 else ""
    return format_html(
        '<details class="durable-json"{}><summary>{} key(s)</summary><pre>{}</pre></details>',
        opened,
        keys,
        text,
    )


ID_PREFIX_MIN = 4
HEX = frozenset("0123456789abcdef")
STATUS_COLOURS = {
    "pending": "#6c757d",
    "running": "#0d6efd",
    "waiting": "#b58900",
    "completed": "#198754",
    "failed": "#dc3545",
    "cancelled": "#495057",
    "compensating": "#fd7e14",
    "compensated": "#6f42c1",
    "compensation_failed": "#a4161a",
}

TIMELINE_COLUMNS = ("Step", "Unit", "Attempt", "Status", "Started", "Duration (ms)", "Error")


def _timeline_row(row: StepExecution) -> str:
    if row.unit is None:
        unit = ""
    else:
        kind, index = row.unit
        unit = f"item {index}" if kind == ExecutionKind.ITEM else "branch"
    step = row.step_name
    if row.is_compensation:
        step = f"{row.step_name} (undoes {row.compensation_for})"
    error = ""
    if row.error:
        error = f"{row.error.get('type', '')}: {row.error.get('message', '')}"
    child = ""
    if row.child_id is not None:
        url = reverse("admin:django_durable_workflowexecution_change", args=[row.child_id])
        child = format_html(' <a class="child" href="{}">child {}</a>', url, str(row.child_id)[:8])
    return format_html(
        '<tr class="{}"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
        "<td>{}</td></tr>",
        "compensation" if row.is_compensation else unit.split(" ")[0] or "own",
        step,
        child,
        unit,
        row.attempt,
        row.status,
        row.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        "" if row.duration_ms is None else row.duration_ms,
        error,
    )


@admin.register(PendingInput)
class PendingInputAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The inbox: what people are asked, pending first and oldest first, each answered
    on a form of its type (`admin_forms`) through `inputs.answer`."""

    list_display = (
        "input_name",
        "workflow",
        "prompt_text",
        "input_type",
        "status",
        "created_at",
        "timeout_at",
        "answer_link",
    )
    list_filter = ("status", "input_type")
    search_fields = ("input_name", "execution__id", "execution__workflow_name")
    readonly_fields = [field.name for field in PendingInput._meta.fields]
    list_select_related = ("execution",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        pending_first = Case(When(status=InputStatus.PENDING, then=0), default=1)
        return super().get_queryset(request).order_by(pending_first, "created_at", "id")

    @admin.display(description="workflow", ordering="execution__workflow_name")
    def workflow(self, obj: PendingInput) -> str:
        return obj.execution.workflow_name

    @admin.display(description="prompt")
    def prompt_text(self, obj: PendingInput) -> str:
        return Truncator(obj.prompt).chars(80)

    @admin.display(description="")
    def answer_link(self, obj: PendingInput) -> str:
        if obj.status != InputStatus.PENDING:
            return ""
        url = reverse("admin:django_durable_pendinginput_answer", args=[obj.pk])
        return format_html('<a class="button" href="{}">Answer</a>', url)

    def get_urls(self):
        answer = self.admin_site.admin_view(self.answer_view)
        return [
            path("<int:pk>/answer/", answer, name="django_durable_pendinginput_answer"),
            *super().get_urls(),
        ]

    def answer_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Show the input's form; a valid answer goes through `inputs.answer`, and what
        it refuses (a wrong value, an input answered meanwhile) shows on the form."""
        if not request.user.has_perm("django_durable.respond_pendinginput"):
            raise PermissionDenied
        pending = get_object_or_404(PendingInput.objects.select_related("execution"), pk=pk)
        form = admin_forms.form_for(pending, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                inputs.answer(pending.pk, form.value(), responded_by=request.user.get_username())
            except DurableError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"Answered {pending.input_name!r}.", messages.SUCCESS)
                return redirect("admin:django_durable_pendinginput_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Answer {pending.input_name}",
            "pending": pending,
            "form": form,
            "metadata": json.dumps(pending.metadata, indent=2, default=str)
            if pending.metadata
            else "",
        }
        return TemplateResponse(request, "admin/django_durable/pendinginput/answer.html", context)


@admin.register(Event)
class EventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("name", "execution", "received_at", "consumed_at")
    list_filter = ("name",)
    search_fields = ("name", "execution__id")
    readonly_fields = [field.name for field in Event._meta.fields]


@admin.register(Worker)
class WorkerAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("name", "host", "pid", "queues", "concurrency", "started_at", "last_seen_at")
    readonly_fields = [field.name for field in Worker._meta.fields]


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Schedules, with enable and disable as actions (which go through the schedules
    API, so the next due time and the failure count follow)."""

    list_display = (
        "name",
        "workflow_name",
        "cron",
        "timezone",
        "enabled",
        "next_run_at",
        "last_run_at",
        "consecutive_failures",
    )
    list_filter = ("enabled", "workflow_name")
    search_fields = ("name", "workflow_name")
    readonly_fields = [field.name for field in Schedule._meta.fields]
    actions = ["enable", "disable", "trigger"]

    @admin.action(description="Enable selected schedules", permissions=["control"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.enable_schedule(schedule.name)
        self.message_user(request, f"{queryset.count()} schedule(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable selected schedules", permissions=["control"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.disable_schedule(schedule.name)
        self.message_user(request, f"{queryset.count()} schedule(s) disabled.", messages.SUCCESS)

    @admin.action(description="Run selected schedules now", permissions=["control"])
    def trigger(self, request: HttpRequest, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.trigger_schedule(schedule.name)
        self.message_user(request, f"{queryset.count()} run(s) started.", messages.SUCCESS)

    def has_control_permission(self, request) -> bool:
        return request.user.has_perm("django_durable.change_schedule")
