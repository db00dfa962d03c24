"""Names that go into the database, checked when they are defined or passed in.

The limits are the columns' lengths (`models` asserts they agree), so a name that is
too long is a clear definition error at once, never a database error later.
"""

from typing import Any

from ..errors import WorkflowDefinitionError

WORKFLOW_NAME = 200
VERSION = 50
QUEUE = 100
NODE_ID = 200
EVENT_NAME = 200
INPUT_NAME = 200
IDEMPOTENCY_KEY = 255


def checked_name(value: Any, what: str, limit: int) -> str:
    """`value` if it is a non-empty string of at most `limit` characters."""
    if not isinstance(value, str) or not value:
        raise WorkflowDefinitionError(f"{what} must be a non-empty string, not {value!r:.80}.")
    if len(value) > limit:
        raise WorkflowDefinitionError(
            f"{what} {value[:40]!r}... is {len(value)} characters long; the limit is {limit}."
        )
    return value
