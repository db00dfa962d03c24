"""Workflows by name, filled by `workflow(...)` as each app's `workflows.py` is imported.

It knows definitions only by their `name` and `origin`, so it sits below the DSL that
fills it and the engine that reads it.
"""

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from .errors import UnknownWorkflow, WorkflowDefinitionError


class Definition(Protocol):
    """What the engine needs of a workflow definition (`dsl.Workflow` is the one kind)."""

    name: str
    version: str
    queue: str
    timeout: timedelta | None
    retry: Any
    origin: str

    def entry(self, context: Callable[[], dict]) -> Any: ...

    def after(self, node_id: str, context: Callable[[], dict]) -> Any: ...

    def node(self, node_id: str) -> Any: ...

    def run_queue(self, node_id: str, queue: str) -> str: ...


_workflows: dict[str, Definition] = {}
# How the definition of an execution of another kind is found (a graph's is looked up
# by name and version: `graphs`), registered by the module that owns that kind.
_finders: dict[str, Callable[[Any], Definition]] = {}


def register(definition: Definition) -> None:
    """Register a workflow; a name already defined elsewhere is an error.

    Re-running the same definition (Django's autoreloader, a module imported twice)
    replaces it instead of failing.
    """
    existing = _workflows.get(definition.name)
    if existing is not None and existing.origin != definition.origin:
        raise WorkflowDefinitionError(
            f"A workflow named {definition.name!r} is already defined at {existing.origin}; "
            "workflow names must be unique."
        )
    _workflows[definition.name] = definition


def unregister(name: str) -> None:
    _workflows.pop(name, None)


def get(name_or_workflow: "str | Definition") -> Definition:
    """The registered workflow for a name (or the workflow itself)."""
    if not isinstance(name_or_workflow, str) and hasattr(name_or_workflow, "graph"):
        return name_or_workflow
    try:
        return _workflows[name_or_workflow]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_workflows)) or "none"
        raise UnknownWorkflow(
            f"No workflow named {name_or_workflow!r} is registered (known: {known}). "
            "Is it defined in an installed app's workflows.py?"
        ) from None


def register_kind(kind: str, finder: Callable[[Any], Definition]) -> None:
    _finders[kind] = finder


def for_execution(execution: Any) -> Definition:
    """What an execution runs: its workflow, or what the module owning its kind finds."""
    finder = _finders.get(execution.kind)
    return get(execution.workflow_name) if finder is None else finder(execution)


def all_workflows() -> list[Definition]:
    return sorted(_workflows.values(), key=lambda wf: wf.name)
