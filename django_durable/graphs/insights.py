"""Insights for graphs (SPEC §8): why a graph execution's values are what they are, how
a graph's executions flow through its nodes, and a graph's picture as Mermaid text.

- `introspect(execution)`: plain text, modelled on Journey's introspection: the values
  set and not set, the computations completed and outstanding, and for each outstanding
  one whether it was attempted (running, queued, failed) and which leaves of its
  upstream condition hold (✅) and which do not (🛑).
- `flow_analytics(graph, version=None, since=None)`: a JSON-able funnel per node, the
  same top-level shape as `insights.flow_analytics` for workflows; `to_text(report)`
  renders it.
- `mermaid(graph_or_execution)`: Mermaid `graph TD` text of the nodes and their
  dependencies; of an execution, coloured by each node's state.

`django_durable.insights` hands graphs over to these (`introspect`, `flow_analytics`,
`mermaid`, `to_text`), so callers use one module for both kinds of execution.
"""

import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Avg,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)

from .. import clock, registry
from ..colours import STATUS_COLOURS
from ..errors import ExecutionNotFound, UnknownWorkflow
from ..models import (
    FINAL_STATUSES,
    ExecutionKind,
    ExecutionStatus,
    GraphValue,
    StepExecution,
    StepStatus,
    WorkflowExecution,
)
from ..reports import SUB_RULE, analysis_opening, format_time, funnel_line
from . import store
from .definition import AllOf, AnyOf, Condition, Graph, Input, Mutate, NodeValue, get

VALUE_WIDTH = 60  # characters of a value's repr shown by `introspect`
SET, NOT_SET, HOLDS, BLOCKED = "✅", "⬜", "✅", "🛑"
FAILED, RUNNING, QUEUED, STALE = "❌", "▶", "⏳", "🔄"
ERROR_WIDTH = 200  # characters of an error message shown by `introspect`
_COMBINED = {AllOf: "all_of", AnyOf: "any_of"}
_EXECUTION_ORDER = list(ExecutionStatus.values)


# -- which subjects are graphs (for django_durable.insights) ---------------------------


def graph_subject(subject: Any) -> "Graph | WorkflowExecution | None":
    """What `insights.mermaid` hands over: a `Graph`; a graph execution (the row, its
    UUID or its id text); a name no workflow has but a registered graph does. None for
    anything else (a workflow, an unknown id: `insights` deals with those)."""
    if isinstance(subject, Graph):
        return subject
    if isinstance(subject, WorkflowExecution):
        return subject if subject.kind == ExecutionKind.GRAPH else None
    if isinstance(subject, str):
        if _is_workflow(subject):
            return None
        try:
            return get(subject)
        except UnknownWorkflow:
            pass
    if isinstance(subject, str | uuid.UUID):
        try:
            execution = WorkflowExecution.objects.by_id(subject)
        except ExecutionNotFound:
            return None
        return execution if execution.kind == ExecutionKind.GRAPH else None
    return None


def is_graph_name(subject: Any, *, using: str | None = None) -> bool:
    """Whether `insights.flow_analytics(subject)` is about a graph: a `Graph`, or a name
    no workflow is registered under that a graph is (or that graph executions have)."""
    if isinstance(subject, Graph):
        return True
    if not isinstance(subject, str) or _is_workflow(subject):
        return False
    try:
        get(subject)
        return True
    except UnknownWorkflow:
        rows = WorkflowExecution.objects.using(using) if using else WorkflowExecution.objects
        return rows.filter(kind=ExecutionKind.GRAPH, workflow_name=subject).exists()


def _is_workflow(name: str) -> bool:
    try:
        registry.get(name)
    except UnknownWorkflow:
        return False
    return True


# -- one execution ---------------------------------------------------------------------


def introspect(execution: Any) -> str:
    """A graph execution (an id or the `WorkflowExecution`) as plain text: its status
    and what it does now; its values set (value, kind, revision, when) and not set; its
    computations completed (revision, when) and outstanding: each not set or stale
    (computed from upstream revisions that have moved on), with what became of it
    (not yet attempted, queued, running, retrying, failed with the error) and its
    upstream condition as a tree, ✅ for each leaf that holds and 🛑 for each that does
    not. Unknown id, or not a graph: `ExecutionNotFound`."""
    execution = _graph_execution(execution)
    definition = _definition(execution)
    values = store.load(execution.id)
    view = values.view()
    attempts = _attempts(execution)
    lines = [f"Execution {execution.id}"]
    lines.append(f"Graph: '{execution.workflow_name}' (version {execution.workflow_version})")
    lines.append(f"Status: {execution.status}")
    times = [f"Created: {format_time(execution.created_at)}"]
    times.append(f"Started: {format_time(execution.started_at)}")
    if execution.completed_at:
        times.append(f"Finished: {format_time(execution.completed_at)}")
    lines.append(" | ".join(times))
    lines.append(f"Now: {_now(execution)}")
    if definition is None:
        lines.append(
            f"(graph '{execution.workflow_name}' version {execution.workflow_version} is not "
            "registered: its nodes are read from the stored values, without conditions)"
        )
    names = list(definition.order) if definition is not None else sorted(values.rows)
    names += sorted(set(values.rows) - set(names))
    lines += ["", "Values:", "- Set:"]
    shown = [_set_line(name, definition, view.get(name, NodeValue())) for name in names]
    lines += [line for line in shown if line] or ["  (none)"]
    lines += ["", "- Not set:"]
    unset = [_unset_line(name, definition, values.rows.get(name)) for name in names]
    lines += [line for line in unset if line] or ["  (none)"]
    completed, outstanding = [], []
    for name in names:
        node = definition.nodes.get(name) if definition is not None else None
        if node is None or isinstance(node, Input):
            continue
        row = values.rows.get(name)
        state = _compute_state(execution, node, row, values, view, attempts.get(name))
        if state is None:
            completed.append(_completed_line(node, row))
        else:
            outstanding += [state, *_condition_tree(node.condition, view, "      ")]
    lines += ["", "Computations:", "- Completed:"]
    lines += completed or ["  (none)"]
    lines += ["", "- Outstanding:"]
    lines += outstanding or ["  (none)"]
    return "\n".join(lines) + "\n"


def _graph_execution(execution: Any) -> WorkflowExecution:
    if not isinstance(execution, WorkflowExecution):
        execution = WorkflowExecution.objects.by_id(execution)
    if execution.kind != ExecutionKind.GRAPH:
        raise ExecutionNotFound(f"Execution {execution.id} is a {execution.kind}, not a graph.")
    return execution


def _definition(execution: WorkflowExecution) -> Graph | None:
    try:
        return get(execution.workflow_name, execution.workflow_version)
    except UnknownWorkflow:
        return None


def _attempts(execution: WorkflowExecution) -> dict[str, dict[str, Any]]:
    """Per compute: its attempts and when its latest failed one ended (one GROUP BY)."""
    rows = (
        StepExecution.objects.filter(execution=execution)
        .values("step_name")
        .annotate(
            count=Count("id"),
            failed_at=Max("completed_at", filter=Q(status=StepStatus.FAILED)),
        )
        .order_by()
    )
    return {row["step_name"]: row for row in rows}


def _now(execution: WorkflowExecution) -> str:
    """What the execution does now, in one sentence."""
    status, step = execution.status, execution.current_step
    if status in FINAL_STATUSES:
        at = f" at {format_time(execution.completed_at)}" if execution.completed_at else ""
        reason = f" (reason: {execution.cancel_reason})" if execution.cancel_reason else ""
        return f"it is {status}{at}{reason}; nothing is computed until it is resumed."
    if status == ExecutionStatus.RUNNING:
        return f"computing '{step}' (attempt {execution.attempt}){_on_worker(execution)}."
    if _queued(execution):
        return f"'{step}' to compute, {_queue_text(execution)}."
    return "nothing to compute; it waits for values to be set."


def _queued(execution: WorkflowExecution) -> bool:
    """A compute is due (now or at `run_at`) and no worker holds it yet."""
    return (
        execution.status in (ExecutionStatus.PENDING, ExecutionStatus.WAITING)
        and execution.run_at is not None
        and bool(execution.current_step)
    )


def _queue_text(execution: WorkflowExecution) -> str:
    if execution.run_at is not None and execution.run_at > clock.now():
        again = "retry" if execution.attempt > 1 else "scheduled"
        return f"{again} at {format_time(execution.run_at)}: attempt {execution.attempt}"
    return (
        f"queued: attempt {execution.attempt}, waits for a worker on queue '{execution.run_queue}'"
    )


def _on_worker(execution: WorkflowExecution) -> str:
    until = execution.locked_until
    lease = f", lease until {format_time(until)}" if until else ""
    return f" on worker '{execution.locked_by or '?'}'{lease}"


def _kind(definition: Graph | None, name: str) -> str:
    node = definition.nodes.get(name) if definition is not None else None
    return node.kind if node is not None else "unknown node"


def _set_line(name: str, definition: Graph | None, value: NodeValue) -> str | None:
    if not value.is_set:
        return None
    return (
        f"  - {name}: {_shown(value.value)} | {_kind(definition, name)}\n"
        f"    set at {format_time(value.set_at)} | rev {value.revision}"
    )


def _unset_line(name: str, definition: Graph | None, row: Any) -> str | None:
    if row is not None and row.is_set:
        return None
    line = f"  - {name}: <not set> | {_kind(definition, name)}"
    if row is not None and row.revision:
        line += f"\n    unset at {format_time(row.set_at)} | rev {row.revision}"
    return line


def _shown(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def _completed_line(node: Any, row: Any) -> str:
    return (
        f"  - {node.name}: {SET} computed | {node.kind} | rev {row.revision} | "
        f"at {format_time(row.set_at)}{_from(row)}"
    )


def _from(row: Any) -> str:
    used = row.computed_from or {}
    if not used:
        return ""
    return " | from " + ", ".join(f"{name} rev {rev}" for name, rev in used.items())


def _compute_state(
    execution: WorkflowExecution,
    node: Any,
    row: Any,
    values: store.Values,
    view: Mapping[str, NodeValue],
    attempts: dict[str, Any] | None,
) -> str | None:
    """The outstanding line of a computed node, or None when it is completed: set, and
    computed from the upstream revisions as they are (no failure since)."""
    current = {name: _revision(values, name) for name in node.upstream}
    is_set = row is not None and row.is_set
    up_to_date = row is not None and row.computed_from == current
    if is_set and up_to_date and not row.error:
        return None
    if not is_set:
        mark, value = NOT_SET, "not set"
    elif up_to_date:
        mark, value = NOT_SET, f"keeps rev {row.revision}"
    else:
        moved = [
            f"{name} rev {(row.computed_from or {}).get(name, 0)} → {rev}"
            for name, rev in current.items()
            if (row.computed_from or {}).get(name, 0) != rev
        ]
        mark, value = STALE, f"stale rev {row.revision} (since: {', '.join(moved)})"
    count = (attempts or {}).get("count", 0)
    step = execution.current_step == node.name
    if step and execution.status == ExecutionStatus.RUNNING:
        mark, what = RUNNING, f"running: attempt {execution.attempt}{_on_worker(execution)}"
    elif step and _queued(execution):
        mark, what = QUEUED, _queue_text(execution)
        if execution.attempt > 1:
            what += f"; last error: {_error_text(_last_error(execution, node.name))}"
    elif up_to_date and row.error:
        failed_at = (attempts or {}).get("failed_at")
        when = f" at {format_time(failed_at)}" if failed_at else ""
        mark, what = (
            FAILED,
            f"failed{when}: {_error_text(row.error)}; {_attempts_text(count)} in all; "
            "tried again when its upstream changes",
        )
    elif count == 0:
        what = "not yet attempted"
    elif is_set and not _holds(node.condition, view):
        what = "its condition no longer holds: it is unset next"
    else:
        what = f"not yet attempted on these values; {_attempts_text(count)} before"
    return f"  - {node.name}: {mark} {value} ({what}) | {node.kind}"


def _revision(values: store.Values, name: str) -> int:
    row = values.rows.get(name)
    return row.revision if row is not None else 0


def _attempts_text(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def _error_text(error: Any) -> str:
    if not error:
        return "-"
    if isinstance(error, Mapping):
        return _clipped(f"{error.get('type', 'Error')}: {error.get('message', '')}")
    return _clipped(str(error))


def _clipped(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def _last_error(execution: WorkflowExecution, name: str) -> Any:
    return (
        StepExecution.objects.filter(execution=execution, step_name=name, error__isnull=False)
        .order_by("-started_at")
        .values_list("error", flat=True)
        .first()
    )


def _holds(condition: Condition, view: Mapping[str, NodeValue]) -> bool:
    try:
        return bool(condition.holds(view))
    except Exception:
        return False


def _condition_tree(condition: Condition | None, view: Mapping[str, NodeValue], pad: str):
    """The condition as a tree: `all_of` / `any_of` headers, a leaf per line with ✅ or
    🛑, its description and the revision it reads when its node is set."""
    if condition is None:
        return []
    header = _COMBINED.get(type(condition))
    if header is not None:
        return [pad + header, *_branches(list(condition.conditions), view, pad + "  ")]
    leaves = condition.explain(view)
    if len(leaves) == 1:
        return [f"{pad}  └─ {_leaf(leaves[0], view)}"]
    return [pad + type(condition).__name__, *_leaf_lines(leaves, view, pad + "  ")]


def _branches(children: list[Condition], view: Mapping[str, NodeValue], pad: str) -> list[str]:
    lines = []
    for last, child in _marked(children):
        head, more = ("└─ ", "   ") if last else ("├─ ", "│  ")
        header = _COMBINED.get(type(child))
        if header is not None:
            lines.append(pad + head + header)
            lines += _branches(list(child.conditions), view, pad + more + " ")
            continue
        leaves = child.explain(view)
        if len(leaves) == 1:
            lines.append(pad + head + _leaf(leaves[0], view))
        else:
            lines.append(pad + head + type(child).__name__)
            lines += _leaf_lines(leaves, view, pad + more + " ")
    return lines


def _leaf_lines(leaves: list, view: Mapping[str, NodeValue], pad: str) -> list[str]:
    return [pad + ("└─ " if last else "├─ ") + _leaf(leaf, view) for last, leaf in _marked(leaves)]


def _marked(items: list) -> Iterator[tuple[bool, Any]]:
    for index, item in enumerate(items):
        yield index == len(items) - 1, item


def _leaf(leaf: tuple[str, bool, str], view: Mapping[str, NodeValue]) -> str:
    name, holds, description = leaf
    value = view.get(name)
    rev = f" | rev {value.revision}" if value is not None and value.is_set else ""
    return f"{HOLDS if holds else BLOCKED} {name} | {description}{rev}"


# -- flow analytics --------------------------------------------------------------------


def flow_analytics(
    graph: Any,
    version: str | None = None,
    since: datetime | timedelta | None = None,
    *,
    using: str | None = None,
) -> dict[str, Any]:
    """The funnel of a graph (a name or a `Graph`, whose version is then the default):
    its executions of `version` (None: of every version) created since `since` (an
    aware datetime, or a timedelta meaning that long ago; default all).

    `executions`: `count` and `by_status`. `nodes`, in the graph's order (topological,
    of `version` or, without one, of the latest registered version; nodes found only in
    the values come last), each: `node`, `kind`, `reached_count` and
    `reached_percentage` (executions where the node was set at least once: a value row
    at a revision above 0, set now or not), `average_seconds_to_reach` (the row's
    `set_at` - the execution's `created_at`; the rows keep no history, so this is the
    first set only for rows still at revision 1 and the latest change otherwise;
    `first_set_known_count` says how many rows were at revision 1), `ends_here_count`
    (executions whose latest value set, of those set now, is this node's; ties go to the
    node later in the graph's order) with its percentages of all and of those that
    reached it.

    Two aggregate statements whatever the number of executions. An unknown name (no
    registered graph, no execution) is `UnknownWorkflow`.
    """
    name = graph.name if isinstance(graph, Graph) else graph
    if isinstance(graph, Graph) and version is None:
        version = graph.version
    definition = graph if isinstance(graph, Graph) else _registered(name, version)
    manager = WorkflowExecution.objects.using(using) if using else WorkflowExecution.objects
    now = clock.now()
    if isinstance(since, timedelta):
        since = now - since
    scope = Q(kind=ExecutionKind.GRAPH, workflow_name=name)
    if version is not None:
        scope &= Q(workflow_version=version)
    if since is not None:
        scope &= Q(created_at__gte=since)
    executions = manager.filter(scope)
    if definition is None and not executions.exists():
        raise UnknownWorkflow(f"No graph {name!r} is registered and it has no executions.")
    order = list(definition.order) if definition is not None else []
    reached = _reached(using, scope)
    by_status, ends = _ends(executions, order)
    order += sorted(set(reached) - set(order), key=lambda node: (-reached[node]["n"], node))
    count = sum(by_status.values())
    nodes = []
    for node in order:
        hits = reached.get(node, {"n": 0, "to_reach": None, "exact": 0})
        ended = ends.get(node, 0)
        nodes.append(
            {
                "node": node,
                "kind": _kind(definition, node),
                "reached_count": hits["n"],
                "reached_percentage": _percent(hits["n"], count),
                "average_seconds_to_reach": _seconds(hits["to_reach"]),
                "first_set_known_count": hits["exact"],
                "ends_here_count": ended,
                "ends_here_percentage_of_all": _percent(ended, count),
                "ends_here_percentage_of_reached": _percent(ended, hits["n"]),
            }
        )
    rank = {status: index for index, status in enumerate(_EXECUTION_ORDER)}
    return {
        "graph": name,
        "version": version,
        "analyzed_at": now.isoformat(),
        "since": None if since is None else since.isoformat(),
        "executions": {
            "count": count,
            "by_status": dict(sorted(by_status.items(), key=lambda s: rank.get(s[0], 99))),
        },
        "nodes": nodes,
    }


def _registered(name: str, version: str | None) -> Graph | None:
    try:
        return get(name, version)
    except UnknownWorkflow:
        return None


def _reached(using: str | None, scope: Q) -> dict[str, dict[str, Any]]:
    """Per node (one GROUP BY over the value rows joined to their executions): the
    executions that set it, the average time from their creation to its `set_at`, and
    how many of those rows are at revision 1 (whose `set_at` is the first set)."""
    joined = _prefixed(scope, "execution__")
    rows = GraphValue.objects.using(using) if using else GraphValue.objects
    took = ExpressionWrapper(F("set_at") - F("execution__created_at"), output_field=DurationField())
    found = (
        rows.filter(joined, revision__gt=0)
        .values("node")
        .annotate(n=Count("id"), to_reach=Avg(took), exact=Count("id", filter=Q(revision=1)))
        .order_by()
    )
    return {row["node"]: row for row in found}


def _prefixed(condition: Q, prefix: str) -> Q:
    """`condition` on a related model's fields (`prefix` + each lookup)."""
    children = [
        _prefixed(child, prefix) if isinstance(child, Q) else (prefix + child[0], child[1])
        for child in condition.children
    ]
    return Q(*children, _connector=condition.connector, _negated=condition.negated)


def _ends(executions, order: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Executions by status, and per node how many end there (one GROUP BY status and
    last node; the last node of an execution is a correlated subquery on its rows)."""
    position = Case(
        *[When(node=node, then=Value(index)) for index, node in enumerate(order)],
        default=Value(-1),
        output_field=IntegerField(),
    )
    last = (
        GraphValue.objects.filter(execution=OuterRef("pk"), is_set=True)
        .annotate(position=position)
        .order_by("-set_at", "-position", "-node")
        .values("node")[:1]
    )
    rows = (
        executions.annotate(last_node=Subquery(last))
        .values("status", "last_node")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_status: dict[str, int] = {}
    ends: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["last_node"] is not None:
            ends[row["last_node"]] = ends.get(row["last_node"], 0) + row["n"]
    return by_status, ends


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return round(float(value), 3)


def to_text(report: dict[str, Any]) -> str:
    """A graph's `flow_analytics()` report as text for a person."""
    version = f"Version: '{report['version']}'" if report.get("version") else "Versions: all"
    lines = analysis_opening([f"Graph: '{report['graph']}'", version], report)
    nodes = report["nodes"]
    lines += ["", f"NODES ({len(nodes)}):", SUB_RULE]
    width = max((len(node["node"]) for node in nodes), default=4)
    kinds = max((len(node["kind"]) for node in nodes), default=4)
    for node in nodes:
        lines.append(f"{node['node']:<{width}}  {node['kind']:<{kinds}}  {funnel_line(node)}")
    return "\n".join(lines) + "\n"


# -- diagrams --------------------------------------------------------------------------

# Journey's palette: fill, stroke per kind of node.
_KIND_STYLES = {
    "input": ("inputNode", "#e1f5fe", "#01579b"),
    "compute": ("computeNode", "#f3e5f5", "#4a148c"),
    "schedule_once": ("scheduleNode", "#fff3e0", "#e65100"),
    "schedule_recurring": ("scheduleNode", "#fff3e0", "#e65100"),
    "mutate": ("mutateNode", "#e8f5e8", "#2e7d32"),
    "archive": ("archiveNode", "#eceff1", "#37474f"),
}
# With an execution: a node's state, as the status colour it is drawn in.
_STATE_STATUS = {
    "set": "completed",
    "not_set": "pending",
    "stale": "waiting",
    "running": "running",
    "failed": "failed",
}
# Mermaid's entity codes: a label can't open a tag, end its quotes or start an entity.
_ESCAPES = {"#": "#35;", '"': "#34;", "<": "#60;", ">": "#62;", "&": "#38;", "`": "#96;"}


def mermaid(graph_or_execution: Any) -> str:
    """Mermaid `graph TD` text of a graph (a `Graph`, or a graph execution: the row, its
    id): a subgraph titled with its name and version, a node per node (inputs, then the
    rest, in the graph's order; a compute's label names its function), an edge from
    each upstream node (labelled with the predicate of an `unblocked_when`), a dashed
    "mutates" edge from a mutate node to its target, and a class per kind of node. Of an
    execution, each node shows its revision and is coloured by its state (set, not set,
    stale, running, failed) instead."""
    subject = graph_subject(graph_or_execution)
    if subject is None:
        raise ExecutionNotFound(f"{graph_or_execution!r} is neither a graph nor a graph execution.")
    execution = subject if isinstance(subject, WorkflowExecution) else None
    graph = (
        subject if execution is None else get(execution.workflow_name, execution.workflow_version)
    )
    states = _states(graph, execution) if execution is not None else {}
    ids = {name: "n_" + name for name in graph.nodes}
    title = _text(f"🧩 '{graph.name}', version {graph.version}")
    lines = ["graph TD", f'    subgraph graph_nodes["{title}"]']
    for name in [*graph.inputs(), *graph.computed()]:
        lines.append(f"        {_mermaid_node(graph, name, ids, states.get(name))}")
    lines.append("    end")
    for name in graph.order:
        node = graph.nodes[name]
        if node.condition is not None:
            for upstream, label in _edges(node.condition):
                label = f'|"{_text(label)}"|' if label else ""
                lines.append(f"    {ids[upstream]} -->{label} {ids[name]}")
        if isinstance(node, Mutate):
            lines.append(f'    {ids[name]} -.->|"mutates"| {ids[node.target]}')
    if execution is None:
        lines += _classes(
            {name: _KIND_STYLES.get(node.kind) for name, node in graph.nodes.items()}, ids
        )
    else:
        lines += _state_classes(states, ids)
    return "\n".join(lines) + "\n"


def _text(text: str) -> str:
    return "".join(_ESCAPES.get(char, char) for char in " ".join(str(text).split()))


def _mermaid_node(graph: Graph, name: str, ids: dict, state: tuple | None) -> str:
    node = graph.nodes[name]
    label = _text(name)
    fn = getattr(node, "fn", None)
    if fn is not None:
        label += f"<br/>{_text(node.kind)}: {_text(getattr(fn, '__name__', None) or repr(fn))}"
    elif not isinstance(node, Input):
        label += f"<br/>{_text(node.kind)}"
    if state is not None and state[1]:
        label += f"<br/>rev {state[1]}"
    return f'{ids[name]}["{label}"]'


def _edges(condition: Condition) -> list[tuple[str, str]]:
    """(upstream node, edge label) per leaf of the condition: `unblocked_when` leaves
    are labelled with their predicate, `provided` ones (plain names) are not."""
    found: dict[str, str] = {}
    for leaf in _leaves(condition):
        label = getattr(leaf, "description", "")
        for upstream in leaf.names():
            if upstream not in found or (label and not found[upstream]):
                found[upstream] = label
    return list(found.items())


def _leaves(condition: Condition) -> list[Condition]:
    children = getattr(condition, "conditions", None)
    if children is None:
        return [condition]
    return [leaf for child in children for leaf in _leaves(child)]


def _classes(kinds: dict[str, tuple | None], ids: dict[str, str]) -> list[str]:
    lines = []
    members: dict[str, list[str]] = {}
    for name, style in kinds.items():
        if style is not None:
            members.setdefault(style[0], []).append(ids[name])
    written = set()
    for class_name, fill, stroke in _KIND_STYLES.values():
        if class_name in written:
            continue
        written.add(class_name)
        lines.append(
            f"    classDef {class_name} fill:{fill},stroke:{stroke},stroke-width:2px,color:#000000"
        )
    for class_name, names in members.items():
        lines.append(f"    class {','.join(names)} {class_name}")
    return lines


def _states(graph: Graph, execution: WorkflowExecution) -> dict[str, tuple[str, int]]:
    """Each node's (state, revision) in the execution."""
    values = store.load(execution.id)
    states = {}
    for name, node in graph.nodes.items():
        row = values.rows.get(name)
        revision = row.revision if row is not None else 0
        current = {up: _revision(values, up) for up in node.upstream}
        running = execution.current_step == name and execution.status == ExecutionStatus.RUNNING
        if running:
            state = "running"
        elif row is not None and row.error and row.computed_from == current:
            state = "failed"
        elif row is None or not row.is_set:
            state = "not_set"
        elif not isinstance(node, Input) and row.computed_from != current:
            state = "stale"
        else:
            state = "set"
        states[name] = (state, revision)
    return states


def _state_classes(states: dict[str, tuple[str, int]], ids: dict[str, str]) -> list[str]:
    lines = []
    members: dict[str, list[str]] = {}
    for name, (state, _) in states.items():
        members.setdefault(state, []).append(ids[name])
    for state, names in members.items():
        fill = STATUS_COLOURS.get(_STATE_STATUS[state], "#6c757d")
        lines.append(f"    classDef s_{state} fill:{fill},color:#ffffff")
        lines.append(f"    class {','.join(names)} s_{state}")
    return lines
