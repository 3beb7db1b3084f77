"""Where the runtime reads time. Workflow code never does: it asks ``ctx.now()``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol


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


class FakeClock:
    """A clock that only moves when told to, or when the engine may skip ahead.

    The engine jumps it to the next due timer whenever nothing else can make
    progress (no activity running, no job queued) *and* skipping is allowed:
    while somebody waits for a result (:meth:`waiting`), or up to the target of
    an explicit :meth:`sleep`. It never goes backwards.
    """

    def __init__(self, start: float) -> None:
        self._now = start
        self._mutex = threading.Lock()
        self._waiters = 0
        self._target: float | None = None
        self._reached = threading.Event()
        self.on_move: list[Callable[[float], None]] = []

    def now(self) -> float:
        return self._now

    def advance_to(self, when: float) -> None:
        """Move to ``when`` (ignored if that is in the past)."""
        with self._mutex:
            if when <= self._now:
                return
            self._now = when
        for listener in self.on_move:
            listener(when)

    def skip_limit(self) -> float | None:
        """How far the engine may jump on its own right now (``None``: not at all)."""
        if self._waiters:
            return math.inf
        return self._target

    def waiting(self, delta: int) -> None:
        """Count a caller blocked on a result (+1) or done waiting (-1)."""
        with self._mutex:
            self._waiters += delta

    def begin_sleep(self, seconds: float) -> threading.Event:
        """Let the engine skip up to ``now + seconds``; the event is set once it got there
        (and what happened on the way is committed)."""
        with self._mutex:
            self._target = self._now + seconds
            self._reached = threading.Event()  # one per sleep: a late set() cannot end the next one
            return self._reached

    def target(self) -> float | None:
        return self._target

    def reach_target(self) -> threading.Event:
        """Move to the sleep's target and end it; returns the sleeper's event, which the engine
        sets once the steps taken on the way are committed."""
        with self._mutex:
            assert self._target is not None
            target, self._target = self._target, None
            reached = self._reached
        self.advance_to(target)
        return reached
