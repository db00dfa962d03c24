"""The graph a workflow's nodes compile into.

Every node gets a stable, unique, readable id (a top-level step is its name; nodes
nested in a container get path-like ids, `container/part/step`), and the graph says
which node follows which. The engine asks it where an execution starts and what comes
after a step; the answer is a move (`moves`). Nothing here touches the database.
"""

from collections.abc import Callable
from typing import Any, Protocol

from ..errors import WorkflowDefinitionError
from . import names
from .moves import END, Move


class Node(Protocol):
    """What every kind of node offers the graph."""

    name: str

    def compile(self, graph: "Graph", prefix: str, follow: str | None) -> str: ...

    def enter(self, graph: "Graph", node_id: str, context: "Context") -> Move: ...


# The context a node may route on, loaded only if a node asks: a fresh decode of what was
# stored, so routing sees what a step would (most nodes, plain steps, never look).
Context = Callable[[], dict]


class Graph:
    """Nodes by id and the node that follows each."""

    def __init__(self, workflow_name: str) -> None:
        self.workflow_name = workflow_name
        self.nodes: dict[str, Any] = {}
        self.follows: dict[str, str | None] = {}
        self.entry_id: str | None = None

    def add(self, node_id: str, node: Node, follow: str | None) -> str:
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

    def compile(self, nodes: list[Node], prefix: str = "") -> str | None:
        """Add nodes that run one after the other; returns the first one's id.

        A node's id is `prefix + name`, so each node can be told its follower's id as
        it is added; a container adds its own parts under `its id + "/"`.
        """
        ids = [prefix + node.name for node in nodes]
        for index, node in enumerate(nodes):
            follow = ids[index + 1] if index + 1 < len(ids) else None
            node.compile(self, prefix, follow)
        return ids[0] if ids else None

    def resolve(self, node_id: str | None, context: Context) -> Move:
        """The move that reaching `node_id` (None: past the end) makes."""
        if node_id is None:
            return END
        return self.nodes[node_id].enter(self, node_id, context)
