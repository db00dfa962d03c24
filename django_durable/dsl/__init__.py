"""Workflow definitions: nodes, retry policies and the graph they compile into.

Nothing here touches the database; the engine runs what these objects describe.
"""

from .definition import Workflow, workflow
from .graph import Graph
from .moves import END, End, Goto, Move, Next
from .nodes import Step, step
from .retry import Retry

__all__ = [
    "END",
    "End",
    "Goto",
    "Graph",
    "Move",
    "Next",
    "Retry",
    "Step",
    "Workflow",
    "step",
    "workflow",
]
