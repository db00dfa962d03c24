"""django-durable: durable, resumable workflows stored in your Django database.

Definitions (`workflow`, `step`, `Retry`) import without Django being set up; the
engine functions (`start`, `get_execution`, ...) load on first use, because they need
the app registry.
"""

from .dsl import (
    DEFAULT,
    Retry,
    Step,
    Workflow,
    branch,
    cron,
    decision,
    foreach,
    goto,
    parallel,
    step,
    workflow,
)
from .errors import (
    BlockFailed,
    ChildWorkflowFailed,
    ContextNotSerializable,
    DurableError,
    ExecutionNotActive,
    ExecutionNotFound,
    ExecutionNotResumable,
    InputNotPending,
    InputTimedOut,
    InvalidEventName,
    InvalidInput,
    InvalidWorkflowInput,
    NoBranchMatched,
    NonRetryableError,
    NoOpenWait,
    NotInStep,
    StepReturnedInvalidValue,
    StepTimeout,
    UnknownWorkflow,
    WaitCancelled,
    WaitInsideTransaction,
    WorkflowDefinitionError,
    WorkflowTimeout,
)
from .lazy import attributes

_LAZY_API = {
    "start": "starting",
    "get_execution": "executions",
    "list_executions": "executions",
    "cancel": "executions",
    "resume": "executions",
    "send_event": "events",
    "provide_input": "inputs",
    "list_pending_inputs": "inputs",
    "call_workflow": "orchestration",
    "start_workflow": "orchestration",
    "list_children": "orchestration",
    "list_pending_events": "waits",
    "cancel_wait": "waits",
}

__all__ = [
    "DEFAULT",
    "BlockFailed",
    "ChildWorkflowFailed",
    "ContextNotSerializable",
    "DurableError",
    "ExecutionNotActive",
    "ExecutionNotFound",
    "ExecutionNotResumable",
    "InputNotPending",
    "InputTimedOut",
    "InvalidEventName",
    "InvalidInput",
    "InvalidWorkflowInput",
    "NoBranchMatched",
    "NoOpenWait",
    "NonRetryableError",
    "NotInStep",
    "Retry",
    "Step",
    "StepReturnedInvalidValue",
    "StepTimeout",
    "UnknownWorkflow",
    "WaitCancelled",
    "WaitInsideTransaction",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowTimeout",
    "branch",
    "cron",
    "decision",
    "foreach",
    "goto",
    "parallel",
    "step",
    "workflow",
    *_LAZY_API,
]


__getattr__ = attributes(__name__, _LAZY_API)
