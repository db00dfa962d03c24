"""Cron declarations: `workflow(..., schedule=cron("0 9 * * *", timezone=...))`.

Checked when they are written (a bad expression or an unknown zone is a definition
error at once); `django_durable.schedules` keeps them in the database and fires them.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import WorkflowDefinitionError


@dataclass(frozen=True)
class Cron:
    """A schedule as declared in code: when (in which zone), with what input, where."""

    expression: str
    timezone: str = "UTC"
    input: dict = field(default_factory=dict)
    queue: str | None = None

    def __post_init__(self) -> None:
        problem = cron_problem(self.expression, self.timezone)
        if problem:
            raise WorkflowDefinitionError(problem)
        if not isinstance(self.input, dict):
            raise WorkflowDefinitionError("cron(): input must be a dict.")


def cron(
    expression: str, *, timezone: str = "UTC", input: dict | None = None, queue: str | None = None
) -> Cron:
    """Declare when a workflow runs: a cron expression (five fields, or six with
    seconds last) read in `timezone`."""
    return Cron(expression, timezone, input or {}, queue)


def cron_problem(expression: Any, timezone: Any) -> str:
    """Why an expression or a zone cannot be used, or "" if both can."""
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        return f"{expression!r:.80} is not a valid cron expression (e.g. '0 9 * * 1-5')."
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        return f"{timezone!r:.80} is not a known time zone (e.g. 'Europe/Paris')."
    return ""


def next_time(expression: str, timezone: str, after: datetime) -> datetime:
    """The first time strictly after `after` (aware) that the expression names, read as
    wall-clock time in `timezone`, in UTC. A wall time that a spring-forward skips runs
    at the same offset as before the change (02:30 becomes 03:30); a wall time that a
    fall-back repeats runs at its first occurrence only, so every time runs once."""
    zone = ZoneInfo(timezone)
    local = after.astimezone(zone).replace(tzinfo=None)
    times = croniter(expression, local)
    while True:
        wall = times.get_next(datetime)
        candidate = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if candidate > after:
            return candidate
