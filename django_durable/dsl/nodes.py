"""Steps, the nodes that do a workflow's work, and what every kind of node shares.

Each kind of node knows how it enters the graph (`compile`), what reaching it means
(`enter`: most nodes are run, as an attempt of their own) and what running it does
(`run`: a step calls its function; containers, in `control` and `fanout`, route or fork).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..durations import to_timedelta
from ..errors import WorkflowDefinitionError
from . import names
from .graph import Context, Graph, Unit
from .moves import Move, Next
from .retry import Retry


class Runnable:
    """What every node the engine runs offers it: its policies (none by default) and
    the rule that reaching it means running it."""

    name: str
    retry: Retry | None = None
    timeout: timedelta | None = None
    compensate: "str | Callable | None" = None
    queue: str | None = None

    @property
    def result_key(self) -> str:
        """The key this node's result has in `__results__` when it runs in parallel."""
        return self.name

    def compile(self, graph: Graph, prefix: str, follow: str | None) -> str:
        """Add this node under `prefix`, followed by `follow`; returns its node id."""
        return graph.add(prefix + self.name, self, follow)

    def enter(self, graph: Graph, node_id: str, context: Context) -> Move:
        """Reaching the node means running it."""
        return Next(node_id)


@dataclass
class Step(Runnable):
    """One durable unit of work: a function of the context, with its own policies."""

    fn: Callable[[dict], dict | None]
    name: str
    retry: Retry | None = None
    timeout: timedelta | None = None
    compensate: str | Callable | None = None
    queue: str | None = None
    returns: str | None = None

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
        if self.returns is not None:
            names.checked_name(self.returns, f"Step {self.name!r}: returns", names.NODE_ID)

    def __call__(self, ctx: dict) -> dict | None:
        return self.fn(ctx)

    @property
    def result_key(self) -> str:
        return self.returns or self.name

    def run(self, ctx: dict, unit: Unit) -> dict | None:
        return self.fn(ctx)


def step(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    retry: Retry | Mapping | None = None,
    timeout: timedelta | int | float | None = None,
    compensate: str | Callable | None = None,
    queue: str | None = None,
    returns: str | None = None,
) -> Any:
    """Declare a step, as `@step`, `@step(...)` or `step(fn, ...)`. `returns` names the
    step's result in `__results__` when it runs in a parallel block."""

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
            returns=returns,
        )

    if fn is None:
        return build
    return build(fn)


def as_node(workflow_name: str, node: Any) -> Any:
    """A node of a workflow's list: a node as it is, a plain function as a step."""
    if hasattr(node, "compile") and hasattr(node, "enter"):
        return node
    if callable(node):
        return step(node)
    raise WorkflowDefinitionError(
        f"Workflow {workflow_name!r}: {node!r} is not a step; give a function or step(...)."
    )
