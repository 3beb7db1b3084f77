"""The work queue inside one process (see ``store/work.py``): ``MemoryStore``'s half of it.

Workers of a memory store live in its process, so none can die unnoticed: reaping finds nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ..errors import StoreError
from ..history import Status, WorkflowInfo
from .work import Candidate, Placement, Queue, Usage, WorkerRecord, admit

if TYPE_CHECKING:
    from .locks import ThreadLocks


@attrs.define
class _Work:
    name: str
    placement: Placement
    ready_at: float | None
    worker: str | None = None
    started_at: float | None = None
    problem: str | None = None
    problem_version: str | None = None


class MemoryWork:
    """``MemoryStore``'s work-queue methods; every one runs under the store's mutex."""

    _work: dict[str, _Work]
    _queues: dict[str, Queue]
    _workers: dict[str, WorkerRecord]

    if TYPE_CHECKING:
        _mutex: threading.Lock
        _locks: ThreadLocks
        _runs: dict[str, WorkflowInfo]
        _version: int

    def _place(self, workflow_id: str, name: str, placement: Placement, at: float) -> None:
        ready = at if placement.ready_at is None else placement.ready_at
        self._work[workflow_id] = _Work(name, placement, ready)

    def _wake(self, workflow_id: str, at: float) -> None:
        work = self._work.get(workflow_id)
        if work is not None and not self._runs[workflow_id].status.is_terminal and (
                work.ready_at is None or work.ready_at > at):
            work.ready_at = at

    def _ended(self, workflow_id: str, at: float) -> None:
        work = self._work.get(workflow_id)
        if work is not None:
            work.ready_at = work.worker = work.problem = work.problem_version = None
            if work.placement.parent is not None:
                self._wake(work.placement.parent, at)

    def claim(self, worker_id: str, queue: str, workflows: Sequence[str], capacity: int, now: float,
              version: str) -> list[tuple[str, str]]:
        with self._mutex:
            limits = self._queues.get(queue, Queue(queue))
            found = sorted(
                (w for w in self._work.items()
                 if w[1].placement.queue == queue and w[1].ready_at is not None and w[1].ready_at <= now
                 and w[1].worker is None and w[1].name in workflows and w[1].problem_version != version
                 and self._runs[w[0]].status in (Status.RUNNING, Status.PENDING)),
                key=lambda w: (-w[1].placement.priority, w[1].ready_at))
            usage = None
            if limits.limited:
                held = [w for w in self._work.values() if w.placement.queue == queue and w.worker is not None]
                by_key: dict[str | None, int] = {}
                for w in held:
                    by_key[w.placement.key] = by_key.get(w.placement.key, 0) + 1
                since = time.time() - (limits.rate[1] if limits.rate else 0)
                recent = sum(1 for w in self._work.values() if w.placement.queue == queue
                             and w.started_at is not None and w.started_at > since)
                usage = Usage(len(held), by_key, recent)

            def take(batch: list[Candidate]) -> set[str]:
                got = set()
                for c in batch:
                    if self._locks.try_acquire(c.workflow_id):
                        work = self._work[c.workflow_id]
                        work.worker, work.ready_at = worker_id, None
                        work.started_at = work.started_at or time.time()
                        got.add(c.workflow_id)
                return got

            candidates = [Candidate(i, w.name, w.placement.key, w.started_at is not None) for i, w in found]
            return [(c.workflow_id, c.name) for c in admit(candidates, limits, usage, capacity, take)]

    def release(self, workflow_id: str, worker_id: str, wake_at: float | None, problem: str | None = None,
                version: str | None = None) -> None:
        with self._mutex:
            work = self._work.get(workflow_id)
            if work is None or work.worker != worker_id:
                return
            work.worker = None
            if work.ready_at is None or (wake_at is not None and wake_at < work.ready_at):
                work.ready_at = wake_at
            work.problem, work.problem_version = problem, version if problem else None
            self._version += 1

    def next_ready(self, queues: Sequence[str]) -> float | None:
        with self._mutex:
            times = [w.ready_at for w in self._work.values()
                     if w.placement.queue in queues and w.worker is None and w.ready_at is not None]
        return min(times, default=None)

    def set_queue(self, queue: Queue) -> None:
        with self._mutex:
            self._queues[queue.name] = queue

    def register_worker(self, record: WorkerRecord) -> None:
        with self._mutex:
            if record.worker_id in self._workers:
                raise StoreError(f"worker id {record.worker_id!r} is in use; give each worker its own")
            self._workers[record.worker_id] = attrs.evolve(record, heartbeat_at=time.time())
            for workflow_id, work in self._work.items():
                if work.worker == record.worker_id and workflow_id not in record.runs:
                    work.worker, work.ready_at = None, time.time()
                    self._version += 1

    def heartbeat(self, worker_id: str, stopping: bool = False) -> bool:
        with self._mutex:
            record = self._workers.get(worker_id)
            if record is None:
                return False
            self._workers[worker_id] = attrs.evolve(record, heartbeat_at=time.time(), stopping=stopping)
            return True

    def unregister_worker(self, worker_id: str) -> None:
        with self._mutex:
            self._workers.pop(worker_id, None)
            for work in self._work.values():
                if work.worker == worker_id:
                    work.worker, work.ready_at = None, time.time()
            self._version += 1

    def workers(self) -> list[WorkerRecord]:
        with self._mutex:
            held: dict[str, list[str]] = {}
            for workflow_id, work in sorted(self._work.items()):
                if work.worker is not None:
                    held.setdefault(work.worker, []).append(workflow_id)
            return [attrs.evolve(r, runs=tuple(held.get(r.worker_id, ()))) for r in self._workers.values()]

    def reap_workers(self, lease: float) -> list[str]:
        return []
