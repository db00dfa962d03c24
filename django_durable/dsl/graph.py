"""The graph a workflow's nodes compile into.

Every node gets a stable, unique, readable id (a top-level node is its name; nodes
nested in a container get path-like ids, `container/part/step`), and the graph says
which node follows which. The engine asks it where an execution starts and what comes
after a node; the answer is a move (`moves`). Nothing here touches the database.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import NonRetryableError, WorkflowDefinitionError
from . import names
from .moves import END, Goto, Move


class Node(Protocol):
    """What every kind of node offers the graph."""

    name: str

    def compile(self, graph: "Graph", prefix: str, follow: str | None) -> str: ...

    def enter(self, graph: "Graph", node_id: str, context: "Context") -> Move: ...


# The context a node may route on, loaded only if a node asks: a fresh decode of what was
# stored, so routing sees what a step would (most nodes, plain steps, never look).
Context = Callable[[], dict]


@dataclass(frozen=True)
class MemberResult:
    """How one member of a fork (a parallel branch, a foreach item) ended."""

    index: int
    status: str  # "completed", "failed" or "cancelled"
    data: Any = None
    error: dict | None = None
    finished_at: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def as_result(self) -> list:
        """`["ok", data]` or `["error", {"type", "message"}]`, as SPEC stores results."""
        if self.ok:
            return ["ok", self.data]
        error = self.error or {"type": "Cancelled", "message": "The branch was cancelled."}
        return ["error", {"type": error.get("type", ""), "message": error.get("message", "")}]


class Unit(Protocol):
    """What the engine hands a node that runs: where it is, and the durable state a
    container node needs (its members' results, an item's value and its block's context)."""

    node_id: str
    graph: "Graph"
    item: Any
    index: int | None

    def members(self) -> Sequence[MemberResult] | None: ...

    def parent_context(self) -> dict: ...


class GotoUnknownNode(NonRetryableError):
    """A decision jumped to a name that is not a node of its list."""


class Graph:
    """Nodes by id, the node that follows each, and what containers hold."""

    def __init__(self, workflow_name: str) -> None:
        self.workflow_name = workflow_name
        self.nodes: dict[str, Any] = {}
        self.follows: dict[str, str | None] = {}
        self.order: dict[str, int] = {}
        # The ids of the nodes in the same list as each node, by name (goto targets).
        self.scopes: dict[str, dict[str, str]] = {}
        # For a container: the entry of each of its parts (cases, branches, the item).
        self.parts: dict[str, dict[Any, str | None]] = {}
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
        self.order[node_id] = len(self.order)
        return node_id

    def compile(self, nodes: list[Node], prefix: str = "", follow: str | None = None) -> str | None:
        """Add nodes that run one after the other, the last followed by `follow`;
        returns the first one's id (or `follow` for an empty list).

        A node's id is `prefix + name`, so each node can be told its follower's id as
        it is added; a container adds its own parts under `its id + "/"`.
        """
        ids = [prefix + node.name for node in nodes]
        scope = {node.name: node_id for node, node_id in zip(nodes, ids, strict=True)}
        for index, node in enumerate(nodes):
            self.scopes[ids[index]] = scope
            after = ids[index + 1] if index + 1 < len(ids) else follow
            node.compile(self, prefix, after)
        return ids[0] if ids else follow

    def resolve(self, node_id: str | None, context: Context) -> Move:
        """The move that reaching `node_id` (None: past the end) makes."""
        if node_id is None:
            return END
        return self.nodes[node_id].enter(self, node_id, context)

    def jump(self, from_id: str, name: str, context: dict) -> Goto:
        """A goto from node `from_id` to the node called `name` in its list."""
        target = self.scopes.get(from_id, {}).get(name)
        if target is None:
            known = ", ".join(sorted(self.scopes.get(from_id, {})))
            raise GotoUnknownNode(
                f"Workflow {self.workflow_name!r}: {from_id!r} jumped to {name!r}, which is "
                f"not a node of its list (known: {known})."
            )
        return Goto(target, context)

    def is_backward(self, from_id: str, to_id: str) -> bool:
        """Whether going from one node to another goes back (a loop)."""
        return self.order[to_id] <= self.order[from_id]
