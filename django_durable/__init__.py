"""django-durable: durable, resumable workflows stored in your Django database.

Definitions (`workflow`, `step`, `Retry`) import without Django being set up; the
engine functions (`start`, `get_execution`, ...) load on first use, because they need
the app registry.
"""

from importlib import import_module
from typing import Any

from .dsl import Retry, Step, Workflow, step, workflow
from .errors import (
    ContextNotSerializable,
    DurableError,
    ExecutionNotActive,
    ExecutionNotFound,
    ExecutionNotResumable,
    InvalidWorkflowInput,
    StepReturnedInvalidValue,
    StepTimeout,
    UnknownWorkflow,
    WorkflowDefinitionError,
    WorkflowTimeout,
)

_ENGINE_API = ("start", "get_execution", "list_executions", "cancel", "resume")

__all__ = [
    "ContextNotSerializable",
    "DurableError",
    "ExecutionNotActive",
    "ExecutionNotFound",
    "ExecutionNotResumable",
    "InvalidWorkflowInput",
    "Retry",
    "Step",
    "StepReturnedInvalidValue",
    "StepTimeout",
    "UnknownWorkflow",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowTimeout",
    "step",
    "workflow",
    *_ENGINE_API,
]


def __getattr__(name: str) -> Any:
    if name in _ENGINE_API:
        return getattr(import_module(".engine", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
