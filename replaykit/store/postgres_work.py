"""The work queue in PostgreSQL (see ``store/work.py``): ``PostgresStore``'s half of it.

A claim reads candidates with ``FOR UPDATE SKIP LOCKED`` (racing workers take different
rows); in a limited queue it first locks the queue's row, so the count of what the queue
holds and the claims made on it are serialised: racing workers cannot overspend a limit.
A worker's liveness is a session advisory lock on its store's lock connection, the same
connection that holds its runs' locks: when the worker or its connection dies, the server
frees them all at once, and the next worker to look releases its runs. A worker silent for
a lease while its session lives on (the process stopped, the network half-open) has its
session ended (``pg_terminate_backend``), which frees them the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg

from ..errors import StoreError
from .postgres_conn import CHANNEL
from .postgres_errors import translated
from .work import Candidate, Queue, Usage, WorkerRecord, admit, queue_from_row, worker_records

if TYPE_CHECKING:
    from .postgres_conn import AdvisoryLocks, Connection
    from .postgres_writes import Writes

NOW = "extract(epoch from clock_timestamp())"  # the database's clock
# How long a claim (or a reap) waits for a row another session locked. A healthy holder's transaction lasts
# milliseconds; one held longer is a worker hung in its transaction (stopped, frozen): waiting for it would
# stop this worker's heartbeats too. The claim gives up until its next round; the hung session is ended by
# idle_in_transaction_session_timeout (a worker sets it to its lease: Store.end_idle_transactions_after).
_LOCK_WAIT = "SET LOCAL lock_timeout = '250ms'"
_NEWEST_STATUS = ("(SELECT status FROM replaykit_runs r WHERE r.workflow_id = w.workflow_id "
                  "ORDER BY generation DESC LIMIT 1) IN ('running', 'pending')")
# A wake-up of a run that has ended (a child ending after its cancelled parent) changes nothing.
LIVE = ("(SELECT status FROM replaykit_runs r WHERE r.workflow_id = w.workflow_id "
         "ORDER BY generation DESC LIMIT 1) IN ('running', 'pending', 'paused')")
_CANDIDATES = ("FROM replaykit_work w WHERE queue = %s AND ready_at <= %s AND worker IS NULL AND name = ANY(%s) "
               f"AND problem_version IS DISTINCT FROM %s AND {_NEWEST_STATUS}")


def _wake_sql(target: str) -> str:
    """Make the queued run ``target`` (an SQL expression) ready at ``%(at)s`` at the latest."""
    return (f"UPDATE replaykit_work w SET ready_at = %(at)s WHERE w.workflow_id = {target} "
            f"AND (w.ready_at IS NULL OR w.ready_at > %(at)s) AND {LIVE}")


_WAKE = _wake_sql("%(workflow_id)s")


def ended_ctes(only_if: str) -> str:
    """A queued run ``%(workflow_id)s`` ended, if ``only_if`` holds: never ready again, held by
    nobody (its driver's end hands it back), no problem left to report, and its parent, if queued,
    woken at ``%(at)s``. Two CTEs (``work``, ``parent``) of a ``WITH`` (``postgres_runs._END``
    puts them after the result's insert, and their condition on it)."""
    return (f"work AS (UPDATE replaykit_work SET ready_at = NULL, worker = NULL, problem = NULL, "
            f"problem_version = NULL "
            f"WHERE workflow_id = %(workflow_id)s AND {only_if} RETURNING parent), "
            f"parent AS ({_wake_sql('(SELECT parent FROM work)')})")


_ENDED = f"WITH {ended_ctes('TRUE')} SELECT 1"


def wake(conn: Connection, workflow_id: str, at: float) -> None:
    """Something happened to a queued run: ready at ``at`` at the latest (a no-op for other runs)."""
    conn.execute(_WAKE, {"workflow_id": workflow_id, "at": at})


def ended(conn: Connection, workflow_id: str, at: float) -> None:
    """A queued run ended (see :func:`ended_ctes`): one statement."""
    conn.execute(_ENDED, {"workflow_id": workflow_id, "at": at})


def restarted(conn: Connection, workflow_id: str, at: float) -> None:
    conn.execute("UPDATE replaykit_work SET problem = NULL, problem_version = NULL WHERE workflow_id = %s",
                 (workflow_id,))
    wake(conn, workflow_id, at)


def worker_key(worker_id: str) -> str:
    """The key of a worker's liveness lock, apart from every workflow id's."""
    return "\0worker " + worker_id


class PostgresWork:
    """``PostgresStore``'s work-queue methods (the Store interface's second half)."""

    if TYPE_CHECKING:
        url: str
        _idle_transaction_limit: float
        _locks: AdvisoryLocks
        _writes: Writes

        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]: ...
        def try_lock(self, workflow_id: str) -> bool: ...
        def try_lock_many(self, workflow_ids: list[str]) -> list[str]: ...  # noqa: E704
        def unlock(self, workflow_id: str) -> None: ...

    def _write(self) -> AbstractContextManager[Connection]:
        return self._writes.write()

    def claim(self, worker_id: str, queue: str, workflows: Sequence[str], capacity: int, now: float,
              version: str) -> list[tuple[str, str]]:
        if capacity <= 0 or not workflows or not self._read(
                f"SELECT 1 {_CANDIDATES} LIMIT 1", (queue, now, list(workflows), version)):
            return []  # a cheap read first: most polls of an idle fleet find nothing
        taken: list[str] = []

        def take(batch: list[Candidate]) -> set[str]:
            got = self.try_lock_many([c.workflow_id for c in batch])  # two round trips for the batch
            taken.extend(got)
            conn.execute(f"UPDATE replaykit_work SET worker = %s, ready_at = NULL, started_at = "
                         f"coalesce(started_at, {NOW}) WHERE workflow_id = ANY(%s)", (worker_id, list(got)))
            return set(got)

        try:
            with self._write() as conn:
                conn.execute(_LOCK_WAIT)
                row = conn.execute("SELECT concurrency, per_key, rate_starts, rate_seconds FROM replaykit_queues "
                                   "WHERE name = %s FOR UPDATE", (queue,)).fetchall()  # serialises limited claims
                limits = queue_from_row(queue, row[0] if row else None, self.url)
                found = [Candidate(*r) for r in conn.execute(
                    f"SELECT workflow_id, name, part_key, started_at IS NOT NULL {_CANDIDATES} "
                    f"ORDER BY priority DESC, ready_at LIMIT %s FOR UPDATE OF w SKIP LOCKED",
                    (queue, now, list(workflows), version, capacity * 4 + 8)).fetchall()]
                admitted = admit(found, limits, _usage(conn, limits) if limits.limited else None, capacity, take)
        except BaseException as exc:
            for workflow_id in taken:
                self.unlock(workflow_id)
            if _lock_busy(exc):
                return []  # a row held by a session stuck in its transaction: next round
            raise
        return [(c.workflow_id, c.name) for c in admitted]

    def release(self, workflow_id: str, worker_id: str, wake_at: float | None, problem: str | None = None,
                version: str | None = None) -> None:
        # One statement (one round trip when committed alone); it tells idle workers, at its commit.
        with self._writes.write(notify=False, single=True) as conn:
            conn.execute(
                "WITH released AS (UPDATE replaykit_work SET worker = NULL, ready_at = CASE WHEN ready_at IS NULL "
                "THEN %s::float8 WHEN %s::float8 IS NULL THEN ready_at ELSE least(ready_at, %s::float8) END, "
                "problem = %s, problem_version = %s WHERE workflow_id = %s AND worker = %s RETURNING ready_at) "
                f"SELECT pg_notify('{CHANNEL}', '') FROM released WHERE ready_at IS NOT NULL",
                (wake_at, wake_at, wake_at, problem, version if problem else None, workflow_id, worker_id))

    def next_ready(self, queues: Sequence[str]) -> float | None:
        if not queues:
            return None
        value = self._read("SELECT min(ready_at) FROM replaykit_work WHERE queue = ANY(%s) AND worker IS NULL "
                           "AND ready_at IS NOT NULL", (list(queues),))[0][0]
        return None if value is None else float(value)

    def set_queue(self, queue: Queue) -> None:
        """Waits for the queue's row at most twice the time after which the server ends a session idle in its
        transaction (a hung worker's is ended within one), then says who holds it, instead of waiting for ever."""
        starts, seconds = queue.rate if queue.rate is not None else (None, None)
        wait = 2 * self._idle_transaction_limit
        try:
            with self._write() as conn:
                conn.execute(f"SET LOCAL lock_timeout = '{round(wait * 1000)}ms'")
                conn.execute(
                    "INSERT INTO replaykit_queues VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                    "concurrency = excluded.concurrency, per_key = excluded.per_key, "
                    "rate_starts = excluded.rate_starts, rate_seconds = excluded.rate_seconds",
                    (queue.name, queue.concurrency, queue.per_key, starts, seconds))
        except BaseException as exc:
            if not _lock_busy(exc):
                raise
            idle = self._read("SELECT pid, round(extract(epoch from now() - state_change)) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND state LIKE 'idle in transaction%%'")
            holders = ", ".join(f"pid {pid} (for {age:g} s)" for pid, age in idle) or "none now"
            raise StoreError(
                f"{self.url}: the limits of queue {queue.name!r} were not stored: another session held its row "
                f"(replaykit_queues) locked for {wait:g} s, a transaction left open. Sessions idle in a transaction: "
                f"{holders}. End it (COMMIT or ROLLBACK there, or SELECT pg_terminate_backend(pid)) and start the "
                "worker again; nothing was changed.") from exc

    def register_worker(self, record: WorkerRecord) -> None:
        key = worker_key(record.worker_id)
        if not self._locks.holds(key) and not self._locks.try_acquire(key, None):
            raise StoreError(f"worker id {record.worker_id!r} is in use by a live process; give each worker its own")
        r = record
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO replaykit_workers VALUES (%s, %s, %s, %s, %s, %s, %s, {NOW}, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, queues = excluded.queues, "
                "workflows = excluded.workflows, version = excluded.version, started_at = excluded.started_at, "
                "heartbeat_at = excluded.heartbeat_at, stopping = excluded.stopping, backend = excluded.backend",
                (r.worker_id, r.host, r.pid, json.dumps(r.queues), json.dumps(r.workflows), r.version, r.started_at,
                 r.stopping, self._locks.backend()))
            conn.execute("UPDATE replaykit_work SET worker = NULL, ready_at = %s WHERE worker = %s "
                         "AND NOT (workflow_id = ANY(%s))", (time.time(), r.worker_id, list(r.runs)))

    def heartbeat(self, worker_id: str, stopping: bool = False) -> bool:
        try:
            self._locks.backend()  # a round trip on the lock connection: is its session still there?
        except StoreError:
            pass
        if not self._locks.holds(worker_key(worker_id)):
            return False  # its lock connection died: the others may have released its runs already
        with self._write() as conn:
            return conn.execute(f"UPDATE replaykit_workers SET heartbeat_at = {NOW}, stopping = %s WHERE id = %s",
                                (stopping, worker_id)).rowcount == 1

    def unregister_worker(self, worker_id: str) -> None:
        with self._write() as conn:
            _forget(conn, worker_id)
        self._locks.release(worker_key(worker_id))

    def workers(self) -> list[WorkerRecord]:
        held: dict[str, list[str]] = {}
        for worker, workflow_id in self._read("SELECT worker, workflow_id FROM replaykit_work "
                                              "WHERE worker IS NOT NULL ORDER BY workflow_id"):
            held.setdefault(worker, []).append(workflow_id)
        rows = self._read("SELECT id, host, pid, queues, workflows, version, started_at, heartbeat_at, stopping "
                          "FROM replaykit_workers ORDER BY started_at, id")
        return worker_records(rows, held, self.url)

    def reap_workers(self, lease: float) -> list[str]:
        dead = []
        for worker_id, backend, silent in self._read(
                f"SELECT id, backend, heartbeat_at < {NOW} - %s FROM replaykit_workers", (lease,)):
            key = worker_key(worker_id)
            if self._locks.holds(key):
                continue  # this process's own
            if self._locks.try_acquire(key, None):
                try:
                    with self._write() as conn:
                        conn.execute(_LOCK_WAIT)
                        _forget(conn, worker_id)
                except StoreError as exc:
                    if not _lock_busy(exc):
                        raise
                    continue  # its rows are held by its session, stuck in a transaction: at a later heartbeat
                finally:
                    self._locks.release(key)
                dead.append(worker_id)
            elif silent and backend is not None:
                try:  # its session lives on without it: end the session, which frees its locks
                    with translated(self.url):
                        self._read("SELECT pg_terminate_backend(%s)", (backend,))
                except (StoreError, psycopg.Error):
                    pass  # no right to (another role's session): it stays listed as silent
        return dead


def _lock_busy(exc: BaseException) -> bool:
    """Did a statement give up waiting for a row lock (``_LOCK_WAIT``)?"""
    return isinstance(exc, psycopg.errors.LockNotAvailable) or isinstance(exc.__cause__,
                                                                          psycopg.errors.LockNotAvailable)


def _usage(conn: Connection, queue: Queue) -> Usage:
    by_key: dict[str | None, int] = dict(conn.execute(
        "SELECT part_key, count(*) FROM replaykit_work WHERE queue = %s AND worker IS NOT NULL GROUP BY part_key",
        (queue.name,)).fetchall())
    recent = 0
    if queue.rate is not None:
        recent = conn.execute(f"SELECT count(*) FROM replaykit_work WHERE queue = %s AND started_at > {NOW} - %s",
                              (queue.name, queue.rate[1])).fetchall()[0][0]
    return Usage(sum(by_key.values()), by_key, recent)


def _forget(conn: Connection, worker_id: str) -> None:
    """The worker is gone: what it held is ready at once."""
    conn.execute("UPDATE replaykit_work SET worker = NULL, ready_at = %s WHERE worker = %s", (time.time(), worker_id))
    conn.execute("DELETE FROM replaykit_workers WHERE id = %s", (worker_id,))
