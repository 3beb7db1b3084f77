"""A heap of deadlines with callbacks: the engine's timers, signal timeouts, and test-scheduled actions."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class TimerQueue:
    """Callbacks due at given times, popped in deadline order (ties: insertion order)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deadline: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), callback))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Callable[[], None] | None:
        """The earliest callback due at ``now``, removed; ``None`` if none is due."""
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        return None
