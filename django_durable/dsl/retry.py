"""Retry policies: how often a failing step is attempted, and when."""

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..durations import to_timedelta
from ..errors import WorkflowDefinitionError

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
