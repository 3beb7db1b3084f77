"""The runs a store holds (their lock is this process's), cached by workflow id: what the SQLite and
PostgreSQL stores keep so that a step of a held run reads nothing back.

A cached value must be the newest generation of the run. Two things could make a read of it stale by the
time it is cached, and both are refused here: a :meth:`HeldRuns.forget` since the read began (a new
generation, a lock changing hands), and a read on a thread that cannot see what another thread's open
batch holds (while any thread is in batch mode, only such threads fill the cache).
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

V = TypeVar("V")


class HeldRuns(Generic[V]):
    def __init__(self) -> None:
        self.runs: dict[str, V] = {}  # read freely; written only through the methods below (and lock takers)
        self._mutex = threading.Lock()
        self._forgets = 0
        self._batching = 0  # threads in batch mode
        self._local = threading.local()

    def get(self, workflow_id: str) -> V | None:
        return self.runs.get(workflow_id)

    def mark(self) -> int:
        """Taken before a read whose result may be cached: see :meth:`fill`."""
        return self._forgets

    def fill(self, workflow_id: str, value: V, mark: int | None = None) -> None:
        """Cache ``value`` unless something was forgotten since ``mark`` (``None``: the caller just wrote
        it) or another thread's batch may hold a newer generation than this thread's read saw."""
        with self._mutex:
            if (mark is None or mark == self._forgets) and (
                    not self._batching or getattr(self._local, "batching", False)):
                self.runs[workflow_id] = value

    def forget(self, workflow_id: str) -> V | None:
        with self._mutex:
            self._forgets += 1
            return self.runs.pop(workflow_id, None)

    def forget_all(self) -> None:
        with self._mutex:
            self._forgets += 1
            self.runs.clear()

    def batch(self) -> None:
        """This thread is in batch mode (an engine's driver) until :meth:`unbatch`."""
        if not getattr(self._local, "batching", False):
            self._local.batching = True
            with self._mutex:
                self._batching += 1

    def unbatch(self) -> None:
        if getattr(self._local, "batching", False):
            self._local.batching = False
            with self._mutex:
                self._batching -= 1
