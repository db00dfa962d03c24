"""Workflow definitions: a name, options, and the graph its nodes compile into.

`workflow(...)` builds a `Workflow` and registers it. The engine only ever asks it two
questions: where does an execution start (`entry`), and what comes after a step
(`after`); both answer with a move.
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
from .cron import Cron
from .graph import Context, Graph
from .moves import Move
from .nodes import Step, as_node
from .retry import Retry


@dataclass
class Workflow:
    """A named, registered graph of nodes. Build it with `workflow(...)`."""

    name: str
    nodes: list[Any]
    timeout: timedelta | None = None
    queue: str = "default"
    retry: Retry | None = None
    compensations: tuple[Callable, ...] = ()
    schedule: Cron | None = None
    version: str = "1"
    description: str = ""
    origin: str = ""
    graph: Graph = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.graph = Graph(self.name)
        self.graph.entry_id = self.graph.compile(self.nodes)

    def start(self, input: dict | None = None, **options: Any) -> uuid.UUID:
        """Start an execution of this workflow; see `django_durable.start`."""
        from ..starting import start  # deferred: definitions load before Django is set up

        return start(self, input, **options)

    def entry(self, context: Context) -> Move:
        """Where an execution with this input starts."""
        return self.graph.resolve(self.graph.entry_id, context)

    def after(self, node_id: str, context: Context) -> Move:
        """What comes after the step `node_id` completed; `context()` loads the stored
        context for a node that routes on it."""
        self.node(node_id)
        return self.graph.resolve(self.graph.follows[node_id], context)

    def node(self, node_id: str) -> Step:
        try:
            return self.graph.nodes[node_id]
        except KeyError:
            raise WorkflowDefinitionError(
                f"Workflow {self.name!r} has no step {node_id!r}; was it renamed while "
                "executions were running?"
            ) from None

    def compensation_for(self, node_id: str) -> Step | None:
        """The compensation of the step `node_id` as a step (with its own retry policy
        and timeout), or None if that step has none."""
        compensate = getattr(self.node(node_id), "compensate", None)
        if compensate is None:
            return None
        if isinstance(compensate, str):
            compensate = next(
                fn for fn in self.compensations if compensation_name(fn) == compensate
            )
        if isinstance(compensate, Step):
            return compensate
        return Step(fn=compensate, name=compensation_name(compensate))

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
    schedule: Cron | None = None,
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
    if schedule is not None and not isinstance(schedule, Cron):
        raise WorkflowDefinitionError(
            f"Workflow {name!r}: schedule must be cron(...), not {schedule!r:.80}."
        )
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
    known = {compensation_name(fn) for fn in definition.compensations}
    for node_id, node in definition.graph.nodes.items():
        compensate = getattr(node, "compensate", None)
        if isinstance(compensate, str) and compensate not in known:
            raise WorkflowDefinitionError(
                f"Workflow {definition.name!r}: step {node_id!r} compensates with "
                f"{compensate!r}, which is not in the workflow's compensations."
            )


def compensation_name(fn: Callable) -> str:
    """A compensation's name: a step's own name, else the function's."""
    return fn.name if isinstance(fn, Step) else getattr(fn, "__name__", repr(fn))


def _caller_origin() -> str:
    """Where `workflow(...)` was called, to tell a re-import from a real duplicate."""
    frame = sys._getframe(2)
    return f"{frame.f_globals.get('__name__', '')}:{frame.f_lineno}"
