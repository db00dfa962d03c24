"""Workflow definitions: what runs, in which order, with which policies.

Nothing here touches the database; `engine` runs what these objects describe.
"""

import random
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .durations import to_timedelta
from .errors import WorkflowDefinitionError

BACKOFFS = ("exponential", "linear", "constant")
JITTER_SPREAD = 0.25


@dataclass(frozen=True)
class Retry:
    """How often a failing step is attempted, and how long to wait between attempts.

    The delay before attempt n+1 is `base * 2**n` (exponential), `base * n` (linear) or
    `base` (constant), capped at `max_backoff`; `jitter` spreads it by +/-25% so that
    many executions failing together do not retry in lockstep.
    """

    max_attempts: int = 1
    backoff: str = "exponential"
    base: timedelta | int | float = timedelta(seconds=1)
    max_backoff: timedelta | int | float = timedelta(minutes=5)
    jitter: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise WorkflowDefinitionError("Retry max_attempts must be an int.")
        if self.max_attempts < 1:
            raise WorkflowDefinitionError("Retry max_attempts must be at least 1.")
        if self.backoff not in BACKOFFS:
            raise WorkflowDefinitionError(
                f"Retry backoff must be one of {', '.join(BACKOFFS)}, not {self.backoff!r}."
            )
        object.__setattr__(self, "base", to_timedelta(self.base, "Retry base"))
        object.__setattr__(self, "max_backoff", to_timedelta(self.max_backoff, "Retry max_backoff"))

    @classmethod
    def coerce(cls, value: "Retry | Mapping[str, Any] | None") -> "Retry | None":
        """Accept a Retry, a dict of Retry's keywords, or None."""
        if value is None or isinstance(value, Retry):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise WorkflowDefinitionError(f"Unknown Retry option(s): {sorted(unknown)}.")
            return cls(**value)
        raise WorkflowDefinitionError(
            f"retry must be a Retry or a dict, not {type(value).__name__}."
        )

    def delay_after(self, attempt: int) -> timedelta:
        """The wait before the attempt that follows failed attempt number `attempt`."""
        base = self.base.total_seconds()
        if self.backoff == "exponential":
            # Cap the exponent too: 2**n overflows a timedelta long before max_attempts does.
            seconds = base * 2 ** min(attempt, 64)
        elif self.backoff == "linear":
            seconds = base * attempt
        else:
            seconds = base
        if self.jitter:
            seconds *= random.uniform(1 - JITTER_SPREAD, 1 + JITTER_SPREAD)
        return timedelta(seconds=min(seconds, self.max_backoff.total_seconds()))


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
        if not isinstance(self.name, str) or not self.name:
            raise WorkflowDefinitionError("A step name must be a non-empty string.")
        self.retry = Retry.coerce(self.retry)
        self.timeout = to_timedelta(self.timeout, f"Step {self.name!r} timeout")
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise WorkflowDefinitionError(f"Step {self.name!r}: queue must be a non-empty string.")

    def __call__(self, ctx: dict) -> dict | None:
        return self.fn(ctx)


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


@dataclass
class Workflow:
    """A named, registered sequence of nodes. Build it with `workflow(...)`."""

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
    _by_name: dict[str, Step] = field(default_factory=dict, repr=False)
    _next: dict[str, str | None] = field(default_factory=dict, repr=False)

    def start(self, input: dict | None = None, **options: Any) -> uuid.UUID:
        """Start an execution of this workflow; see `django_durable.start`."""
        from .engine import start

        return start(self, input, **options)

    @property
    def first_step(self) -> str:
        return self.nodes[0].name

    def get_step(self, name: str) -> Step:
        try:
            return self._by_name[name]
        except KeyError:
            raise WorkflowDefinitionError(
                f"Workflow {self.name!r} has no step {name!r}; was it renamed while "
                "executions were running?"
            ) from None

    def step_after(self, name: str) -> str | None:
        """The step that runs after `name` completes, or None at the end."""
        return self._next[name]

    def step_names(self) -> list[str]:
        return [node.name for node in self.nodes]


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
    from . import registry

    if not isinstance(name, str) or not name:
        raise WorkflowDefinitionError("A workflow name must be a non-empty string.")
    if not isinstance(queue, str) or not queue:
        raise WorkflowDefinitionError(f"Workflow {name!r}: queue must be a non-empty string.")
    steps = [_as_step(name, node) for node in nodes]
    if not steps:
        raise WorkflowDefinitionError(f"Workflow {name!r} has no steps.")
    compensations = tuple(compensations)
    for compensation in compensations:
        if not callable(compensation):
            raise WorkflowDefinitionError(
                f"Workflow {name!r}: compensation {compensation!r} is not callable."
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
    _link(definition)
    registry.register(definition)
    return definition


def _as_step(workflow_name: str, node: Any) -> Step:
    if isinstance(node, Step):
        return node
    if callable(node):
        return step(node)
    raise WorkflowDefinitionError(
        f"Workflow {workflow_name!r}: {node!r} is not a step; give a function or step(...)."
    )


def _link(definition: Workflow) -> None:
    """Index steps by name and chain them, checking names and compensations."""
    compensation_names = {fn.__name__ for fn in definition.compensations}
    for index, node in enumerate(definition.nodes):
        if node.name in definition._by_name:
            raise WorkflowDefinitionError(
                f"Workflow {definition.name!r} has two steps named {node.name!r}; "
                "give one a name with step(fn, name=...)."
            )
        if isinstance(node.compensate, str) and node.compensate not in compensation_names:
            raise WorkflowDefinitionError(
                f"Workflow {definition.name!r}: step {node.name!r} compensates with "
                f"{node.compensate!r}, which is not in the workflow's compensations."
            )
        if node.compensate is not None and not isinstance(node.compensate, str):
            if not callable(node.compensate):
                raise WorkflowDefinitionError(
                    f"Workflow {definition.name!r}: step {node.name!r} compensate must be a "
                    "function or the name of one."
                )
        definition._by_name[node.name] = node
        following = definition.nodes[index + 1] if index + 1 < len(definition.nodes) else None
        definition._next[node.name] = following.name if following else None


def _caller_origin() -> str:
    """Where `workflow(...)` was called, to tell a re-import from a real duplicate."""
    frame = sys._getframe(2)
    return f"{frame.f_globals.get('__name__', '')}:{frame.f_lineno}"
