"""The recorded history of one workflow run: an ordered list of events.

Events are numbered by their position (``seq``: 0 is the start, with arguments,
random seed and rules version). Each outcome names the ``step`` it answers: the
number of the command in the workflow's own yield order (commands of a parallel
group get consecutive steps), so completions can be recorded in the order they
happened while ids never depend on it. The last event, once the run ends, is its
result. See ``docs/history.md``.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import attrs

from . import converters, payloads

# Version of the replay rules that wrote a history (what is checked, how ids
# are assigned). Recorded in every start event so checks can grow stricter
# without breaking histories written under older rules.
RULES_VERSION = 2

START = "start"
RESULT = "result"
CANCEL = "cancel"  # a cancellation (or run timeout) delivered at the current yield
PATCH = "patch"  # a ctx.patched() marker

OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"
CONTINUED = "continued"  # result outcome of a run that continued as new


class Status(str, enum.Enum):
    """Where a workflow run stands. Terminal statuses are absorbing."""

    PENDING = "pending"  # created, to start later (start_at / start_delay)
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    CONTINUED = "continued"  # replaced by a fresh run of the same workflow id

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def can_become(self, other: Status) -> bool:
        """Is ``self -> other`` a legal transition?"""
        return other in _TRANSITIONS[self]


_TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT, Status.CONTINUED})
_ENDINGS = {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT, Status.CONTINUED}
_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.PAUSED, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.PAUSED} | _ENDINGS),
    Status.PAUSED: frozenset({Status.RUNNING} | _ENDINGS),
    **{s: frozenset() for s in _TERMINAL},
}


# A NamedTuple, not an attrs class: one is built for every step recorded and every
# row replayed, and a NamedTuple is five times cheaper to build than a frozen attrs class.
class Event(NamedTuple):
    """One recorded event. ``outcome`` is ``ok``, ``error``, ``timeout`` (or ``continued``)."""

    seq: int
    step: int
    kind: str
    name: str
    at: float
    outcome: str
    encoding: str
    payload: str | bytes

    def value(self, codec: payloads.Codec | None = None, of: str | None = None) -> Any:
        """The decoded payload (for ``error`` events, the error record dict). A pickled payload needs
        the ``codec`` of the store it came from (``store.codec``), which checks its signature. ``of``:
        the run's id, for the error that says which value could not be read."""
        def where() -> str:
            return f"{self.describe()} (event {self.seq})" + ("" if of is None else f" of {of!r}")

        if codec is None:
            if self.encoding == converters.TYPED:
                return converters.decode(payloads.Codec.decode_json(self.payload, where), where())
            if self.encoding != payloads.JSON:
                raise TypeError(f"event {self.seq} holds a pickled value: read it with event.value(store.codec), "
                                "which unpickles it only if the store's key signed it")
            return payloads.Codec.decode_json(self.payload, where)
        return codec.decode(self.encoding, self.payload, where)

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
    custom_status: Any = None
    queue: str | None = None  # the queue of a run started for workers (rk.Client.start), else None
    # Why the workers of one code version could not drive it (a queued run a worker handed back with
    # an error, e.g. a NonDeterminismError after a deploy); None when none reported one.
    problem: str | None = None
