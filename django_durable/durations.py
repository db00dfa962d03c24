"""Durations given as timedelta or as a number of seconds."""

from datetime import timedelta

from .errors import WorkflowDefinitionError


def to_timedelta(value: timedelta | int | float | None, what: str) -> timedelta | None:
    """Normalise a duration option; reject negatives and non-durations with a clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise WorkflowDefinitionError(
            f"{what} must be a timedelta or a number of seconds, not {type(value).__name__}."
        )
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta <= timedelta():
        raise WorkflowDefinitionError(f"{what} must be positive, got {delta}.")
    return delta
