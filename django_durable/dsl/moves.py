"""What a workflow's graph answers when the engine asks what comes next.

The engine runs steps and nothing else; every other kind of node (branch, decision,
parallel, foreach) resolves, when reached, into one of these moves, so a new kind of
node is a new case here and a new transition at the door, not a change to the engine.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Next:
    """Run the step with this node id next."""

    node_id: str


@dataclass(frozen=True)
class Goto:
    """Run the step with this node id next, on this context instead of the stored one
    (a decision's jump, forward or back)."""

    node_id: str
    context: dict


@dataclass(frozen=True)
class End:
    """Nothing follows: the execution is complete."""


END = End()

Move = Next | Goto | End
