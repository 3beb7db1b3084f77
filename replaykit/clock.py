"""Where the runtime reads time. Workflow code never does: it asks ``ctx.now()``."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable


def seconds(value: timedelta | float, what: str = "a duration") -> float:
    """A duration given as a ``timedelta`` or a number of seconds, in seconds. Text (``"1h"``),
    ``True``, NaN and a negative duration are refused, naming ``what``."""
    if isinstance(value, timedelta):
        found = value.total_seconds()
    elif isinstance(value, (str, bytes, bool)) or not hasattr(type(value), "__float__"):
        raise TypeError(f"{what} is a datetime.timedelta or a number of seconds (timedelta(hours=1), or 3600), "
                        f"not {type(value).__name__} {value!r}")
    else:
        found = float(value)
    if found != found or found < 0:
        raise ValueError(f"{what} must be a non-negative timedelta or number of seconds, got {value!r}")
    return found


def optional_seconds(value: timedelta | float | None) -> float | None:
    """:func:`seconds`, or ``None`` for none (no timeout, no limit)."""
    return None if value is None else seconds(value)


def instant(when: datetime, what: str) -> float:
    """Seconds since the epoch of a timezone-aware ``when``; a naive one (whose zone would be the
    machine's, guessed) is refused, naming ``what``."""
    if not isinstance(when, datetime):
        raise TypeError(f"{what} is a timezone-aware datetime.datetime, not {type(when).__name__} {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} needs a timezone-aware datetime (datetime(2030, 1, 2, 12, tzinfo=timezone.utc)), "
                         f"not the naive {when!r}: replaykit keeps time in UTC and does not guess the zone")
    return when.timestamp()


def monotonic() -> float:
    """Seconds for measuring waits. Unlike ``time.monotonic``, freezegun does not fake it,
    so timeouts keep working in the test environment, where user code sees frozen time."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Clock(Protocol):
    """The runtime's source of time, in seconds since the epoch (UTC)."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


@runtime_checkable
class SkippingClock(Clock, Protocol):
    """A clock the engine moves forward itself whenever its driver is idle (no activity running, no
    job queued): the testing tools' :class:`~replaykit.testing.timeskip.FakeClock`."""

    def waiting(self, delta: int) -> None:
        """Count a caller blocked on a result (+1) or done waiting (-1)."""

    def can_skip(self, next_deadline: float | None) -> bool:
        """Would :meth:`skip` move the clock now (the engine's next timer is due at ``next_deadline``)?"""

    def skip(self, next_deadline: float | None, fire_due: Callable[[], None],
             after_commit: Callable[[Callable[[], None]], None]) -> None:
        """Jump to ``next_deadline`` if allowed, and ``fire_due()``; or finish an explicit sleep,
        waking its sleeper ``after_commit``."""


def __getattr__(name: str) -> Any:
    if name == "FakeClock":  # moved next to the testing tools; still importable from here, lazily
        from .testing.timeskip import FakeClock

        return FakeClock
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
