"""The nodes a workflow is made of. Each kind of node knows how it enters the graph
(`compile`) and what runs when the execution reaches it (`enter`)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..durations import to_timedelta
from ..errors import WorkflowDefinitionError
from . import names
from .graph import Context, Graph
from .moves import Move, Next
from .retry import Retry


@dataclass
class Step:
    """One durable unit of work: a function of the context, with its own policies."""

    fn: Callable[[dict], dict | None]
    name: str
    retry: Retry | None = None
    timeout: timedelta | None = None
    compensate: str | Callable | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise WorkflowDefinitionError(f"Step {self.name!r}: {self.fn!r} is not callable.")
        names.checked_name(self.name, "A step name", names.NODE_ID)
        self.retry = Retry.coerce(self.retry)
        self.timeout = to_timedelta(self.timeout, f"Step {self.name!r} timeout")
        if self.queue is not None:
            names.checked_name(self.queue, f"Step {self.name!r}: queue", names.QUEUE)
        if self.compensate is not None and not isinstance(self.compensate, str):
            if not callable(self.compensate):
                raise WorkflowDefinitionError(
                    f"Step {self.name!r}: compensate must be a function or the name of one."
                )

    def __call__(self, ctx: dict) -> dict | None:
        return self.fn(ctx)

    def compile(self, graph: Graph, prefix: str, follow: str | None) -> str:
        """Add this step under `prefix`, followed by `follow`; returns its node id."""
        return graph.add(prefix + self.name, self, follow)

    def enter(self, graph: Graph, node_id: str, context: Context) -> Move:
        """Reaching a step means running it."""
        return Next(node_id)


def step(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    retry: Retry | Mapping | None = None,
    timeout: timedelta | int | float | None = None,
    compensate: str | Callable | None = None,
    queue: str | None = None,
) -> Any:
    """Declare a step, as `@step`, `@step(...)` or `step(fn, ...)`."""

    def build(function: Callable) -> Step:
        if isinstance(function, Step):
            function = function.fn
        return Step(
            fn=function,
            name=name or getattr(function, "__name__", ""),
            retry=retry,
            timeout=timeout,
            compensate=compensate,
            queue=queue,
        )

    if fn is None:
        return build
    return build(fn)


def as_node(workflow_name: str, node: Any) -> Step:
    """A node of a workflow's list: a node as it is, a plain function as a step."""
    if isinstance(node, Step):
        return node
    if callable(node):
        return step(node)
    raise WorkflowDefinitionError(
        f"Workflow {workflow_name!r}: {node!r} is not a step; give a function or step(...)."
    )
