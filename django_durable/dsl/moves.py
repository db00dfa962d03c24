"""What a workflow's graph answers when the engine asks what comes next.

The engine runs nodes and follows the move each one makes (or, for a node that makes
none, the move the graph makes after it). A new kind of node is a new case in the DSL
and, when it needs one, a new move here with a new transition at the door, never a
change to the attempt loop.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Next:
    """Run the node with this id next, on the context as stored."""

    node_id: str


@dataclass(frozen=True)
class Goto:
    """Run the node with this id next, on this context instead of the stored one (a
    decision's jump, forward or back). Inside a decision, `goto("name", ctx)` names a
    node of the decision's own list; the decision resolves it to an id."""

    node_id: str
    context: dict


@dataclass(frozen=True)
class End:
    """Nothing follows: the execution is complete."""


@dataclass(frozen=True)
class Park:
    """Nothing to run now, and no time to wake at: the execution waits until something
    from outside (a value set in a graph) makes work for it."""


@dataclass(frozen=True)
class Member:
    """One unit a fork starts: a parallel branch or a foreach item, run as its own
    execution row from node `entry`. A branch starts on `context`; an item carries its
    `item` and reads the block's context from its parent."""

    entry: str
    index: int
    context: dict = field(default_factory=dict)
    item: Any = None


@dataclass(frozen=True)
class Fork:
    """Start `members` under the execution and park it until the last one finishes;
    then the forking node runs again and joins their results. At most `concurrency`
    members run at once (None: all)."""

    kind: str  # "branch" or "item", the members' ExecutionKind
    members: tuple[Member, ...]
    concurrency: int | None = None


END = End()

Move = Next | Goto | End | Fork | Park


def goto(name: str, context: dict) -> Goto:
    """Jump from a decision (or a parallel block's `into`) to the node called `name` in
    the same list, forward or back, with `context` as the new context."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"goto() needs the name of a node, not {name!r:.80}.")
    if not isinstance(context, dict):
        raise TypeError(f"goto() needs the new context (a dict), not {type(context).__name__}.")
    return Goto(name, context)
