"""A heap of deadlines with callbacks: the engine's timers, signal timeouts, and test-scheduled actions."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


def _always() -> bool:
    return True


class TimerQueue:
    """Callbacks due at given times, popped in deadline order (ties: insertion order).

    An entry whose ``alive()`` turns false (its run ended, the signal it guarded
    arrived) is dropped unfired, and no longer counts as the next deadline.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None], Callable[[], bool]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deadline: float, callback: Callable[[], None], alive: Callable[[], bool] = _always) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), callback, alive))

    def _drop_dead(self) -> None:
        while self._heap and not self._heap[0][3]():
            heapq.heappop(self._heap)

    def next_deadline(self) -> float | None:
        self._drop_dead()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Callable[[], None] | None:
        """The earliest live callback due at ``now``, removed; ``None`` if none is due."""
        self._drop_dead()
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        return None
