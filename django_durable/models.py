"""Executions and their step attempts: the durable state of every workflow."""

import uuid

from django.db import models
from django.db.models import Q

from . import codec


class DurableJSONField(models.JSONField):
    """A JSONField whose datetime/date/Decimal/UUID values come back with their types."""

    def from_db_value(self, value, expression, connection):
        return codec.decode(super().from_db_value(value, expression, connection))

    def get_prep_value(self, value):
        return super().get_prep_value(codec.encode(value))


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


ACTIVE_STATUSES = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING)
CLAIMABLE_STATUSES = (ExecutionStatus.PENDING, ExecutionStatus.WAITING)


class StepStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING = "waiting"
    SKIPPED = "skipped"


class WorkflowExecutionQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def runnable(self, now, queues=None):
        """Executions a worker may claim now: due, and not held by anyone."""
        qs = self.filter(status__in=CLAIMABLE_STATUSES, run_at__lte=now)
        return qs if queues is None else qs.filter(run_queue__in=queues)

    def in_claim_order(self):
        return self.order_by("-priority", "run_at")


class WorkflowExecution(models.Model):
    """One run of a workflow.

    The row is also the unit of work that workers claim: `run_at` says when it is next
    runnable, `run_queue` from which queue (the current step's own queue, else `queue`),
    and `locked_by`/`locked_until`/`run_token` form its lease. `run_token` is
    the id of the step attempt allowed to write; every write from a worker is fenced on
    it, so an attempt whose lease was lost can never record anything.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow_name = models.CharField(max_length=200)
    workflow_version = models.CharField(max_length=50, default="1")
    status = models.CharField(
        max_length=32, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING
    )
    queue = models.CharField(max_length=100, default="default")
    run_queue = models.CharField(max_length=100, default="default")
    priority = models.IntegerField(default=0)
    input = DurableJSONField(default=dict, blank=True)
    context = DurableJSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)
    current_step = models.CharField(max_length=200, null=True, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    compensation_results = models.JSONField(default=list, blank=True)
    cancel_reason = models.TextField(null=True, blank=True)
    locked_by = models.CharField(max_length=255, null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    run_token = models.UUIDField(null=True, blank=True)

    objects = WorkflowExecutionQuerySet.as_manager()

    class Meta:
        db_table = "durable_execution"
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["run_queue", "-priority", "run_at"],
                condition=Q(status__in=CLAIMABLE_STATUSES),
                name="durable_exec_runnable",
            ),
            models.Index(
                fields=["locked_until"],
                condition=Q(status=ExecutionStatus.RUNNING),
                name="durable_exec_lease",
            ),
            models.Index(
                fields=["deadline"],
                condition=Q(status__in=ACTIVE_STATUSES),
                name="durable_exec_deadline",
            ),
            models.Index(fields=["-created_at"], name="durable_exec_created"),
            models.Index(fields=["status", "-created_at"], name="durable_exec_status"),
            models.Index(fields=["workflow_name", "-created_at"], name="durable_exec_workflow"),
            models.Index(fields=["queue", "-created_at"], name="durable_exec_queue"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow_name", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="durable_exec_idempotency",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_name} {str(self.id)[:8]} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class StepExecution(models.Model):
    """One attempt (or one run up to a wait) of one step of an execution."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    execution = models.ForeignKey(
        WorkflowExecution, on_delete=models.CASCADE, related_name="step_executions"
    )
    step_name = models.CharField(max_length=200)
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=StepStatus.choices)
    output = DurableJSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    logs = models.JSONField(default=list, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    is_compensation = models.BooleanField(default=False)
    compensation_for = models.CharField(max_length=200, null=True, blank=True)

    class Meta:
        db_table = "durable_step"
        ordering = ["started_at"]
        indexes = [
            models.Index(fields=["execution", "started_at"], name="durable_step_execution"),
            models.Index(
                fields=["status", "-started_at"],
                condition=Q(status="failed"),
                name="durable_step_failed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step_name} #{self.attempt} ({self.status})"


class Worker(models.Model):
    """A live `durable_worker` process, so the admin and `durable_status` can show it.

    Each worker refreshes `last_seen_at` on its heartbeat and deletes its row on a clean
    exit; rows of workers that vanished are removed by the others' heartbeats.
    """

    name = models.CharField(max_length=255, unique=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    concurrency = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "durable_worker"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(self.queues)})"
