"""The work queue in SQLite (see ``store/work.py``): the statements ``SqliteStore`` runs for it.

SQLite serialises writers (``BEGIN IMMEDIATE``), so a claim's count of a limited queue
cannot race another claim. Workers are processes on one host; a worker's liveness is an
OS lock (``locks.py``) that its death releases.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..errors import CorruptStoreError, StoreError
from .work import Candidate, Placement, Queue, Usage, WorkerRecord, admit, queue_from_row, worker_records

if TYPE_CHECKING:
    from .locks import FileLocks

NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # the host's clock, in Unix seconds
_NEWEST_STATUS = ("(SELECT status FROM runs r WHERE r.workflow_id = w.workflow_id "
                  "ORDER BY generation DESC LIMIT 1) IN ('running', 'pending')")
# A wake-up of a run that has ended (a child ending after its cancelled parent) changes nothing.
_LIVE = ("(SELECT status FROM runs r WHERE r.workflow_id = work.workflow_id ORDER BY generation DESC LIMIT 1) "
         "IN ('running', 'pending', 'paused')")


def place(conn: sqlite3.Connection, workflow_id: str, name: str, placement: Placement, at: float) -> None:
    conn.execute(
        "INSERT INTO work (workflow_id, name, queue, priority, part_key, parent, ready_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (workflow_id, name, placement.queue, placement.priority, placement.key, placement.parent,
         at if placement.ready_at is None else placement.ready_at))


def wake(conn: sqlite3.Connection, workflow_id: str, at: float) -> None:
    """Something happened to a queued run: ready at ``at`` at the latest (a no-op for other runs)."""
    conn.execute(f"UPDATE work SET ready_at = ? WHERE workflow_id = ? AND (ready_at IS NULL OR ready_at > ?) "
                 f"AND {_LIVE}", (at, workflow_id, at))


def ended(conn: sqlite3.Connection, workflow_id: str, at: float) -> None:
    """A queued run ended: never ready again, held by nobody (its driver's end hands it back), no
    problem left to report; its parent, if queued, is woken."""
    parent = conn.execute("UPDATE work SET ready_at = NULL, worker = NULL, problem = NULL, problem_version = NULL "
                          "WHERE workflow_id = ? RETURNING parent", (workflow_id,)).fetchall()
    if parent and parent[0][0] is not None:
        wake(conn, parent[0][0], at)


def restarted(conn: sqlite3.Connection, workflow_id: str, at: float) -> None:
    conn.execute("UPDATE work SET problem = NULL, problem_version = NULL WHERE workflow_id = ?", (workflow_id,))
    wake(conn, workflow_id, at)


def any_ready(conn: sqlite3.Connection, queue: str, workflows: Sequence[str], now: float, version: str) -> bool:
    """A read before a claim takes the write lock: is there anything this worker may take?"""
    return bool(candidates(conn, queue, workflows, now, version, 1))


def candidates(conn: sqlite3.Connection, queue: str, workflows: Sequence[str], now: float, version: str,
               limit: int) -> list[Candidate]:
    names = ", ".join("?" * len(workflows))
    rows = conn.execute(
        f"SELECT workflow_id, name, part_key, started_at IS NOT NULL FROM work w WHERE queue = ? AND ready_at <= ? "
        f"AND worker IS NULL AND name IN ({names}) AND (problem_version IS NULL OR problem_version != ?) "
        f"AND {_NEWEST_STATUS} ORDER BY priority DESC, ready_at LIMIT ?",
        (queue, now, *workflows, version, limit)).fetchall()
    return [Candidate(row[0], row[1], row[2], bool(row[3])) for row in rows]


def limits(conn: sqlite3.Connection, queue: str, where: str) -> Queue:
    row = conn.execute("SELECT concurrency, per_key, rate_starts, rate_seconds FROM queues WHERE name = ?",
                       (queue,)).fetchall()
    return queue_from_row(queue, row[0] if row else None, where)


def usage(conn: sqlite3.Connection, queue: Queue) -> Usage:
    by_key = dict(conn.execute("SELECT part_key, count(*) FROM work WHERE queue = ? AND worker IS NOT NULL "
                               "GROUP BY part_key", (queue.name,)).fetchall())
    recent = 0
    if queue.rate is not None:
        recent = conn.execute(f"SELECT count(*) FROM work WHERE queue = ? AND started_at > {NOW} - ?",
                              (queue.name, queue.rate[1])).fetchall()[0][0]
    return Usage(sum(by_key.values()), by_key, recent)


def hold(conn: sqlite3.Connection, workflow_id: str, worker_id: str) -> None:
    conn.execute(f"UPDATE work SET worker = ?, ready_at = NULL, started_at = coalesce(started_at, {NOW}) "
                 "WHERE workflow_id = ?", (worker_id, workflow_id))


def release(conn: sqlite3.Connection, workflow_id: str, worker_id: str, wake_at: float | None,
            problem: str | None, version: str | None) -> None:
    conn.execute(
        "UPDATE work SET worker = NULL, ready_at = CASE WHEN ready_at IS NULL THEN ? WHEN ? IS NULL THEN ready_at "
        "ELSE min(ready_at, ?) END, problem = ?, problem_version = ? WHERE workflow_id = ? AND worker = ?",
        (wake_at, wake_at, wake_at, problem, version if problem else None, workflow_id, worker_id))


def next_ready(conn: sqlite3.Connection, queues: Sequence[str], where: str) -> float | None:
    marks = ", ".join("?" * len(queues))
    value, last = conn.execute(f"SELECT min(ready_at), max(ready_at) FROM work WHERE queue IN ({marks}) AND "
                               "worker IS NULL AND ready_at IS NOT NULL", tuple(queues)).fetchall()[0]
    if last is not None and type(last) not in (int, float):  # text sorts after every number: max finds it
        raise CorruptStoreError(f"{where}: a work row of queue {', '.join(map(repr, queues))} is damaged (ready "
                                f"at {last!r}, not a time). Nothing was claimed; restore the store from a backup.")
    return None if value is None else float(value)


def set_queue(conn: sqlite3.Connection, queue: Queue) -> None:
    starts, seconds = queue.rate if queue.rate is not None else (None, None)
    conn.execute("INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?, ?)",
                 (queue.name, queue.concurrency, queue.per_key, starts, seconds))


def register(conn: sqlite3.Connection, r: WorkerRecord) -> None:
    conn.execute(f"INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?, ?, ?, {NOW}, ?)",
                 (r.worker_id, r.host, r.pid, json.dumps(r.queues), json.dumps(r.workflows), r.version,
                  r.started_at, int(r.stopping)))


def heartbeat(conn: sqlite3.Connection, worker_id: str, stopping: bool) -> bool:
    return conn.execute(f"UPDATE workers SET heartbeat_at = {NOW}, stopping = ? WHERE id = ?",
                        (int(stopping), worker_id)).rowcount == 1


def forget_worker(conn: sqlite3.Connection, worker_id: str, at: float) -> None:
    """The worker is gone: what it held is ready at once."""
    conn.execute("UPDATE work SET worker = NULL, ready_at = ? WHERE worker = ?", (at, worker_id))
    conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))


def workers(conn: sqlite3.Connection, where: str) -> list[WorkerRecord]:
    held: dict[str, list[str]] = {}
    for worker, workflow_id in conn.execute("SELECT worker, workflow_id FROM work WHERE worker IS NOT NULL "
                                            "ORDER BY workflow_id").fetchall():
        held.setdefault(worker, []).append(workflow_id)
    rows = conn.execute("SELECT id, host, pid, queues, workflows, version, started_at, heartbeat_at, stopping "
                        "FROM workers ORDER BY started_at, id").fetchall()
    return worker_records(rows, held, where)


def worker_ids(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM workers").fetchall()]


def store_now(conn: sqlite3.Connection) -> float:
    return float(conn.execute(f"SELECT {NOW}").fetchall()[0][0])


def worker_key(worker_id: str) -> str:
    """The key of a worker's liveness lock, apart from every workflow id's."""
    return "\0worker " + worker_id


_REAPING = 11.0  # a reap holds a dead worker's lock for at most SQLite's busy timeout (10 s) and a write


class SqliteWork:
    """``SqliteStore``'s work-queue methods (the Store interface's second half)."""

    if TYPE_CHECKING:
        _locks: FileLocks
        path: str

        def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _conn(self, mode: str = "rw") -> sqlite3.Connection: ...
        def try_lock(self, workflow_id: str) -> bool: ...
        def unlock(self, workflow_id: str) -> None: ...

    def claim(self, worker_id: str, queue: str, workflows: Sequence[str], capacity: int, now: float,
              version: str) -> list[tuple[str, str]]:
        if capacity <= 0 or not workflows or not any_ready(self._conn(), queue, workflows, now, version):
            return []
        taken: list[str] = []

        def take(batch: list[Candidate]) -> set[str]:
            for c in batch:
                if self.try_lock(c.workflow_id):
                    taken.append(c.workflow_id)
                    hold(conn, c.workflow_id, worker_id)
            return set(taken)

        try:
            with self._transaction() as conn:
                limited = limits(conn, queue, self.path)
                found = candidates(conn, queue, workflows, now, version, capacity * 4 + 8)
                admitted = admit(found, limited, usage(conn, limited) if limited.limited else None, capacity, take)
        except BaseException:
            for workflow_id in taken:
                self.unlock(workflow_id)
            raise
        return [(c.workflow_id, c.name) for c in admitted]

    def release(self, workflow_id: str, worker_id: str, wake_at: float | None, problem: str | None = None,
                version: str | None = None) -> None:
        with self._transaction() as conn:
            release(conn, workflow_id, worker_id, wake_at, problem, version)

    def next_ready(self, queues: Sequence[str]) -> float | None:
        return next_ready(self._conn(), queues, self.path) if queues else None

    def set_queue(self, queue: Queue) -> None:
        with self._transaction() as conn:
            set_queue(conn, queue)

    def register_worker(self, record: WorkerRecord) -> None:
        key = worker_key(record.worker_id)
        if not self._locks.holds(key) and not self._acquire_within(key, _REAPING):
            raise StoreError(f"worker id {record.worker_id!r} is in use by a live process; give each worker its own")
        with self._transaction() as conn:
            register(conn, record)
            conn.execute(f"UPDATE work SET worker = NULL, ready_at = ? WHERE worker = ? AND workflow_id NOT IN "
                         f"({', '.join('?' * len(record.runs))})", (time.time(), record.worker_id, *record.runs))

    def heartbeat(self, worker_id: str, stopping: bool = False) -> bool:
        with self._transaction() as conn:
            return heartbeat(conn, worker_id, stopping)

    def unregister_worker(self, worker_id: str) -> None:
        with self._transaction() as conn:
            forget_worker(conn, worker_id, time.time())
        self._locks.release(worker_key(worker_id))

    def workers(self) -> list[WorkerRecord]:
        return workers(self._conn(), self.path)

    def _acquire_within(self, key: str, seconds: float) -> bool:
        """Take a worker's liveness lock, waiting up to ``seconds``: a peer reaping the id's dead last
        life holds it while its transaction waits for a busy store (up to the busy timeout)."""
        deadline = time.monotonic() + seconds
        while not self._locks.try_acquire(key):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def reap_workers(self, lease: float) -> list[str]:
        """A worker whose OS lock is free is dead. A live process that stopped answering keeps its
        lock on one host (nothing can cut it off): it is listed with its old heartbeat."""
        dead = []
        for worker_id in worker_ids(self._conn()):
            key = worker_key(worker_id)
            if self._locks.holds(key) or not self._locks.try_acquire(key):
                continue
            try:
                with self._transaction() as conn:
                    forget_worker(conn, worker_id, time.time())
            finally:
                self._locks.release(key)
            dead.append(worker_id)
        return dead
