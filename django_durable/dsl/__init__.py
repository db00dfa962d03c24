"""Workflow definitions: nodes, retry policies and the graph they compile into.

Nothing here touches the database; the engine runs what these objects describe.
"""

from .control import DEFAULT, Branch, Decision, branch, decision
from .cron import Cron, cron
from .definition import Workflow, workflow
from .fanout import Foreach, Parallel, foreach, parallel
from .graph import Graph, MemberResult
from .moves import END, End, Fork, Goto, Member, Move, Next, Park, goto
from .nodes import Step, step
from .retry import Retry

__all__ = [
    "DEFAULT",
    "END",
    "Branch",
    "Cron",
    "Decision",
    "End",
    "Foreach",
    "Fork",
    "Goto",
    "Graph",
    "Member",
    "MemberResult",
    "Move",
    "Next",
    "Parallel",
    "Park",
    "Retry",
    "Step",
    "Workflow",
    "branch",
    "cron",
    "decision",
    "foreach",
    "goto",
    "parallel",
    "step",
    "workflow",
]
