"""Executions and their step attempts: the durable state of every workflow."""

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from . import codec, ids
from .errors import ExecutionNotFound
from .value_keys import GraphKey


class DurableJSONField(models.JSONField):
    """A JSONField whose datetime/date/Decimal/UUID values come back with their types."""

    def from_db_value(self, value, expression, connection):
        return codec.decode(super().from_db_value(value, expression, connection))

    def get_prep_value(self, value):
        if isinstance(value, codec.Encoded):
            return super().get_prep_value(value.value)
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


_S = ExecutionStatus

# The status machine: every status an execution may move to from each status. The door
# (`executions.transition`/`finish`) checks every change against it; the claim and the
# release follow CLAIMED_AS and RELEASED_AS. Drawn in docs/how-it-works.md.
TRANSITIONS: dict[str, frozenset[str]] = {
    _S.PENDING: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED, _S.COMPENSATING}),
    _S.RUNNING: frozenset(
        {_S.RUNNING, _S.PENDING, _S.WAITING, _S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.COMPENSATING}
    ),
    _S.WAITING: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED, _S.COMPENSATING}),
    _S.COMPENSATING: frozenset(
        {_S.COMPENSATING, _S.COMPENSATED, _S.COMPENSATION_FAILED, _S.CANCELLED}
    ),
    _S.FAILED: frozenset({_S.PENDING}),
    _S.CANCELLED: frozenset({_S.PENDING}),
    _S.COMPLETED: frozenset(),
    _S.COMPENSATED: frozenset(),
    _S.COMPENSATION_FAILED: frozenset(),
}
# A claim leases a runnable execution and keeps its phase: work forward runs as
# `running`, undoing work stays `compensating`. A release gives it back unheld.
CLAIMED_AS = {_S.PENDING: _S.RUNNING, _S.WAITING: _S.RUNNING, _S.COMPENSATING: _S.COMPENSATING}
RELEASED_AS = {_S.RUNNING: _S.PENDING, _S.COMPENSATING: _S.COMPENSATING}
CLAIMABLE_STATUSES = tuple(CLAIMED_AS)
ACTIVE_STATUSES = (_S.PENDING, _S.RUNNING, _S.WAITING, _S.COMPENSATING)
# Still working towards completion: the workflow timeout applies.
FORWARD_STATUSES = (_S.PENDING, _S.RUNNING, _S.WAITING)
FINAL_STATUSES = (_S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.COMPENSATED, _S.COMPENSATION_FAILED)


class ExecutionKind(models.TextChoices):
    """What a row of `durable_execution` runs: a workflow (also a child workflow), one
    parallel branch or foreach item of its parent, which is addressed through it, or a
    graph of durable values (`graphs`)."""

    WORKFLOW = "workflow"
    BRANCH = "branch"
    ITEM = "item"
    GRAPH = "graph"


# The kinds that are parts of their parent (its block's members), not executions of
# their own.
MEMBER_KINDS = (ExecutionKind.BRANCH, ExecutionKind.ITEM)


class StepStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING = "waiting"
    RESUMED = "resumed"  # ran up to a wait, and the step has since run again
    SKIPPED = "skipped"


class WorkflowExecutionQuerySet(models.QuerySet):
    """Query vocabulary, each method named after what it asks and served by one index."""

    def runnable(self, queues=None):
        """Executions a worker may claim now (durable_exec_ready): only these are in it.
        Rechecked against status and lease, which a row marked ready by mistake (by a
        process older than the flag) could contradict; paused queues are left out."""
        qs = self.filter(UNHELD_CLAIMABLE, ready=True).exclude(
            run_queue__in=models.Subquery(PausedQueue.objects.values("name"))
        )
        return qs if queues is None else qs.filter(run_queue__in=queues)

    def timers_due(self, now):
        """Executions whose time came but that are not marked ready yet
        (durable_exec_timer, which parked executions without a time are not in)."""
        return self.filter(TIMER_SET, run_at__lte=now)

    def active(self):
        """Executions not finished yet (pending, running, waiting, compensating)."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def overdue(self, now):
        """Executions still going forward past their workflow timeout (durable_exec_deadline)."""
        return self.filter(status__in=FORWARD_STATUSES, deadline__lte=now)

    def lease_lapsed(self, now):
        """Executions whose holder stopped renewing its lease (durable_exec_lease)."""
        return self.filter(locked_until__lt=now)

    def in_claim_order(self):
        return self.order_by("-priority", "run_at")

    def by_id(self, execution_id) -> "WorkflowExecution":
        """Get by id (UUID or its text); anything that matches nothing is ExecutionNotFound."""
        try:
            return self.get(id=execution_id)
        except (self.model.DoesNotExist, ValidationError, ValueError, TypeError):
            raise ExecutionNotFound(f"No execution with id {execution_id!r}.") from None


UNHELD_CLAIMABLE = Q(status__in=CLAIMABLE_STATUSES, locked_by__isnull=True)
# Runnable later: waiting for its `run_at` (a retry, a sleep, a wait's timeout, a start
# scheduled ahead). Timers turn these `ready` when their time comes.
TIMER_SET = UNHELD_CLAIMABLE & Q(ready=False, run_at__isnull=False)


class WorkflowExecution(models.Model):
    """One run of a workflow.

    The row is also the unit of work that workers claim: `ready` says it is runnable
    now, `run_at` when it is next runnable (timers set `ready` when that time comes) and
    `run_queue` from which queue (the current step's own queue, else `queue`). Claims
    read only ready rows, so parked executions cost them nothing. `step_seq` counts the
    steps entered, so the waits of one visit to a step
    stay apart from those of a later visit. `locked_by`/`locked_until`/`run_token` form
    the lease; `run_token` is the id of the step attempt allowed to write, and every
    write from a worker is fenced on it, so an attempt whose lease was lost can never
    record anything.
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
    step_seq = models.PositiveIntegerField(default=1)
    recoveries = models.PositiveIntegerField(default=0)
    kind = models.CharField(
        max_length=16, choices=ExecutionKind.choices, default=ExecutionKind.WORKFLOW
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    # The execution that events and inputs for this row are addressed to: itself for a
    # workflow, its workflow's for a branch or item. Rows go with their parent (CASCADE
    # above); durable_exec_root finds a workflow's whole tree (its page, its
    # compensations) without reading the table.
    root = models.ForeignKey("self", on_delete=models.DO_NOTHING, related_name="+", db_index=False)
    item_index = models.PositiveIntegerField(null=True, blank=True)
    # For a branch or item: the parent's step visit that forked it, so a block reached
    # again (a loop) joins only its own members.
    parent_step_seq = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    # A database default too, so rows written by code that predates the column (an old
    # process during a deploy) are not ready; the timers make them ready when due.
    ready = models.BooleanField(default=False, db_default=False)
    deadline = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    compensation_results = models.JSONField(default=list, blank=True)
    # What compensating has to do, newest completed step first; `compensation_results`
    # grows as each is done (see `compensations`).
    compensation_plan = models.JSONField(default=list, blank=True)
    cancel_reason = models.TextField(null=True, blank=True)
    locked_by = models.CharField(max_length=255, null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    run_token = models.UUIDField(null=True, blank=True)
    # The schedule that started it, if one did (its runs' outcomes are counted there).
    schedule = models.ForeignKey(
        "Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="executions",
        db_index=False,
    )

    objects = WorkflowExecutionQuerySet.as_manager()

    class Meta:
        db_table = "durable_execution"
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["run_queue", "-priority", "run_at"],
                condition=Q(ready=True),
                name="durable_exec_ready",
            ),
            models.Index(fields=["run_at"], condition=TIMER_SET, name="durable_exec_timer"),
            models.Index(
                fields=["locked_until"],
                condition=Q(locked_until__isnull=False),
                name="durable_exec_lease",
            ),
            models.Index(
                fields=["deadline"],
                condition=Q(status__in=FORWARD_STATUSES, deadline__isnull=False),
                name="durable_exec_deadline",
            ),
            models.Index(
                fields=["parent", "parent_step_seq", "item_index"],
                condition=Q(status__in=ACTIVE_STATUSES, parent__isnull=False),
                name="durable_exec_open_members",
            ),
            models.Index(fields=["root"], name="durable_exec_root"),
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

    def save(self, *args, **kwargs):
        if self.root_id is None:
            self.root_id = self.id
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.workflow_name} {str(self.id)[:8]} ({self.status})"


class StepExecution(models.Model):
    """One attempt (or one run up to a wait) of one step of an execution."""

    id = models.UUIDField(primary_key=True, default=ids.time_ordered, editable=False)
    # Indexed by durable_step_execution (execution, started_at): no index of its own.
    execution = models.ForeignKey(
        WorkflowExecution, on_delete=models.CASCADE, related_name="step_executions", db_index=False
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
    # The child workflow this attempt started (`call_workflow`, `start_workflow`).
    child = models.ForeignKey(
        WorkflowExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )

    class Meta:
        db_table = "durable_step"
        ordering = ["started_at"]
        indexes = [
            models.Index(fields=["execution", "started_at"], name="durable_step_execution"),
            # Deleting a child execution (cleanup) finds the attempt that started it.
            models.Index(
                fields=["child"], condition=Q(child__isnull=False), name="durable_step_child"
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


class WaitStatus(models.TextChoices):
    WAITING = "waiting"
    RESOLVED = "resolved"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # its execution ended first
    WITHDRAWN = "withdrawn"  # `cancel_wait`: the step's wait call raises WaitCancelled


class Wait(models.Model):
    """A sleep or an event wait reached by a step, and how it ended.

    Keyed by the step visit (`step_seq`) and `key` (`sleep:0`, `event:paid`,
    `any:paid,failed`...), so a step that runs again from its top finds the waits it
    already passed and gets the same values back.
    """

    class Kind(models.TextChoices):
        SLEEP = "sleep"
        EVENT = "event"
        ANY = "any"
        ALL = "all"
        CHILD = "child"  # a child workflow a step started (`result` holds its id)

    # Indexed by durable_wait_unique (execution, step_seq, key): no index of its own.
    execution = models.ForeignKey(
        WorkflowExecution, on_delete=models.CASCADE, related_name="waits", db_index=False
    )
    # Where events for this wait are sent: its execution's root (see WorkflowExecution).
    root = models.ForeignKey(
        WorkflowExecution, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    step_seq = models.PositiveIntegerField()
    step_name = models.CharField(max_length=200)
    key = models.CharField(max_length=500)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    event_names = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=WaitStatus.choices, default="waiting")
    wake_at = models.DateTimeField(null=True, blank=True)
    result = DurableJSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "durable_wait"
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "step_seq", "key"], name="durable_wait_unique"
            ),
        ]
        indexes = [
            models.Index(
                fields=["execution"], condition=Q(status="waiting"), name="durable_wait_open"
            ),
            models.Index(
                fields=["root", "created_at"],
                condition=Q(status="waiting"),
                name="durable_wait_open_root",
            ),
            # Deleting an execution (cleanup) checks the rows that point at it as root.
            models.Index(fields=["root"], name="durable_wait_root"),
        ]

    def __str__(self) -> str:
        return f"{self.step_name}: {self.key} ({self.status})"


class Event(models.Model):
    """An event sent to an execution, kept until a wait consumes it (in arrival order)."""

    id = models.BigAutoField(primary_key=True)
    execution = models.ForeignKey(
        WorkflowExecution, on_delete=models.CASCADE, related_name="events"
    )
    name = models.CharField(max_length=200)
    payload = DurableJSONField(null=True, blank=True)
    received_at = models.DateTimeField()
    consumed_by = models.ForeignKey(
        Wait, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "durable_event"
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["execution", "name", "id"],
                condition=Q(consumed_at__isnull=True),
                name="durable_event_unconsumed",
            ),
        ]

    def __str__(self) -> str:
        state = "consumed" if self.consumed_at else "waiting to be consumed"
        return f"{self.name} ({state})"


class InputType(models.TextChoices):
    FREE_TEXT = "free_text"
    APPROVAL = "approval"
    SINGLE_CHOICE = "single_choice"
    MULTI_CHOICE = "multi_choice"
    FORM = "form"


class InputStatus(models.TextChoices):
    PENDING = "pending"
    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    WITHDRAWN = "withdrawn"  # `cancel_wait` (`response` holds the reason)


class PendingInput(models.Model):
    """A question a step asked a person, and (once given) the answer."""

    # Indexed by durable_input_unique (execution, step_seq, input_name): none of its own.
    execution = models.ForeignKey(
        WorkflowExecution, on_delete=models.CASCADE, related_name="pending_inputs", db_index=False
    )
    # Where answers for this input are sent: its execution's root (see WorkflowExecution).
    root = models.ForeignKey(
        WorkflowExecution, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    step_seq = models.PositiveIntegerField()
    step_name = models.CharField(max_length=200)
    input_name = models.CharField(max_length=200)
    input_type = models.CharField(max_length=16, choices=InputType.choices)
    prompt = models.TextField(blank=True, default="")
    metadata = DurableJSONField(default=dict, blank=True)
    fields = models.JSONField(default=list, blank=True)
    choices = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=16, choices=InputStatus.choices, default=InputStatus.PENDING
    )
    response = DurableJSONField(null=True, blank=True)
    responded_by = models.CharField(max_length=255, null=True, blank=True)
    responded_at = models.DateTimeField(null=True, blank=True)
    timeout_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        db_table = "durable_pending_input"
        ordering = ["created_at"]
        permissions = [("respond_pendinginput", "Can respond to pending inputs")]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "step_seq", "input_name"], name="durable_input_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="durable_input_status"),
            models.Index(
                fields=["timeout_at"],
                condition=Q(status="pending"),
                name="durable_input_timeout",
            ),
            models.Index(
                fields=["root", "input_name", "created_at"],
                condition=Q(status="pending"),
                name="durable_input_open_root",
            ),
            models.Index(fields=["root"], name="durable_input_root"),
        ]

    def __str__(self) -> str:
        return f"{self.input_name} ({self.get_input_type_display()}, {self.status})"


class Schedule(models.Model):
    """A workflow started on a cron schedule, read in a time zone.

    Declared ones (`workflow(..., schedule=cron(...))`) follow their code when workers
    start; people may enable or disable any of them. `next_run_at` is when it fires
    next; each due time starts one execution with an idempotency key made of the
    schedule and that time, so it fires once however many workers see it.
    """

    name = models.CharField(max_length=200, unique=True)
    workflow_name = models.CharField(max_length=200)
    cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    input = DurableJSONField(default=dict, blank=True)
    queue = models.CharField(max_length=100, null=True, blank=True)
    enabled = models.BooleanField(default=True)
    declared = models.BooleanField(default=False)  # comes from a workflow's schedule=
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.JSONField(null=True, blank=True)
    auto_disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "durable_schedule"
        ordering = ["name"]
        indexes = [
            models.Index(
                fields=["next_run_at"], condition=Q(enabled=True), name="durable_schedule_due"
            ),
        ]

    def __str__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"{self.name} ({self.cron} {self.timezone}, {state})"


class GraphValue(models.Model):
    """One node's value in a graph execution (`graphs`): set from outside (an input) or
    computed by a worker. `revision` counts the node's changes and never goes back, so
    a compute knows it is stale when an upstream revision moved past the one it was
    computed from (`computed_from`); `is_set` says whether it holds a value now."""

    execution = models.ForeignKey(
        WorkflowExecution, on_delete=models.CASCADE, related_name="graph_values", db_index=False
    )
    node = models.CharField(max_length=200)
    value = DurableJSONField(null=True, blank=True)
    is_set = models.BooleanField(default=False)
    revision = models.PositiveIntegerField(default=0)
    set_at = models.DateTimeField(null=True, blank=True)
    computed_from = models.JSONField(null=True, blank=True)  # None: never computed
    error = models.JSONField(null=True, blank=True)  # its compute's last failure, if any
    # A schedule node's next time: it is set (again) when that time comes.
    due_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "durable_graph_value"
        indexes = [
            # A bounded, ordered key per node and value: `graphs.list_executions` filters
            # on it (a plain index on the JSON value would refuse values over ~2.7 kB).
            models.Index(GraphKey("node", "value"), name="durable_graph_value_key"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["execution", "node"], name="durable_graph_value_node"),
        ]

    def __str__(self) -> str:
        return f"{self.node}@{self.revision}"


class PausedQueue(models.Model):
    """A queue no worker claims from until it is resumed (`queues.pause_queue`). A row
    in the database, so the pause holds across workers and restarts; claims skip the
    queues listed here."""

    name = models.CharField(max_length=100, primary_key=True)
    paused_at = models.DateTimeField()
    reason = models.TextField(blank=True, default="")

    class Meta:
        db_table = "durable_paused_queue"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (paused)"


class Overview(WorkflowExecution):
    """No table: the admin's overview page, listed in the admin index like a model so it
    is found next to the executions it summarises."""

    class Meta:
        proxy = True
        verbose_name = "overview"
        verbose_name_plural = "overview"
