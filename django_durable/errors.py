"""The errors django-durable raises or records, under one base class."""

import traceback


class DurableError(Exception):
    """Base class: `except DurableError` catches everything this package raises."""


class NonRetryableError(DurableError):
    """Raise (or subclass) this from a step for a failure that retrying cannot fix.

    The step fails at once, whatever its retry policy. Any exception with a class
    attribute `retryable = False` is treated the same way.
    """

    retryable = False


class WorkflowDefinitionError(DurableError, ValueError):
    """A workflow, step or wait is defined wrongly (duplicate or too long a name, a bad
    option, ...); raised when it is defined or called, never later by the database."""


class UnknownWorkflow(DurableError):
    """No workflow is registered under the given name."""


class InvalidWorkflowInput(DurableError):
    """The input given to `start` is not a dict or cannot be stored."""


class ContextNotSerializable(DurableError):
    """A value in a context cannot be stored as JSON."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


class ExecutionNotFound(DurableError):
    """No execution has the given id."""


class ExecutionNotActive(DurableError):
    """The execution has finished, so it cannot be changed any more."""


class ExecutionNotResumable(DurableError):
    """Only failed or cancelled executions can be resumed."""


class StepTimeout(DurableError):
    """A step attempt ran longer than the step's timeout."""


class WorkflowTimeout(DurableError):
    """An execution did not finish before its workflow timeout."""


class StepReturnedInvalidValue(DurableError):
    """A step returned something other than a dict or None."""


class NotInStep(DurableError):
    """A wait was called outside a running workflow step."""


class WaitInsideTransaction(DurableError):
    """A wait was called inside the step's own `transaction.atomic()` block.

    Parking would roll back the wait's own record, so the step fails instead (at once:
    retrying would hit the same wall). Wait outside the block.
    """

    retryable = False


class InvalidEventName(DurableError, ValueError):
    """An event name must be a non-empty string."""


class InputNotPending(DurableError):
    """No pending input by that name: never asked, already answered, or timed out."""


class InvalidInput(DurableError):
    """A response does not fit the input's type, choices or form fields."""


class InputTimedOut(DurableError):
    """An input with `on_timeout="fail"` got no answer in time; the step fails."""

    retryable = False


class InvalidTransition(DurableError):
    """An execution was asked to move between statuses the status machine does not
    allow (a bug in django-durable, never the user's doing)."""


class WorkerError(DurableError):
    """The worker cannot start (for example, a second worker on one SQLite file)."""


class NoBranchMatched(NonRetryableError):
    """A branch's `on(ctx)` gave a value none of its cases has, and it has no default."""


class WaitCancelled(NonRetryableError):
    """The wait this step is parked on was withdrawn (`cancel_wait`); `.reason` says
    why. The step may catch it and go on; uncaught, it fails the step without retries
    (the wait stays withdrawn)."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(f"The wait was cancelled: {reason}")
        self.reason = reason


class NoOpenWait(DurableError):
    """`cancel_wait` found no open event wait or pending input of that name."""


class ValueNotSet(DurableError):
    """`graphs.get_value`: the node has no value (yet, or newer than asked for)."""


class ChildWorkflowFailed(DurableError):
    """A child workflow called with `call_workflow` did not complete: it failed, was
    cancelled or compensated, or (`status == "timed_out"`) the call's timeout passed
    first and the child was cancelled."""

    def __init__(self, message: str, execution_id=None, status: str = "", error=None):
        super().__init__(message)
        self.execution_id = execution_id
        self.status = status
        self.error = error


class BlockFailed(NonRetryableError):
    """A parallel branch or a foreach item failed, so its block fails (on_error
    "fail_fast"). `.unit` names the branch or item, `.error` is its error record."""

    def __init__(self, message: str, unit: str = "", error: dict | None = None):
        super().__init__(message)
        self.unit = unit
        self.error = error or {}


def error_record(exc: BaseException, prefix: str = "") -> dict:
    """How an error is stored: its type, message and traceback (NUL-free for PostgreSQL)."""
    return {
        "type": type(exc).__name__,
        "message": _storable(prefix + str(exc)),
        "traceback": _storable("".join(traceback.format_exception(exc))),
    }


def _storable(text: str) -> str:
    return text.replace("\x00", "\\x00")
