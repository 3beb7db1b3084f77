"""The recorded history of one workflow run: an ordered list of events.

Event ``seq`` 0 is the start (arguments, random seed, rules version); event
``seq`` n >= 1 is the outcome of the n-th command the workflow yielded; the
last event, once the run ends, is its result. See ``docs/history.md``.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import attrs

from . import payloads

# Version of the replay rules that wrote a history (what is checked, how ids
# are assigned). Recorded in every start event so checks can grow stricter
# without breaking histories written under older rules.
RULES_VERSION = 1

START = "start"
RESULT = "result"

OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"


class Status(str, enum.Enum):
    """Where a workflow run stands."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self is not Status.RUNNING


# A NamedTuple, not an attrs class: one is built for every step recorded and every
# row replayed, and a NamedTuple is five times cheaper to build than a frozen attrs class.
class Event(NamedTuple):
    """One recorded step. ``outcome`` is ``ok``, ``error`` or ``timeout``."""

    seq: int
    kind: str
    name: str
    at: float
    outcome: str
    encoding: str
    payload: str | bytes

    def value(self) -> Any:
        """The decoded payload (for ``error`` events, the error record dict)."""
        return payloads.decode(self.encoding, self.payload)

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}" if self.name else self.kind


@attrs.frozen
class WorkflowInfo:
    """A workflow run as the store lists it."""

    workflow_id: str
    name: str
    status: Status
    created_at: float
    updated_at: float
