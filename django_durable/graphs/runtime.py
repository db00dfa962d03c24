"""Graph executions on the engine: a graph execution is a `WorkflowExecution` (kind
`graph`) whose current step is the compute to run next, claimed, leased, fenced and
retried like any step; its values are `GraphValue` rows.

Setting an input (`set_value`) writes the value under the execution's row lock and,
if that calls for a compute and nobody runs one, wakes the execution at it. A worker
runs the compute (`ComputeStep`) on the values as they are then; recording its result
(`follow`, the `Computed` move's transition) locks the row first, so a value set
meanwhile is seen: a result computed from upstream revisions that have moved on is
dropped and the compute runs again on the new ones. Then the next compute follows in
the same claim, or the execution parks (`Park`) until something is set.
"""

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from .. import claims, clock, codec, executions, ids, recording, registry, starting
from ..dsl import Next, Park
from ..durations import to_timedelta
from ..errors import (
    ContextNotSerializable,
    ExecutionNotFound,
    InvalidInput,
    NonRetryableError,
    ValueNotSet,
    error_record,
)
from ..models import ExecutionKind, ExecutionStatus, StepStatus, WorkflowExecution
from . import definition as graph_definitions
from . import store
from .definition import Graph, Node, NodeValue, get

POLL_SECONDS = (0.02, 0.25)  # get_value(wait=): first and longest pause between looks


@dataclass(frozen=True)
class Computed:
    """What a node made of the values at upstream revisions `used`: a value (for itself,
    or for a mutate's target), an error (out of retries), a schedule's next time
    (`due_at`) or its time having come (`fired`), an archive, or `unset` when its
    condition no longer held."""

    node: str
    value: Any = None
    used: dict = field(default_factory=dict)
    error: dict | None = None
    unset: bool = False
    due_at: datetime | None = None
    fired: datetime | None = None
    archive: bool = False


class ComputeStep:
    """A computed node as the engine runs it: an attempt of its own, with its retry
    policy and timeout. Out of retries, the failure is the node's, not the graph's."""

    def __init__(self, node: Node) -> None:
        self.node, self.name = node, node.name
        self.retry = getattr(node, "retry", None)
        self.timeout = getattr(node, "timeout", None)
        self.queue = None

    def run(self, ctx: dict, unit) -> Computed:
        execution = unit.execution
        values = store.load(execution.id)
        view = values.view()
        if not self.node.condition.holds(view):
            return Computed(self.name, unset=True)
        used = values.revisions(self.node.upstream)
        given = {name: value.value for name, value in view.items() if value.is_set}
        try:
            return self._made(given, used, values.rows.get(self.name))
        except ContextNotSerializable as exc:
            return Computed(self.name, used=used, error=error_record(exc))
        except Exception as exc:
            policy = recording.retry_policy(Process, self)
            if getattr(exc, "retryable", True) and execution.attempt < policy.max_attempts:
                raise
            return Computed(self.name, used=used, error=error_record(exc))

    def _made(self, given: dict, used: dict, row) -> Computed:
        kind, now = self.node.kind, clock.now()
        if kind == "archive":
            return Computed(self.name, value=True, used=used, archive=True)
        if kind in store.SCHEDULES:
            due = row.due_at if row is not None and row.computed_from == used else None
            if due is not None and due <= now:
                later = (
                    _time(self.node.fn(given), due, self.name)
                    if kind == "schedule_recurring"
                    else None
                )
                return Computed(self.name, used=used, fired=due, due_at=later)
            return Computed(self.name, used=used, due_at=_time(self.node.fn(given), now, self.name))
        result = self.node.fn(given)
        codec.encode(result, self.name)
        return Computed(self.name, value=result, used=used)


def _time(when: Any, after: datetime, name: str) -> datetime:
    """A schedule's next time from what its function gave: an aware datetime, or a
    delay (timedelta or seconds) from `after`; it must be later than `after`."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise NonRetryableError(
                f"Schedule node {name!r} gave a naive datetime; give an aware one."
            )
        moment = when
    else:
        moment = after + to_timedelta(when, f"schedule node {name!r}: delay")
    if moment <= after:
        raise NonRetryableError(
            f"Schedule node {name!r} gave {moment}, which is not after {after}."
        )
    return moment


class Process:
    """A graph as the engine's registry knows a definition (`registry.Definition`)."""

    timeout = None
    retry = None

    def __init__(self, graph: Graph) -> None:
        self.graph_definition = graph
        self.name, self.version, self.origin = graph.name, graph.version, graph.origin
        self.queue = "default"
        self.graph = None  # no workflow graph: nothing forks or compensates here

    def entry(self, context) -> Next | Park:
        first = store.plan(self.graph_definition, store.Values(), clock.now()).next
        return Park() if first is None else Next(first)

    def node(self, node_id: str) -> ComputeStep:
        return ComputeStep(self.graph_definition.node(node_id))

    def after(self, node_id: str, context) -> Park:
        return Park()  # a compute always says what it made (`Computed`)

    def run_queue(self, node_id: str, queue: str) -> str:
        return queue


def _definition_of(execution: WorkflowExecution) -> Process:
    return Process(get(execution.workflow_name, execution.workflow_version))


registry.register_kind(ExecutionKind.GRAPH, _definition_of)


# -- the public API ----------------------------------------------------------------------


def start(graph: "Graph | str", version: str | None = None) -> uuid.UUID:
    """Start an execution of a graph (by object, or by name and version); returns its id."""
    definition = graph if isinstance(graph, Graph) else get(graph, version)
    return starting.create_execution(Process(definition), {}, kind=ExecutionKind.GRAPH)


def set_value(execution_id: "uuid.UUID | str", name: str, value: Any) -> None:
    """Set an input node; the computes downstream of it run again (once per change).
    Setting the value it has changes nothing."""
    _change(
        execution_id,
        name,
        lambda values, now: store.write(_id(execution_id), values, name, value, now),
    )


def unset_value(execution_id: "uuid.UUID | str", name: str) -> None:
    """Clear an input node; what depends on it is unset in turn by the workers."""
    _change(
        execution_id, name, lambda values, now: store.clear(_id(execution_id), values, name, now)
    )


def get_value(
    execution_id: "uuid.UUID | str",
    name: str,
    *,
    wait: timedelta | float | None = None,
    newer_than: int | None = None,
) -> Any:
    """The node's value; with `wait`, block up to that long for it to be set (or to get
    a revision above `newer_than`): woken by the commit that sets it on PostgreSQL,
    polling elsewhere. ValueNotSet if it is not (in time)."""
    execution = _graph_execution(execution_id)
    get(execution.workflow_name, execution.workflow_version).node(name)
    seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait or 0)
    give_up = time.monotonic() + seconds

    def ready() -> NodeValue | None:
        current = store.node_value(store.row(execution.id, name))
        fresh = current.is_set and (newer_than is None or current.revision > newer_than)
        return current if fresh else None

    found = ready() if seconds <= 0 else _wait_until(ready, execution.id, give_up)
    if found is None:
        beyond = f" beyond revision {newer_than}" if newer_than is not None else ""
        raise ValueNotSet(f"Node {name!r} of execution {execution.id} is not set{beyond}.")
    return found.value


def _wait_until(ready, execution_id: uuid.UUID, give_up: float) -> NodeValue | None:
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        return _wait_listening(ready, execution_id, give_up)
    pause = POLL_SECONDS[0]
    while True:
        found = ready()
        if found is not None or time.monotonic() >= give_up:
            return found
        time.sleep(min(pause, max(give_up - time.monotonic(), 0)))
        pause = min(pause * 2, POLL_SECONDS[1])


def _wait_listening(ready, execution_id: uuid.UUID, give_up: float) -> NodeValue | None:
    """LISTEN first, then look: a value set in between is not missed. A look every
    second anyway, in case a notice is lost with its connection."""
    with claims.listener(store.CHANNEL) as listener:
        while True:
            found = ready()
            left = give_up - time.monotonic()
            if found is not None or left <= 0:
                return found
            for notice in listener.notifies(timeout=min(left, 1.0)):
                if notice.payload == str(execution_id):
                    break


def values(execution_id: "uuid.UUID | str") -> dict[str, Any]:
    """The values that are set, by node name."""
    execution = _graph_execution(execution_id)
    return {
        name: value.value for name, value in store.load(execution.id).view().items() if value.is_set
    }


def load(execution_id: "uuid.UUID | str") -> WorkflowExecution:
    """The execution, with `.values`: every node's `NodeValue` (unset ones at revision 0)."""
    execution = _graph_execution(execution_id)
    graph = get(execution.workflow_name, execution.workflow_version)
    view = store.load(execution.id).view()
    execution.values = {name: view.get(name, NodeValue()) for name in graph.nodes}
    return execution


# -- inside ------------------------------------------------------------------------------


def _id(execution_id) -> uuid.UUID:
    return execution_id if isinstance(execution_id, uuid.UUID) else uuid.UUID(str(execution_id))


def _graph_execution(execution_id) -> WorkflowExecution:
    execution = WorkflowExecution.objects.by_id(execution_id)
    if execution.kind != ExecutionKind.GRAPH:
        raise ExecutionNotFound(f"Execution {execution.id} is a {execution.kind}, not a graph.")
    return execution


def _change(execution_id, name: str, write) -> None:
    """Change one input under the execution's row lock, then wake the execution at the
    compute that calls for, unless a worker holds it (it re-plans when it records)."""
    with transaction.atomic():
        execution = executions.lock_active(execution_id, "have values set")
        if execution.kind != ExecutionKind.GRAPH:
            raise InvalidInput(f"Execution {execution.id} is a {execution.kind}, not a graph.")
        graph = get(execution.workflow_name, execution.workflow_version)
        if graph.node(name).kind != "input":
            raise InvalidInput(
                f"Node {name!r} is a {graph.node(name).kind} node; only inputs are set."
            )
        values = store.load(execution.id)
        try:
            changed = write(values, clock.now())
        except ContextNotSerializable as exc:
            raise InvalidInput(str(exc)) from None
        if changed:
            _wake_for(execution, graph, values)


def _wake_for(execution: WorkflowExecution, graph: Graph, values: store.Values) -> None:
    if execution.status not in (ExecutionStatus.WAITING, ExecutionStatus.PENDING):
        return  # running: the worker plans again when it records, under this lock
    upcoming = store.plan(graph, values, clock.now())
    if upcoming.next is None and not upcoming.unset:
        return
    executions.redirect(execution, upcoming.next or upcoming.unset[0])


def follow(run, attempt, outcome, move: Computed, must_stop: bool):
    """Record a node's outcome under the execution's row lock: its value (unless its
    upstream moved on meanwhile), the unsets the values now call for, then the next node
    here at once, or through the queue, or park (until a schedule's time, if any)."""
    execution, graph = run.execution, run.definition.graph_definition
    with transaction.atomic():
        executions.lock_held(execution)
        values = store.load(execution.id)
        now = outcome.finished_at
        _keep(execution.id, values, graph, move, now)
        status = StepStatus.FAILED if move.error else StepStatus.COMPLETED
        ending = recording.attempt_end(attempt, status, _with_error(outcome, move))
        if move.archive and move.error is None:
            executions.finish(
                execution, ExecutionStatus.COMPLETED, now=now, own_end=(attempt.id, ending)
            )
            return None
        upcoming = _settle(execution.id, values, graph, now)
        if upcoming.next is None:
            executions.transition(
                execution,
                ExecutionStatus.WAITING,
                run_at=upcoming.wake_at,
                current_step=upcoming.wake or execution.current_step,
                recoveries=0,
                **claims.LEASE_CLEARED,
            )
            recording.close_attempt(attempt, ending)
            return None
        moves = {
            "current_step": upcoming.next,
            "attempt": 1,
            "step_seq": execution.step_seq + 1,
            "recoveries": 0,
        }
        if must_stop:
            executions.transition(
                execution, ExecutionStatus.PENDING, run_at=now, **moves, **claims.LEASE_CLEARED
            )
            recording.close_attempt(attempt, ending)
            claims.notify(execution.run_queue)
            return None
        next_attempt = recording.new_attempt(
            run, run.definition.node(upcoming.next), ids.time_ordered(), 1
        )
        next_attempt.step_name = upcoming.next
        run.tokens.add(next_attempt.id)
        executions.hand_over(execution, attempt.id, ending, next_attempt, **moves)
        return next_attempt


def _keep(execution_id, values: store.Values, graph: Graph, move: Computed, now) -> None:
    node, name = graph.node(move.node), move.node
    if move.unset:
        store.clear(execution_id, values, name, now)
        return
    if values.revisions(node.upstream) != move.used:
        return  # computed from values that changed meanwhile: it runs again on the new ones
    done = {"computed_from": move.used, "error": None}
    if move.error is not None:
        store.note(execution_id, values, name, **{**done, "error": move.error})
    elif move.fired is not None:
        store.write(execution_id, values, name, move.fired, now, due_at=move.due_at, error=None)
    elif node.kind in store.SCHEDULES:
        store.note(execution_id, values, name, due_at=move.due_at, **done)
    elif node.kind == "mutate":
        store.mutate(execution_id, values, node.target, move.value, now)
        store.write(execution_id, values, name, True, now, **done)
    else:
        store.write(execution_id, values, name, move.value, now, **done)


def _settle(execution_id, values: store.Values, graph: Graph, now) -> store.Plan:
    """Unset what lost its condition (which may unset more downstream), then say what
    runs next, or when to wake."""
    while True:
        upcoming = store.plan(graph, values, now)
        if not upcoming.unset:
            return upcoming
        for name in upcoming.unset:
            store.clear(execution_id, values, name, now)


def _with_error(outcome, move: Computed):
    if move.error is None:
        return outcome
    return recording.Outcome(finished_at=outcome.finished_at, error=move.error, logs=outcome.logs)


recording.follow_with(Computed, follow)
graph_definitions.set_starter(start)
