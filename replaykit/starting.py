"""A run's start event: the arguments, the random seed and the options it records."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import payloads
from .history import RULES_VERSION

if TYPE_CHECKING:
    from .workflow import Workflow


def start_payload(wf: Workflow[Any], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                  timeout: timedelta | float | None = None, start_at: float | None = None,
                  parent: tuple[str, int] | None = None, continued: bool = False,
                  generation: int = 1) -> tuple[str, str | bytes]:
    """The start event's payload: the arguments, the run's random seed and options."""
    start: dict[str, Any] = {"args": list(args), "kwargs": kwargs, "seed": random.getrandbits(63),
                             "rules": RULES_VERSION}
    if continued:
        start["continued"] = True
    if generation > 1:
        start["generation"] = generation
    if timeout is not None:
        start["timeout"] = seconds(timeout)
    if start_at is not None:
        start["start_at"] = start_at
    if parent is not None:
        start["parent"] = list(parent)
    return payloads.encode(start, f"arguments of workflow {wf.name!r}")


def seconds(value: timedelta | float) -> float:
    """A duration given as a timedelta or a number of seconds, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
