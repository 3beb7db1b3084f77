"""A store that lives in this process only: for tests and throwaway runs."""

from __future__ import annotations

import builtins
import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from ..errors import IllegalTransitionError, WorkflowLockedError, WorkflowNotFoundError
from ..history import CONTINUED, Event, Status, WorkflowInfo
from ..keys import Keyring
from ..payloads import Codec
from .base import RESTARTABLE, UNSET, Generation, Secrets, Signal, Store, continued_status
from .keepers import Keepers
from .locks import ThreadLocks
from .memory_work import MemoryWork
from .work import Placement

_PAGE = 256  # events per page, as SqliteStore reads them


class MemoryStore(MemoryWork, Store):
    """Same semantics as ``SqliteStore``, nothing on disk. Thread-safe."""

    def __init__(self, *, secret: Secrets = None, pickle: str = "signed") -> None:
        # Nobody else reads this store: without a secret (or REPLAYKIT_SECRET), a key of this process signs.
        keys = Keyring.configured(secret)
        self.codec = Codec(keys if keys.usable else Keyring.ephemeral(), pickle)
        self._mutex = threading.Lock()
        self._runs: dict[str, WorkflowInfo] = {}
        self._events: dict[str, list[Event]] = {}
        self._older: dict[str, list[tuple[Generation, list[Event]]]] = {}  # generations before the newest
        self._signals: dict[str, list[Signal]] = {}
        self._consumed: set[int] = set()
        self._ids = itertools.count(1)
        self._locks = ThreadLocks()
        self._keepers = Keepers(self._locks.try_acquire, self._locks.release,
                                lambda key: self._locks.holder(key) is not None)
        self._kept: dict[str, str] = {}  # workflow id -> the keeper that keeps it (store/keepers.py)
        self._version = 0
        self._seen = threading.local()  # per thread: the version changed() saw last
        self._work = {}
        self._queues = {}
        self._workers = {}

    def _need(self, workflow_id: str) -> WorkflowInfo:
        info = self._runs.get(workflow_id)
        if info is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in this MemoryStore")
        return info

    def create(self, workflow_id: str, name: str, start: Event, status: Status = Status.RUNNING,
               history: Sequence[Event] = (), placement: Placement | None = None) -> bool:
        with self._mutex:
            if workflow_id in self._runs:
                return False
            queue = placement.queue if placement is not None else None
            self._runs[workflow_id] = WorkflowInfo(workflow_id, name, status, start.at, start.at, queue=queue)
            self._events[workflow_id] = [start, *history]
            if placement is not None:
                self._place(workflow_id, name, placement, start.at)
            self._signals.setdefault(workflow_id, [])
            self._version += 1
            return True

    def delete(self, workflow_ids: Sequence[str], *, ended_before: float | None = None) -> builtins.list[str]:
        with self._mutex:
            deleted = [w for w in dict.fromkeys(workflow_ids) if w in self._runs and self._runs[w].status.is_terminal
                       and (ended_before is None or self._runs[w].updated_at < ended_before)]
            for workflow_id in deleted:
                del self._runs[workflow_id], self._events[workflow_id]
                self._older.pop(workflow_id, None)
                self._consumed.difference_update(s.id for s in self._signals.pop(workflow_id, []))
                self._work.pop(workflow_id, None)
                self._kept.pop(workflow_id, None)
            self._version += bool(deleted)
            return deleted

    def info(self, workflow_id: str) -> WorkflowInfo | None:
        with self._mutex:
            info = self._runs.get(workflow_id)
            return None if info is None else self._reported(info)

    def _reported(self, info: WorkflowInfo) -> WorkflowInfo:
        """``info`` with the problem a worker reported about it, if any (kept on its work row)."""
        work = self._work.get(info.workflow_id)
        if work is None or work.problem is None:
            return info
        return attrs.evolve(info, problem=f"code version {work.problem_version}: {work.problem}")

    def events(self, workflow_id: str) -> Iterator[Event]:
        with self._mutex:
            self._need(workflow_id)
            history = self._events[workflow_id]  # only ever appended to (continue_as_new starts a new list)
        return self._pages(history)

    def _pages(self, history: list[Event]) -> Iterator[Event]:
        """A page at a time, each copied under the mutex, as ``SqliteStore`` reads: bounded memory."""
        start = 0
        while True:
            with self._mutex:
                page = history[start:start + _PAGE]
            yield from page
            if len(page) < _PAGE:
                return
            start += _PAGE

    def last_event(self, workflow_id: str) -> Event | None:
        with self._mutex:
            self._need(workflow_id)
            return self._events[workflow_id][-1]

    def record(self, workflow_id: str, event: Event, *, status: Status | None = None,
               consume_signal: int | None = None, custom_status: Any = UNSET) -> None:
        with self._mutex:
            info = self._need(workflow_id)
            history = self._events[workflow_id]
            if history[-1].seq >= event.seq:
                raise WorkflowLockedError(
                    f"event {event.seq} of workflow {workflow_id!r} was already recorded by another driver"
                )
            history.append(event)
            changes: dict[str, Any] = {"updated_at": event.at} if status is not None else {}
            if status is not None:
                changes["status"] = status
            if custom_status is not UNSET:
                changes["custom_status"] = custom_status
            if changes:
                self._runs[workflow_id] = attrs.evolve(info, **changes)
            if status is not None and status.is_terminal:
                self._ended(workflow_id, event.at)
            if consume_signal is not None:
                self._consumed.add(consume_signal)
            self._version += 1

    def continue_as_new(self, workflow_id: str, result: Event, start: Event) -> Status:
        with self._mutex:
            info = self._need(workflow_id)
            assert result.outcome == CONTINUED
            self._events[workflow_id].append(result)
            self._retire(workflow_id, attrs.evolve(info, status=Status.CONTINUED, updated_at=result.at))
            status = continued_status(info.status)
            self._runs[workflow_id] = WorkflowInfo(workflow_id, info.name, status, start.at, start.at,
                                                   info.custom_status, info.queue)
            self._events[workflow_id] = [start]
            self._version += 1
            return status

    def restart(self, workflow_id: str, start: Event, history: Sequence[Event] = ()) -> None:
        with self._mutex:
            info = self._need(workflow_id)
            if info.status not in RESTARTABLE:
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {info.status.value}; only a failed, cancelled or timed-out run "
                    "can be restarted")
            self._retire(workflow_id, info)
            self._runs[workflow_id] = WorkflowInfo(workflow_id, info.name, Status.RUNNING, start.at, start.at,
                                                   queue=info.queue)
            self._events[workflow_id] = [start, *history]
            work = self._work.get(workflow_id)
            if work is not None:
                work.problem = work.problem_version = None
            self._wake(workflow_id, start.at)
            self._version += 1

    def _retire(self, workflow_id: str, ended: WorkflowInfo) -> None:
        """Keep the newest generation, which ended as ``ended`` says, among the older ones (a keeper's
        mark stays with it: the next generation has none)."""
        self._kept.pop(workflow_id, None)
        older = self._older.setdefault(workflow_id, [])
        number = len(older) + 1
        older.append((Generation(number, ended.status, ended.created_at, ended.updated_at), self._events[workflow_id]))

    def generations(self, workflow_id: str) -> builtins.list[Generation]:
        with self._mutex:
            info = self._need(workflow_id)
            older = [generation for generation, _ in self._older.get(workflow_id, [])]
            return [*older, Generation(len(older) + 1, info.status, info.created_at, info.updated_at)]

    def generation_events(self, workflow_id: str, number: int) -> Iterator[Event]:
        with self._mutex:
            self._need(workflow_id)
            older = self._older.get(workflow_id, [])
            if not 1 <= number <= len(older) + 1:
                raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no generation {number} in this MemoryStore")
            history = older[number - 1][1] if number <= len(older) else self._events[workflow_id]
        return self._pages(history)

    def set_custom_status(self, workflow_id: str, value: Any) -> None:
        with self._mutex:
            self._runs[workflow_id] = attrs.evolve(self._need(workflow_id), custom_status=value)
            self._version += 1

    def set_status(self, workflow_id: str, status: Status, at: float) -> Status:
        with self._mutex:
            info = self._need(workflow_id)
            if info.status is not status and not info.status.can_become(status):
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {info.status.value}; it cannot become {status.value}")
            self._runs[workflow_id] = attrs.evolve(info, status=status, updated_at=at)
            if status.is_terminal:
                self._ended(workflow_id, at)
            elif info.status is Status.PAUSED:
                self._wake(workflow_id, at)
            self._version += 1
            return info.status

    def send_signal(self, workflow_id: str, name: str, encoding: str, payload: str | bytes,
                    at: float) -> None:
        with self._mutex:
            status = self._need(workflow_id).status
            if status.is_terminal:
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {status.value}; it can no longer take signals")
            self._signals[workflow_id].append(Signal(next(self._ids), name, encoding, payload, at))
            self._wake(workflow_id, at)
            self._version += 1

    def next_signal(self, workflow_id: str, name: str) -> Signal | None:
        with self._mutex:
            self._need(workflow_id)
            for signal in self._signals[workflow_id]:
                if signal.name == name and signal.id not in self._consumed:
                    return signal
        return None

    def inbox(self) -> set[str]:
        with self._mutex:
            return {workflow_id for workflow_id, signals in self._signals.items()
                    if any(s.id not in self._consumed for s in signals)}

    def inbox_of(self, names: Sequence[str]) -> set[str]:
        with self._mutex:
            return {workflow_id for workflow_id, signals in self._signals.items()
                    if any(s.id not in self._consumed and s.name in names for s in signals)}

    def consume_signal(self, signal_id: int) -> None:
        with self._mutex:
            self._consumed.add(signal_id)
            self._version += 1

    def list(self, status: Status | None = None) -> list[WorkflowInfo]:
        with self._mutex:
            return [self._reported(i) for i in self._runs.values() if status is None or i.status is status]

    def try_lock(self, workflow_id: str, keeper: str | None = None) -> bool:
        if not self._locks.try_acquire(workflow_id):
            return False
        with self._mutex:
            mark, info = self._kept.get(workflow_id), self._runs.get(workflow_id)
        if mark is not None and info is not None and self._keepers.refuses(mark, info.status, keeper):
            self._locks.release(workflow_id)
            return False
        if mark is not None and mark == keeper:
            with self._mutex:
                self._kept.pop(workflow_id, None)
        return True

    def keep(self, workflow_id: str, keeper: str | None) -> None:
        if keeper is not None:
            self._keepers.hold(keeper)
        with self._mutex:
            self._need(workflow_id)
            if keeper is None:
                self._kept.pop(workflow_id, None)
            else:
                self._kept[workflow_id] = keeper

    def keeper_of(self, workflow_id: str) -> str | None:
        with self._mutex:
            mark, info = self._kept.get(workflow_id), self._runs.get(workflow_id)
        return mark if mark is not None and info is not None and self._keepers.refuses(
            mark, info.status, None) else None

    def let_go(self, keeper: str) -> None:
        self._keepers.let_go(keeper)

    def unlock(self, workflow_id: str) -> None:
        self._locks.release(workflow_id)

    def lock_owner(self, workflow_id: str) -> str | None:
        if self._locks.holder(workflow_id) is not None:
            return "this process"
        with self._mutex:
            mark, info = self._kept.get(workflow_id), self._runs.get(workflow_id)
        return None if mark is None or info is None or not self._keepers.refuses(mark, info.status, None) else (
            "this process, an engine that keeps it out of memory")

    def changed(self) -> bool:
        version = self._version
        seen, self._seen.version = getattr(self._seen, "version", -1), version
        return seen != version
