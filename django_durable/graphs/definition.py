"""Graph definitions: named durable values, their conditions, and a registry of graphs.

A graph is a set of named nodes. `input` nodes are set from outside; every other node
(`compute`, `mutate`, `schedule_once`, `schedule_recurring`, `archive`) runs once its
upstream condition holds. This module is pure Python: it only describes graphs (and
checks them when they are defined); the runtime that stores values and runs computes
lives elsewhere. It imports without Django being set up.
"""

import heapq
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from ..dsl import names as limits
from ..dsl.retry import Retry
from ..durations import to_timedelta
from ..errors import DurableError, UnknownWorkflow, WorkflowDefinitionError

NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class UnknownNode(DurableError, KeyError):
    """A graph has no node of the given name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def check_node_name(value: Any, what: str = "A graph node name") -> str:
    """`value` if it can name a node: a Python identifier of at most 200 characters
    (node names become keys of `fn(values)` and appear in SQL filters)."""
    limits.checked_name(value, what, limits.NODE_ID)
    if not NODE_NAME.match(value):
        raise WorkflowDefinitionError(
            f"{what} must be an identifier (letters, digits and underscores, not starting "
            f"with a digit), not {value!r:.80}."
        )
    return value


# --- Values -------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeValue:
    """One node's value as conditions, computes and users see it."""

    value: Any = None
    revision: int = 0  # 0: not set
    set_at: datetime | None = None

    @property
    def is_set(self) -> bool:
        return self.revision > 0


UNSET = NodeValue()


# --- Conditions ---------------------------------------------------------------------


class Condition:
    """When a node may run, as a function of its upstream nodes' values."""

    def names(self) -> tuple[str, ...]:
        """The upstream node names this condition reads, in order, without duplicates."""
        raise NotImplementedError

    def holds(self, values: Mapping[str, NodeValue]) -> bool:
        """Whether the condition holds; a name missing from `values` counts as unset."""
        raise NotImplementedError

    def explain(self, values: Mapping[str, NodeValue]) -> list[tuple[str, bool, str]]:
        """`(node name, holds?, description)` for each leaf condition, in order."""
        raise NotImplementedError


def _value_of(values: Mapping[str, NodeValue], name: str) -> NodeValue:
    value = values.get(name, UNSET)
    return UNSET if value is None else value


@dataclass(frozen=True)
class Provided(Condition):
    """Holds when the node `name` is set."""

    name: str

    def __post_init__(self) -> None:
        check_node_name(self.name, "provided(): the node name")

    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def holds(self, values: Mapping[str, NodeValue]) -> bool:
        return _value_of(values, self.name).is_set

    def explain(self, values: Mapping[str, NodeValue]) -> list[tuple[str, bool, str]]:
        return [(self.name, self.holds(values), "is set")]


@dataclass(frozen=True)
class UnblockedWhen(Condition):
    """Holds when the node `name` is set and `predicate(node_value)` is true."""

    name: str
    predicate: Callable[[NodeValue], Any]

    def __post_init__(self) -> None:
        check_node_name(self.name, "unblocked_when(): the node name")
        if not callable(self.predicate):
            raise WorkflowDefinitionError(
                f"unblocked_when({self.name!r}, ...): the predicate {self.predicate!r:.80} "
                "is not callable."
            )

    @property
    def description(self) -> str:
        label = getattr(self.predicate, "__name__", None) or repr(self.predicate)
        return f"unblocked_when({label})"

    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def holds(self, values: Mapping[str, NodeValue]) -> bool:
        node = _value_of(values, self.name)
        if not node.is_set:
            return False
        return bool(self.predicate(node))

    def explain(self, values: Mapping[str, NodeValue]) -> list[tuple[str, bool, str]]:
        # Introspection must not fail because a predicate does: report the error instead.
        try:
            holds = self.holds(values)
        except Exception as exc:
            return [(self.name, False, f"{self.description} raised {type(exc).__name__}: {exc}")]
        return [(self.name, holds, self.description)]


@dataclass(frozen=True)
class _Combined(Condition):
    conditions: tuple[Condition, ...]

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for c in self.conditions for name in c.names()))

    def explain(self, values: Mapping[str, NodeValue]) -> list[tuple[str, bool, str]]:
        return [leaf for c in self.conditions for leaf in c.explain(values)]


@dataclass(frozen=True)
class AllOf(_Combined):
    """Holds when every one of its conditions holds (an empty one always does)."""

    def holds(self, values: Mapping[str, NodeValue]) -> bool:
        return all(c.holds(values) for c in self.conditions)


@dataclass(frozen=True)
class AnyOf(_Combined):
    """Holds when at least one of its conditions holds."""

    def holds(self, values: Mapping[str, NodeValue]) -> bool:
        return any(c.holds(values) for c in self.conditions)


def provided(name: str) -> Condition:
    """The node `name` is set."""
    return Provided(name)


def unblocked_when(name: str, predicate: Callable[[NodeValue], Any]) -> Condition:
    """The node `name` is set and `predicate(node)` is true; `node` has `.value`,
    `.revision` and `.set_at`. The predicate is never called while the node is unset."""
    return UnblockedWhen(name, predicate)


def _conditions(what: str, items: Iterable[Any]) -> tuple[Condition, ...]:
    out: list[Condition] = []
    for item in items:
        if isinstance(item, Condition):
            out.append(item)
        elif isinstance(item, str):
            out.append(Provided(item))
        elif isinstance(item, (list, tuple)):
            out.extend(_conditions(what, item))
        else:
            raise WorkflowDefinitionError(
                f"{what}: expected node names or conditions, not {item!r:.80}."
            )
    return tuple(out)


def all_of(*conditions_or_names: Any) -> Condition:
    """Every condition holds; a name stands for `provided(name)`, lists are flattened."""
    return AllOf(_conditions("all_of()", conditions_or_names))


def any_of(*conditions_or_names: Any) -> Condition:
    """At least one condition holds; a name stands for `provided(name)`."""
    conditions = _conditions("any_of()", conditions_or_names)
    if not conditions:
        raise WorkflowDefinitionError("any_of() needs at least one condition; it never holds.")
    return AnyOf(conditions)


def as_condition(upstream: Any) -> Condition:
    """A node's upstream: a condition, or a list of names that must all be set."""
    if isinstance(upstream, Condition):
        return upstream
    if isinstance(upstream, (list, tuple)):
        return AllOf(_conditions("upstream", upstream))
    hint = f" (did you mean [{upstream!r}]?)" if isinstance(upstream, str) else ""
    raise WorkflowDefinitionError(
        f"upstream must be a list of node names or a condition, not {upstream!r:.80}{hint}."
    )


# --- Nodes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A named value of a graph. Build nodes with `input`, `compute`, ... ."""

    name: str
    condition: Condition | None = None

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_node_name(self.name)
        if self.kind == "input":
            if self.condition is not None:
                raise WorkflowDefinitionError(
                    f"Input node {self.name!r} has no upstream; it is set from outside."
                )
            return
        if self.condition is None:
            raise WorkflowDefinitionError(
                f"{self.kind} node {self.name!r} needs an upstream (a list of node names "
                "or a condition)."
            )
        object.__setattr__(self, "condition", as_condition(self.condition))

    @property
    def upstream(self) -> tuple[str, ...]:
        """The node names this node's condition reads (none for an input)."""
        return self.condition.names() if self.condition is not None else ()

    def _check_fn(self, fn: Any) -> None:
        if not callable(fn):
            raise WorkflowDefinitionError(
                f"{self.kind} node {self.name!r}: fn {fn!r:.80} is not callable."
            )

    def _normalise_retry_and_timeout(self) -> None:
        object.__setattr__(self, "retry", Retry.coerce(self.retry))
        timeout = to_timedelta(self.timeout, f"{self.kind} node {self.name!r}: timeout")
        object.__setattr__(self, "timeout", timeout)


@dataclass(frozen=True)
class Input(Node):
    """A value set from outside (`set_value`)."""

    kind: ClassVar[str] = "input"


@dataclass(frozen=True)
class Compute(Node):
    """`fn(values)` computes the node's value from its upstream values."""

    fn: Callable[[dict[str, Any]], Any] | None = None
    retry: Retry | None = None
    timeout: timedelta | None = None

    kind: ClassVar[str] = "compute"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fn(self.fn)
        self._normalise_retry_and_timeout()


@dataclass(frozen=True)
class Mutate(Node):
    """`fn(values)` gives a new value for another node, `target`."""

    fn: Callable[[dict[str, Any]], Any] | None = None
    target: str = ""
    retry: Retry | None = None
    timeout: timedelta | None = None

    kind: ClassVar[str] = "mutate"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fn(self.fn)
        check_node_name(self.target, f"mutate node {self.name!r}: target")
        if self.target == self.name:
            raise WorkflowDefinitionError(
                f"mutate node {self.name!r} cannot mutate itself; target another node."
            )
        self._normalise_retry_and_timeout()


@dataclass(frozen=True)
class ScheduleOnce(Node):
    """`fn(values)` gives an aware datetime (or a delay); the node is set when it comes."""

    fn: Callable[[dict[str, Any]], Any] | None = None

    kind: ClassVar[str] = "schedule_once"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fn(self.fn)


@dataclass(frozen=True)
class ScheduleRecurring(Node):
    """Like `ScheduleOnce`, and again at each next time `fn(values)` gives."""

    fn: Callable[[dict[str, Any]], Any] | None = None

    kind: ClassVar[str] = "schedule_recurring"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fn(self.fn)


@dataclass(frozen=True)
class Archive(Node):
    """Archives the execution when its condition holds."""

    kind: ClassVar[str] = "archive"


def input(name: str) -> Input:  # shadows the builtin on purpose: the DSL name
    """A value set from outside with `set_value`."""
    return Input(name)


def compute(
    name: str,
    upstream: Any,
    fn: Callable[[dict[str, Any]], Any],
    *,
    retry: Retry | Mapping[str, Any] | None = None,
    timeout: timedelta | int | float | None = None,
) -> Compute:
    """A value `fn(values)` computes once `upstream` holds, and again when it changes."""
    return Compute(name, as_condition(upstream), fn, retry, timeout)


def mutate(
    name: str,
    upstream: Any,
    fn: Callable[[dict[str, Any]], Any],
    *,
    target: str,
    retry: Retry | Mapping[str, Any] | None = None,
    timeout: timedelta | int | float | None = None,
) -> Mutate:
    """Sets `target` to `fn(values)` once `upstream` holds (e.g. to clear personal data)."""
    return Mutate(name, as_condition(upstream), fn, target, retry, timeout)


def schedule_once(name: str, upstream: Any, fn: Callable[[dict[str, Any]], Any]) -> ScheduleOnce:
    """Set once the time `fn(values)` gives (aware datetime or delay) comes."""
    return ScheduleOnce(name, as_condition(upstream), fn)


def schedule_recurring(
    name: str, upstream: Any, fn: Callable[[dict[str, Any]], Any]
) -> ScheduleRecurring:
    """Set at each time `fn(values)` gives (aware datetime or delay), again and again."""
    return ScheduleRecurring(name, as_condition(upstream), fn)


def archive(name: str, upstream: Any) -> Archive:
    """Archives the execution once `upstream` holds."""
    return Archive(name, as_condition(upstream))


# --- Graphs -------------------------------------------------------------------------


# How a graph starts, given by `graphs.runtime` when the app loads (the definitions here
# import without Django, the runtime needs the database).
_starter: Callable[["Graph"], Any] | None = None


def set_starter(starter: Callable[["Graph"], Any]) -> None:
    global _starter
    _starter = starter


class Graph:
    """A named, versioned set of nodes. Build and register one with `graph(...)`."""

    def __init__(
        self, name: str, version: str, nodes: Iterable[Node], *, description: str = ""
    ) -> None:
        limits.checked_name(name, "A graph name", limits.WORKFLOW_NAME)
        limits.checked_name(version, f"Graph {name!r}: version", limits.VERSION)
        if not isinstance(description, str):
            raise WorkflowDefinitionError(f"Graph {name!r}: description must be a string.")
        self.name = name
        self.version = version
        self.description = description
        self.origin = _caller_origin(1)
        label = f"Graph {name!r} {version!r}"
        if isinstance(nodes, (str, Node)) or not isinstance(nodes, Iterable):
            raise WorkflowDefinitionError(f"{label}: nodes must be a list of nodes.")
        self.nodes: dict[str, Node] = {}
        for index, node in enumerate(nodes):
            if not isinstance(node, Node):
                raise WorkflowDefinitionError(
                    f"{label}: nodes[{index}] is {node!r:.80}, not a node "
                    "(use input(), compute(), mutate(), ...)."
                )
            if node.name in self.nodes:
                raise WorkflowDefinitionError(f"{label}: two nodes are named {node.name!r}.")
            self.nodes[node.name] = node
        if not self.nodes:
            raise WorkflowDefinitionError(f"{label} has no nodes.")
        self._check_references(label)
        self.order: tuple[str, ...] = self._sorted(label)
        self._position = {name: i for i, name in enumerate(self.order)}
        self._dependents: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for up in node.upstream:
                self._dependents[up].append(node.name)

    def start(self) -> Any:
        """Start an execution of this graph; see `django_durable.graphs.start`."""
        if _starter is None:
            raise DurableError("Graphs start once Django is set up (django_durable installed).")
        return _starter(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r} {self.version!r} ({len(self.nodes)} nodes)>"

    def _check_references(self, label: str) -> None:
        known = ", ".join(self.nodes)
        for node in self.nodes.values():
            for up in node.upstream:
                if up == node.name:
                    raise WorkflowDefinitionError(f"{label}: node {node.name!r} depends on itself.")
                if up not in self.nodes:
                    raise WorkflowDefinitionError(
                        f"{label}: node {node.name!r} depends on {up!r}, which is not a node "
                        f"of this graph (nodes: {known})."
                    )
            if isinstance(node, Mutate) and node.target not in self.nodes:
                raise WorkflowDefinitionError(
                    f"{label}: mutate node {node.name!r} targets {node.target!r}, which is "
                    f"not a node of this graph (nodes: {known})."
                )

    def _sorted(self, label: str) -> tuple[str, ...]:
        """Kahn's algorithm; among nodes ready together, the first defined goes first."""
        index = {name: i for i, name in enumerate(self.nodes)}
        waiting = {name: len(node.upstream) for name, node in self.nodes.items()}
        dependents: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for up in node.upstream:
                dependents[up].append(node.name)
        ready = [index[name] for name, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        names = list(self.nodes)
        order: list[str] = []
        while ready:
            name = names[heapq.heappop(ready)]
            order.append(name)
            for down in dependents[name]:
                waiting[down] -= 1
                if waiting[down] == 0:
                    heapq.heappush(ready, index[down])
        if len(order) < len(self.nodes):
            cycle = self._find_cycle({n for n in self.nodes if n not in set(order)})
            raise WorkflowDefinitionError(f"{label} has a cycle: {' -> '.join(cycle)}.")
        return tuple(order)

    def _find_cycle(self, remaining: set[str]) -> list[str]:
        """One cycle among `remaining` (nodes Kahn's algorithm could not place)."""
        # Every remaining node has a remaining upstream; walk upstream until a repeat.
        start = next(name for name in self.nodes if name in remaining)
        path: list[str] = []
        seen: dict[str, int] = {}
        name = start
        while name not in seen:
            seen[name] = len(path)
            path.append(name)
            name = next(up for up in self.nodes[name].upstream if up in remaining)
        cycle = path[seen[name] :] + [name]
        cycle.reverse()  # walked upstream; show it the way values flow
        return cycle

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except (KeyError, TypeError):
            raise UnknownNode(
                f"Graph {self.name!r} {self.version!r} has no node {name!r} "
                f"(nodes: {', '.join(self.nodes)})."
            ) from None

    def downstream(self, name: str) -> tuple[str, ...]:
        """Every node that depends on `name`, directly or not, in topological order."""
        self.node(name)
        found: set[str] = set()
        stack = [name]
        while stack:
            for down in self._dependents[stack.pop()]:
                if down not in found:
                    found.add(down)
                    stack.append(down)
        return tuple(sorted(found, key=self._position.__getitem__))

    def computed(self) -> tuple[str, ...]:
        """The nodes that are not inputs, in topological order."""
        return tuple(name for name in self.order if not isinstance(self.nodes[name], Input))

    def inputs(self) -> tuple[str, ...]:
        """The input nodes, in topological order."""
        return tuple(name for name in self.order if isinstance(self.nodes[name], Input))


def graph(name: str, version: str, nodes: Iterable[Node], *, description: str = "") -> Graph:
    """Define a graph and register it under `(name, version)`."""
    definition = Graph(name, version, nodes, description=description)
    definition.origin = _caller_origin(1)
    register(definition)
    return definition


def _caller_origin(depth: int) -> str:
    """`module:line` of the caller `depth` frames above the function calling this one."""
    frame = sys._getframe(depth + 1)
    return f"{frame.f_globals.get('__name__', '')}:{frame.f_lineno}"


# --- Registry -----------------------------------------------------------------------

_graphs: dict[tuple[str, str], Graph] = {}


def register(g: Graph) -> None:
    """Register a graph; the same (name, version) defined elsewhere is an error.

    Re-running the same definition (Django's autoreloader, a module imported twice)
    replaces it, and it becomes the most recently registered version of its name.
    """
    key = (g.name, g.version)
    existing = _graphs.get(key)
    if existing is not None and existing.origin != g.origin:
        raise WorkflowDefinitionError(
            f"A graph named {g.name!r} version {g.version!r} is already defined at "
            f"{existing.origin}; (name, version) must be unique."
        )
    _graphs.pop(key, None)
    _graphs[key] = g


def unregister(name: str, version: str) -> None:
    _graphs.pop((name, version), None)


def get(name: str, version: str | None = None) -> Graph:
    """The graph registered as (name, version); without a version, the most recently
    registered version of that name."""
    if version is not None:
        found = _graphs.get((name, version))
    else:
        found = next((g for (n, _), g in reversed(_graphs.items()) if n == name), None)
    if found is not None:
        return found
    versions = [v for (n, v) in _graphs if n == name]
    if versions:
        detail = f"versions of {name!r}: {', '.join(versions)}"
    else:
        detail = f"known graphs: {', '.join(sorted({n for n, _ in _graphs})) or 'none'}"
    wanted = f"{name!r} version {version!r}" if version is not None else f"{name!r}"
    raise UnknownWorkflow(f"No graph {wanted} is registered ({detail}).")


def all_graphs() -> list[Graph]:
    """Every registered graph, by name, then in the order its versions were registered."""
    position = {key: i for i, key in enumerate(_graphs)}
    return sorted(_graphs.values(), key=lambda g: (g.name, position[(g.name, g.version)]))
