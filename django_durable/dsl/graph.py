"""Workflow definitions compiled into a graph of nodes.

`workflow(...)` turns its list of nodes into a `Graph`: every node gets a stable,
unique, readable id (a top-level step is its name; nodes nested in a container get
path-like ids, `container/part/step`), and the graph says which node follows which.
The engine only ever asks it two questions: where does an execution start (`entry`),
and what comes after a step (`after`). Nothing here touches the database.
"""

import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .. import registry
from ..durations import to_timedelta
from ..errors import WorkflowDefinitionError
from . import names
from .moves import END, Move
from .nodes import Step, as_node
from .retry import Retry


class Graph:
    """Nodes by id and the node that follows each."""

    def __init__(self, workflow_name: str) -> None:
        self.workflow_name = workflow_name
        self.nodes: dict[str, Step] = {}
        self.follows: dict[str, str | None] = {}
        self.entry_id: str | None = None

    def add(self, node_id: str, node: Step, follow: str | None) -> str:
        """Record a node under a new id; called by each node's `compile`."""
        names.checked_name(node_id, f"Workflow {self.workflow_name!r}: node id", names.NODE_ID)
        if node_id in self.nodes:
            raise WorkflowDefinitionError(
                f"Workflow {self.workflow_name!r} has two steps named {node_id!r}; "
                "give one a name with step(fn, name=...)."
            )
        self.nodes[node_id] = node
        self.follows[node_id] = follow
        return node_id

    def compile(self, nodes: list[Step], prefix: str = "") -> str | None:
        """Add nodes that run one after the other; returns the first one's id.

        A node's id is `prefix + name`, so each node can be told its follower's id as
        it is added; a container adds its own parts under `its id + "/"`.
        """
        ids = [prefix + node.name for node in nodes]
        for index, node in enumerate(nodes):
            follow = ids[index + 1] if index + 1 < len(ids) else None
            node.compile(self, prefix, follow)
        return ids[0] if ids else None

    def resolve(self, node_id: str | None, ctx: dict) -> Move:
        """The move that reaching `node_id` (None: past the end) makes."""
        if node_id is None:
            return END
        return self.nodes[node_id].enter(self, node_id, ctx)


@dataclass
class Workflow:
    """A named, registered graph of nodes. Build it with `workflow(...)`."""

    name: str
    nodes: list[Step]
    timeout: timedelta | None = None
    queue: str = "default"
    retry: Retry | None = None
    compensations: tuple[Callable, ...] = ()
    schedule: Any = None
    version: str = "1"
    description: str = ""
    origin: str = ""
    graph: Graph = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.graph = Graph(self.name)
        self.graph.entry_id = self.graph.compile(self.nodes)

    def start(self, input: dict | None = None, **options: Any) -> uuid.UUID:
        """Start an execution of this workflow; see `django_durable.start`."""
        from ..executions import start  # the one call up: definitions load without Django

        return start(self, input, **options)

    def entry(self, ctx: dict) -> Move:
        """Where an execution with this input starts."""
        return self.graph.resolve(self.graph.entry_id, ctx)

    def after(self, node_id: str, ctx: dict) -> Move:
        """What comes after the step `node_id` completed with the context `ctx`."""
        self.node(node_id)
        return self.graph.resolve(self.graph.follows[node_id], ctx)

    def node(self, node_id: str) -> Step:
        try:
            return self.graph.nodes[node_id]
        except KeyError:
            raise WorkflowDefinitionError(
                f"Workflow {self.name!r} has no step {node_id!r}; was it renamed while "
                "executions were running?"
            ) from None

    def node_ids(self) -> list[str]:
        """Every step's node id, in definition order."""
        return list(self.graph.nodes)

    def run_queue(self, node_id: str, queue: str) -> str:
        """Where a step is claimed from: its own queue, else the execution's."""
        return self.node(node_id).queue or queue


def workflow(
    name: str,
    nodes: Iterable[Callable | Step],
    *,
    timeout: timedelta | int | float | None = None,
    queue: str = "default",
    retry: Retry | Mapping | None = None,
    compensations: Iterable[Callable] = (),
    schedule: Any = None,
    version: str = "1",
    description: str = "",
) -> Workflow:
    """Define a workflow and register it under `name`."""
    names.checked_name(name, "A workflow name", names.WORKFLOW_NAME)
    names.checked_name(queue, f"Workflow {name!r}: queue", names.QUEUE)
    names.checked_name(str(version), f"Workflow {name!r}: version", names.VERSION)
    steps = [as_node(name, node) for node in nodes]
    if not steps:
        raise WorkflowDefinitionError(f"Workflow {name!r} has no steps.")
    compensations = _checked_compensations(name, tuple(compensations))
    definition = Workflow(
        name=name,
        nodes=steps,
        timeout=to_timedelta(timeout, f"Workflow {name!r} timeout"),
        queue=queue,
        retry=Retry.coerce(retry),
        compensations=compensations,
        schedule=schedule,
        version=str(version),
        description=description,
        origin=_caller_origin(),
    )
    _check_compensation_names(definition)
    registry.register(definition)
    return definition


def _checked_compensations(name: str, compensations: tuple) -> tuple[Callable, ...]:
    for compensation in compensations:
        if not callable(compensation):
            raise WorkflowDefinitionError(
                f"Workflow {name!r}: compensation {compensation!r} is not callable."
            )
    return compensations


def _check_compensation_names(definition: Workflow) -> None:
    known = {fn.__name__ for fn in definition.compensations}
    for node_id, node in definition.graph.nodes.items():
        if isinstance(node.compensate, str) and node.compensate not in known:
            raise WorkflowDefinitionError(
                f"Workflow {definition.name!r}: step {node_id!r} compensates with "
                f"{node.compensate!r}, which is not in the workflow's compensations."
            )


def _caller_origin() -> str:
    """Where `workflow(...)` was called, to tell a re-import from a real duplicate."""
    frame = sys._getframe(2)
    return f"{frame.f_globals.get('__name__', '')}:{frame.f_lineno}"
