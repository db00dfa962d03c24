from django.contrib import admin

from .models import StepExecution, WorkflowExecution


class StepExecutionInline(admin.TabularInline):
    model = StepExecution
    extra = 0
    can_delete = False
    fields = ("step_name", "attempt", "status", "started_at", "duration_ms", "worker", "error")
    readonly_fields = fields
    ordering = ("started_at",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "workflow_name",
        "status",
        "current_step",
        "queue",
        "priority",
        "created_at",
    )
    list_filter = ("status", "workflow_name", "queue", "created_at")
    search_fields = ("id", "workflow_name", "idempotency_key")
    date_hierarchy = "created_at"
    inlines = [StepExecutionInline]
    readonly_fields = [field.name for field in WorkflowExecution._meta.fields]

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: WorkflowExecution) -> str:
        return str(obj.id)[:8]

    def has_add_permission(self, request) -> bool:
        return False
