"""Time skipping: a fake clock that the engine moves forward itself whenever it is idle.

An engine given a clock with ``can_skip`` / ``skip`` (a
:class:`~replaykit.clock.SkippingClock`, such as this one) asks it, each time its
driver has nothing to do without time passing (no activity running, no job
queued), whether it may jump, and lets it. This clock allows a jump without limit
while somebody waits for a result (:meth:`FakeClock.waiting`), or up to the target
of an explicit :meth:`FakeClock.begin_sleep`; otherwise none. It never goes
backwards. :class:`~replaykit.testing.TestEnv` uses it, and tells freezegun of every
move (``on_move``), so activities see the same time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime, timezone

DEFAULT_START = datetime(2030, 1, 1, tzinfo=timezone.utc)  # where a test's fake time begins


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

    # -- what the idle engine asks (see SkippingClock) ------------------------------

    def can_skip(self, next_deadline: float | None) -> bool:
        """Would :meth:`skip` move the clock now (the engine's next timer is due at ``next_deadline``)?"""
        limit = self.skip_limit()
        return limit is not None and (self.target() is not None or (next_deadline is not None
                                                                    and next_deadline <= limit))

    def skip(self, next_deadline: float | None, fire_due: Callable[[], None],
             after_commit: Callable[[Callable[[], None]], None]) -> None:
        """Jump to the engine's next deadline if allowed, and ``fire_due()`` its timers; or finish an
        explicit sleep (its sleeper reads the store: it is woken ``after_commit``)."""
        limit = self.skip_limit()
        if limit is None:
            return
        if next_deadline is not None and next_deadline <= limit:
            self.advance_to(next_deadline)
            fire_due()
        elif self.target() is not None:
            after_commit(self.reach_target().set)
