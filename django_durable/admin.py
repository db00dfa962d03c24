"""The Django admin as a window onto executions: what ran, what waits, who works.

Rows are never edited here: state changes go through the engine's API (the cancel and
resume actions, answering a pending input, enabling a schedule).
"""

import json
import uuid
from zoneinfo import ZoneInfo

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Q, QuerySet, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince

from . import admin_forms, clock, events, executions, forks, inputs, registry, schedules
from . import diagram as diagrams
from .colours import STATUS_COLOURS
from .errors import DurableError
from .graphs import definition as graph_definitions
from .models import (
    ACTIVE_STATUSES,
    MEMBER_KINDS,
    Event,
    ExecutionKind,
    ExecutionStatus,
    GraphValue,
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
    """Workflows and graphs by default: parallel branches and foreach items (thousands,
    for a big foreach) are shown on their workflow's page, and listed here only on
    request."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [*ExecutionKind.choices[1:], ("all", "All rows")]

    def choices(self, changelist):
        for lookup, title in [(None, "Workflows and graphs"), *self.lookup_choices]:
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
        if self.value():
            return queryset.filter(kind=self.value())
        return queryset.exclude(kind__in=MEMBER_KINDS)


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
        return _status_badge(obj.status, obj.get_status_display())

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

    class Media:
        css = {"all": ["django_durable/admin.css"]}

    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("workflow_name", "workflow_version", "kind"),
                    ("status_badge", "current_step", "attempt"),
                    ("queue", "run_queue", "priority"),
                    ("created_at", "started_at", "completed_at", "duration"),
                    ("parent", "schedule", "idempotency_key"),
                    "error_text",
                    "cancel_reason",
                    "controls",
                ]
            },
        ),
        ("Diagram", {"fields": ["diagram"]}),
        ("Steps", {"fields": ["timeline", "compensation_table"]}),
        ("Input and context", {"fields": ["input_json", "context_json"]}),
        (
            "Scheduling and lease",
            {
                "classes": ["collapse"],
                "fields": [
                    ("run_at", "ready", "scheduled_at", "deadline"),
                    ("locked_by", "locked_until", "run_token"),
                    ("step_seq", "recoveries", "item_index", "parent_step_seq"),
                    "id",
                ],
            },
        ),
    ]
    readonly_fields = [
        "controls",
        "timeline",
        "diagram",
        "graph_values",
        "compensation_table",
        "error_text",
        "status_badge",
        "duration",
        "input_json",
        "context_json",
        *[
            field.name
            for field in WorkflowExecution._meta.fields
            if field.name not in ("input", "context")
        ],
    ]

    @admin.display(description="Error")
    def error_text(self, obj: WorkflowExecution) -> str:
        return _error_html(obj.error) or "-"

    @admin.display(description="Compensations")
    def compensation_table(self, obj: WorkflowExecution) -> str:
        """What each compensation did, in the order they ran."""
        if not obj.compensation_results:
            return "-"
        rows = [
            (
                entry["step"],
                entry["compensation"],
                entry["result"]["status"],
                _error_html(entry["result"].get("error")),
            )
            for entry in obj.compensation_results
        ]
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            '<table class="durable-compensations"><thead><tr><th>Undid</th>'
            "<th>Compensation</th><th>Result</th><th>Error</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            body,
        )

    def get_fieldsets(self, request: HttpRequest, obj: WorkflowExecution | None = None):
        """A graph execution shows its values where a workflow shows its diagram."""
        if obj is None or obj.kind != ExecutionKind.GRAPH:
            return self.fieldsets
        return [
            ("Values", {"fields": ["graph_values"]}) if title == "Diagram" else (title, options)
            for title, options in self.fieldsets
        ]

    @admin.display(description="Values")
    def graph_values(self, obj: WorkflowExecution) -> str:
        """Every node of a graph execution: its value, revision, when it was set, and
        the last error of its compute."""
        rows = {row.node: row for row in GraphValue.objects.filter(execution=obj)}
        try:
            names = list(graph_definitions.get(obj.workflow_name, obj.workflow_version).nodes)
        except DurableError:
            names = sorted(rows)
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            [_value_row(name, rows.get(name)) for name in names],
        )
        return format_html(
            '<table class="durable-values"><thead><tr><th>Node</th><th>Value</th>'
            "<th>Revision</th><th>Set at</th><th>Error</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

    @admin.display(description="Diagram")
    def diagram(self, obj: WorkflowExecution) -> str:
        """The workflow's graph, each node coloured by how it went in this execution."""
        try:
            definition = registry.get(obj.workflow_name)
        except DurableError as exc:
            return format_html('<p class="help">No diagram: {}</p>', exc)
        return mark_safe(diagrams.svg(diagrams.model(definition, obj)))

    @admin.display(description="Input")
    def input_json(self, obj: WorkflowExecution) -> str:
        return readable_json(obj.input)

    @admin.display(description="Context")
    def context_json(self, obj: WorkflowExecution) -> str:
        return readable_json(obj.context)

    @admin.display(description="Actions")
    def controls(self, obj: WorkflowExecution) -> str:
        """Send an event to, or cancel, an execution that is still going; resume a
        failed or cancelled workflow."""
        if obj.status in ACTIVE_STATUSES:
            offered = (("send_event", "Send event"), ("cancel", "Cancel…"))
        elif obj.status in RESUMABLE and obj.kind not in MEMBER_KINDS:
            offered = (("resume", "Resume…"),)
        else:
            return "-"
        links = [
            (reverse(f"admin:django_durable_workflowexecution_{name}", args=[obj.pk]), label)
            for name, label in offered
        ]
        return format_html_join(" ", '<a class="button" href="{}">{}</a>', links)

    def get_urls(self):
        views = [
            ("send-event", "send_event", self.send_event_view),
            ("cancel", "cancel", self.cancel_view),
            ("resume", "resume", self.resume_view),
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

    def resume_view(self, request: HttpRequest, pk) -> HttpResponse:
        def resume(execution, form):
            return f"Execution {executions.resume(execution.pk).status}."

        return self._control(request, pk, admin_forms.ResumeForm, resume, "Resume")

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
TIMELINE_COLUMNS = (
    "Step",
    "Unit",
    "Attempt",
    "Status",
    "Started",
    "Duration (ms)",
    "Error",
    "Logs",
)
RESUMABLE = (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)


def _timeline_row(row: StepExecution) -> str:
    if row.unit is None:
        unit = ""
    else:
        kind, index = row.unit
        unit = f"item {index}" if kind == ExecutionKind.ITEM else "branch"
    step = row.step_name
    if row.is_compensation:
        step = f"{row.step_name} (undoes {row.compensation_for})"
    child = ""
    if row.child_id is not None:
        url = reverse("admin:django_durable_workflowexecution_change", args=[row.child_id])
        child = format_html(' <a class="child" href="{}">child {}</a>', url, str(row.child_id)[:8])
    return format_html(
        '<tr class="{}"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
        "<td>{}</td><td>{}</td></tr>",
        "compensation" if row.is_compensation else unit.split(" ")[0] or "own",
        step,
        child,
        unit,
        row.attempt,
        _status_badge(row.status, row.get_status_display()),
        row.started_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "" if row.duration_ms is None else row.duration_ms,
        _error_html(row.error),
        _logs_html(row.logs),
    )


def _value_row(name: str, row: GraphValue | None) -> tuple:
    if row is None or not row.is_set:
        value = mark_safe('<span class="help">not set</span>')
        revision, set_at = "0", ""
    else:
        value = readable_json(row.value)
        revision, set_at = str(row.revision), row.set_at.strftime("%Y-%m-%d %H:%M:%S")
    return (name, value, revision, set_at, _error_html(row.error if row else None))


def _error_html(error: dict | None) -> str:
    """An error's type and message, its traceback folded under it."""
    if not error:
        return ""
    summary = f"{error.get('type', '')}: {error.get('message', '')}"
    if not error.get("traceback"):
        return format_html('<span class="durable-error">{}</span>', summary)
    return format_html(
        '<details class="durable-error"><summary>{}</summary><pre>{}</pre></details>',
        summary,
        error["traceback"],
    )


def _logs_html(logs: list | None) -> str:
    """What the attempt logged and printed, folded: one line per entry."""
    if not logs:
        return ""
    lines = format_html_join(
        "\n",
        '<span class="level-{}">{} {:<7} {}</span>',
        [
            (entry["level"].lower(), entry["timestamp"][11:23], entry["level"], entry["message"])
            for entry in logs
        ],
    )
    return format_html(
        '<details class="durable-logs"><summary>{} line(s)</summary><pre>{}</pre></details>',
        len(logs),
        lines,
    )


def _status_badge(status: str, label: str) -> str:
    return format_html(
        '<span class="durable-status" style="color:#fff;background:{};padding:1px 6px;'
        'border-radius:8px">{}</span>',
        STATUS_COLOURS.get(status, "#666"),
        label,
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
class ScheduleAdmin(admin.ModelAdmin):
    """Schedules, edited and switched through the schedules API (so the next due time
    and the failure count follow): the form checks the cron and the zone, and the page
    previews the next five runs. A declared schedule's cron, zone, input and queue come
    from its code; only `enabled` is people's."""

    form = admin_forms.ScheduleForm
    list_display = (
        "name",
        "workflow_name",
        "cron",
        "timezone",
        "enabled",
        "upcoming_runs",
        "last_run_at",
        "consecutive_failures",
    )
    list_filter = ("enabled", "workflow_name", "declared")
    search_fields = ("name", "workflow_name")
    actions = ["enable", "disable", "trigger"]
    STATE = (
        "declared",
        "next_runs",
        "next_run_at",
        "last_run_at",
        "consecutive_failures",
        "last_error",
        "auto_disabled_at",
        "created_at",
        "updated_at",
    )

    def get_fields(self, request: HttpRequest, obj: Schedule | None = None) -> list[str]:
        editable = ["name", "workflow_name", "cron", "timezone", "input", "queue", "enabled"]
        return editable if obj is None else [*editable, *self.STATE]

    def get_readonly_fields(self, request: HttpRequest, obj: Schedule | None = None):
        if obj is None:
            return ()
        fixed = ("name", "workflow_name", "cron", "timezone", "input", "queue")
        return (*self.STATE, "name", *(fixed if obj.declared else ()))

    def save_model(self, request: HttpRequest, obj: Schedule, form, change: bool) -> None:
        data = form.cleaned_data
        if not change:
            saved = schedules.create_schedule(
                data["name"],
                data["workflow_name"],
                data["cron"],
                timezone=data["timezone"],
                input=data["input"],
                queue=data["queue"] or None,
                enabled=data["enabled"],
            )
        else:
            changes = {name: data[name] for name in form.changed_data if name in data}
            if "workflow_name" in changes:
                changes["workflow"] = changes.pop("workflow_name")
            if "queue" in changes:
                changes["queue"] = changes["queue"] or None
            saved = schedules.update_schedule(obj.name, **changes)
        obj.pk, obj.next_run_at = saved.pk, saved.next_run_at

    def has_delete_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        if obj is not None and obj.declared:
            return False  # the code declares it: it would come back at the next start
        return super().has_delete_permission(request, obj)

    @admin.display(description="next runs")
    def upcoming_runs(self, obj: Schedule) -> str:
        if not obj.enabled or obj.next_run_at is None:
            return "disabled"
        return _times(schedules.upcoming(obj.cron, obj.timezone, 3), obj.timezone)

    @admin.display(description="Next five runs")
    def next_runs(self, obj: Schedule) -> str:
        if not obj.enabled:
            return "- (disabled)"
        return _times(schedules.upcoming(obj.cron, obj.timezone, 5), obj.timezone)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.enable_schedule(schedule.name)
        self.message_user(request, f"{queryset.count()} schedule(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.disable_schedule(schedule.name)
        self.message_user(request, f"{queryset.count()} schedule(s) disabled.", messages.SUCCESS)

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def trigger(self, request: HttpRequest, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.trigger_schedule(schedule.name)
        self.message_user(request, f"{queryset.count()} run(s) started.", messages.SUCCESS)


def _times(times: list, timezone: str) -> str:
    """Times as the schedule's zone reads them, one per line."""
    zone = ZoneInfo(timezone)
    return format_html_join(
        "",
        "<div>{}</div>",
        [(moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),) for moment in times],
    )


from . import admin_overview  # noqa: E402,F401  (registers the overview page)
