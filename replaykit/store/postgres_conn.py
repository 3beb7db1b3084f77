"""The connections a PostgreSQL store keeps: a small pool for reads and writes, one connection
holding this process's workflow locks, and one listening for other processes' changes.

Ownership is a session-level advisory lock (``pg_try_advisory_lock`` on a 64-bit hash of the
workflow id) held by the lock connection: the server releases it the moment that connection
dies (the process killed, the machine gone once TCP gives up), so no lease has to expire.
Taking the lock also stamps the run's row with a fencing token of this acquisition, and a step
is recorded only while the row carries the token of the store writing it (:func:`insert_event`):
a store whose lock died cannot record once another store has taken the run.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq
from psycopg.rows import TupleRow

from ..errors import StoreError
from .postgres_errors import cannot_connect, translate

Connection = psycopg.Connection[TupleRow]
CHANNEL = "replaykit_changes"  # NOTIFY'd by every write but a plain step: see PostgresStore.changed
_IDLE_KEPT = 4  # idle pooled connections kept open; more are closed when given back


_SETTINGS = (
    "SET synchronous_commit = {}; "
    "SET client_encoding = 'UTF8'; "  # insert_event encodes its parameters itself
    # Every transaction here is written for READ COMMITTED: a statement after a lock sees what the
    # holder committed (the migration lock, a run's serialising lock). A server, role or URL that makes
    # REPEATABLE READ the default would have it read a snapshot from before the lock.
    "SET default_transaction_isolation = 'read committed'; "
    # Every read here is an index range scan, most of them ordered and limited (a page of history).
    # On a table without statistics yet (a new store) the planner prefers a bitmap scan of the run's
    # whole remaining history and a sort, for each page: 90 ms instead of 14 to read 10,000 steps.
    "SET enable_bitmapscan = off; "
    "SET idle_in_transaction_session_timeout = {}"
)


def connect(url: str, where: str, synchronous_commit: str, idle_transaction_limit: float = 0.0,
            read_only: bool = False) -> Connection:
    """An autocommit connection: a lone statement is its own transaction (one round trip).
    ``idle_transaction_limit``: seconds after which the server ends the session if it sits idle inside a
    transaction (its process stopped or hung, holding row locks others wait for); 0: never.
    ``read_only``: every transaction of the session is read-only (the server refuses writes)."""
    options = psycopg.conninfo.conninfo_to_dict(url)
    extra: dict[str, object] = {"fallback_application_name": f"replaykit pid {os.getpid()} on {socket.gethostname()}"}
    if "connect_timeout" not in options:
        extra["connect_timeout"] = 10  # libpq waits forever otherwise for a host that does not answer
    try:
        # psycopg prepares nothing by itself: it would DEALLOCATE ALL after a ROLLBACK, insert_event's too
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=None, **extra)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise cannot_connect(where, exc) from exc
    try:
        settings = _SETTINGS.format(synchronous_commit, round(idle_transaction_limit * 1000))
        conn.execute((settings + ("; SET default_transaction_read_only = on" if read_only else "")).encode())
    except psycopg.Error as exc:
        conn.close()
        raise translate(where, exc) from exc
    return conn


def alive(conn: Connection) -> bool:
    return not conn.closed and not conn.broken


def int64_key(key: str) -> int:
    """A signed 64-bit hash of ``key``: distinct workflow ids collide with probability ~2**-64."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def int32_key(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big", signed=True)


class Pool:
    """Connections lent out for one call (or pinned to a thread for a group-commit batch)."""

    def __init__(self, open_connection: Callable[[], Connection]) -> None:
        self._open = open_connection
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._mutex = threading.Lock()
        self._closed = False

    def take(self) -> Connection:
        """An idle connection, else a new one. Once closed, the pool still lends, a new connection each
        time, closed when given back: a closed store still reads and writes, as a closed ``SqliteStore``
        does (a handle outlives its engine); only workflow locks are refused."""
        with self._mutex:
            if self._idle:
                return self._idle.pop()
        conn = self._open()
        with self._mutex:
            if not self._closed:
                self._all.add(conn)
        return conn

    def give(self, conn: Connection) -> None:
        """Take a connection back: kept if healthy and idle, closed otherwise. One the server ended
        closes the idle ones too: a restart ended them as well, and the next caller should not be lent one."""
        healthy = alive(conn)
        keep = healthy and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        stale: list[Connection] = []
        with self._mutex:
            if keep and not self._closed and len(self._idle) < _IDLE_KEPT:
                self._idle.append(conn)
                return
            self._all.discard(conn)
            if not healthy:
                stale, self._idle = self._idle, []
                self._all.difference_update(stale)
        for each in (conn, *stale):
            each.close()

    def drop_idle(self) -> None:
        """Close the idle connections (the next ones are made afresh, with the settings of then)."""
        with self._mutex:
            idle, self._idle = self._idle, []
            self._all.difference_update(idle)
        for conn in idle:
            conn.close()

    @contextmanager
    def lent(self) -> Iterator[Connection]:
        conn = self.take()
        try:
            yield conn
        finally:
            self.give(conn)

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            conn.close()


class AdvisoryLocks:
    """Per-workflow session-level advisory locks, held on one dedicated connection."""

    def __init__(self, open_connection: Callable[[], Connection], where: str) -> None:
        self._open = open_connection
        self._where = where
        self._conn: Connection | None = None
        self._held: set[str] = set()  # the server lets its holder take a lock again: we must not
        self._mutex = threading.Lock()
        self._closed = False

    def try_acquire(self, key: str, token: int | None, stamped: dict[str, int] | None = None,
                    marks: dict[str, tuple[str, str]] | None = None, keeper: str | None = None) -> bool:
        """Take the workflow's lock, then stamp its newest run with ``token`` (on the lock
        connection: a stamp is made only while the lock is held, so stamps follow the order of
        the owners). The stamp waits for the writes in flight under the previous token.
        ``None``: a lock of something else than a run (a worker's liveness), nothing to stamp.
        ``stamped`` gets the stamped run's row id (none if the workflow has no run yet). A run marked by
        ``keeper`` has its mark cleared with the stamp (store/keepers.py); one marked by another keeper
        is not stamped (nothing is written for a run its keeper may keep): ``marks`` gets that mark and
        the run's status, and the caller stamps it (:meth:`stamp`) if that keeper is gone."""
        with self._mutex:
            if self._closed:
                raise StoreError(f"{self._where}: the store is closed; open it again to lock workflows")
            if key in self._held:
                return False
            if self._conn is None or not alive(self._conn):
                self._lost()
                self._conn = self._open()
            if not self._locked("SELECT pg_try_advisory_lock(%s)", key):
                return False
            if token is None:
                self._held.add(key)
                return True
            try:
                rows = self._conn.execute(_STAMP_UNLESS_KEPT, (key, token, keeper)).fetchall()
            except psycopg.Error as exc:  # a session lock outlives a failed statement: give it back
                if self._conn is not None and alive(self._conn):
                    self._locked("SELECT pg_advisory_unlock(%s)", key)
                else:
                    self._lost()
                raise translate(self._where, exc) from exc
            if rows and stamped is not None:
                stamped[key] = rows[0][0]
            if rows and rows[0][1] is not None and rows[0][1] != keeper and marks is not None:
                marks[key] = (rows[0][1], rows[0][2])
            self._held.add(key)
            return True

    def stamp(self, key: str, token: int) -> None:
        """Stamp the newest run of a workflow whose lock is held here (one that ``try_acquire`` found
        marked by a keeper that has since gone)."""
        with self._mutex:
            if key not in self._held or self._conn is None:
                raise StoreError(f"{self._where}: workflow {key!r} is not locked here; its run cannot be stamped")
            try:
                self._conn.execute(_STAMP, (token, key))
            except psycopg.Error as exc:
                if not alive(self._conn):
                    self._lost()
                raise translate(self._where, exc) from exc

    def try_acquire_many(self, tokens: dict[str, int], stamped: dict[str, int] | None = None,
                         marks: dict[str, tuple[str, str]] | None = None) -> list[str]:
        """:meth:`try_acquire` for several runs (key -> token): two round trips for all. The keys it got."""
        with self._mutex:
            if self._closed:
                raise StoreError(f"{self._where}: the store is closed; open it again to lock workflows")
            todo = [key for key in tokens if key not in self._held]
            if not todo:
                return []
            if self._conn is None or not alive(self._conn):
                self._lost()
                self._conn = self._open()
            conn = self._conn
            try:
                flags = conn.execute("SELECT pg_try_advisory_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY AS "
                                     "t(k, i) ORDER BY i", ([int64_key(k) for k in todo],)).fetchall()
                got = [key for key, (ok,) in zip(todo, flags, strict=True) if ok]
                if got:
                    rows = conn.execute(_STAMP_MANY, (got, [tokens[key] for key in got])).fetchall()
                    if stamped is not None:
                        stamped.update((key, run) for key, run, _, _ in rows)
                    if marks is not None:
                        marks.update((key, (mark, status)) for key, _, mark, status in rows if mark is not None)
            except psycopg.Error as exc:  # session locks outlive a failed statement: give them back
                if alive(conn) and got:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k",
                                     ([int64_key(k) for k in got],))
                    except psycopg.Error:
                        self._lost()
                elif not alive(conn):
                    self._lost()
                raise translate(self._where, exc) from exc
            self._held.update(got)
            return got

    def release(self, key: str) -> None:
        """Give the lock back. If the session that held it has ended, the server gave it back then:
        that is not an error (the run was lost to others, as giving it back means to)."""
        with self._mutex:
            if key in self._held:
                self._held.discard(key)
                if self._conn is not None and alive(self._conn):
                    try:
                        self._locked("SELECT pg_advisory_unlock(%s)", key)
                    except StoreError:
                        if self._conn is not None:  # the session lives on: the lock may be held still
                            raise

    def holds(self, key: str) -> bool:
        return key in self._held

    @contextmanager
    def still(self) -> Iterator[None]:
        """No take or give-back of this store's locks during the block, so that :meth:`holds` and the
        server agree (during one, the server holds a lock that ``holds`` does not name). The wait for one
        under way is bounded: the caller's transaction could hold a row that a take is stamping."""
        got = self._mutex.acquire(timeout=1.0)
        try:
            yield
        finally:
            if got:
                self._mutex.release()

    def backend(self) -> int:
        """The server process of the lock connection (whose end frees every lock held here)."""
        with self._mutex:
            if self._conn is None or not alive(self._conn):
                self._lost()
                self._conn = self._open()
            try:
                return int(self._conn.execute("SELECT pg_backend_pid()").fetchall()[0][0])
            except psycopg.Error as exc:
                if not alive(self._conn):
                    self._lost()  # the session ended: the server has released every lock it held
                raise translate(self._where, exc) from exc

    def _locked(self, sql: str, key: str) -> bool:
        assert self._conn is not None
        try:
            return bool(self._conn.execute(sql, (int64_key(key),)).fetchall()[0][0])
        except psycopg.Error as exc:
            if not alive(self._conn):
                self._lost()
            raise translate(self._where, exc) from exc

    def _lost(self) -> None:
        """The connection holding the locks died: the server has released every one of them."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._held.clear()

    def close(self) -> None:
        """Gives back every lock held, before it returns: the server would release them with the
        connection, but only once its backend has noticed the close, after this returns."""
        with self._mutex:
            self._closed = True
            if self._conn is not None and self._held:
                try:
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
                except psycopg.Error:
                    pass  # the connection is gone: so are its locks
            self._lost()


# FOR UPDATE: waits for the writes that checked the previous token (FOR KEY SHARE) to commit.
_STAMP = ("UPDATE replaykit_runs SET owner = %s WHERE id = (SELECT id FROM replaykit_runs WHERE workflow_id = %s "
          "ORDER BY generation DESC LIMIT 1 FOR UPDATE)")
# The same, unless another keeper marked the run (its mark changes only under the run's lock, held here),
# clearing the taker's own mark: the newest run's id, mark (as it was) and status either way.
_STAMP_UNLESS_KEPT = (
    "WITH n AS (SELECT id, keeper, status FROM replaykit_runs WHERE workflow_id = %s "
    "ORDER BY generation DESC LIMIT 1), "
    "s AS (UPDATE replaykit_runs SET owner = %s, keeper = NULL WHERE id = (SELECT r.id FROM replaykit_runs r "
    "JOIN n ON r.id = n.id "
    "WHERE n.keeper IS NULL OR n.keeper = %s FOR UPDATE OF r) RETURNING id) "
    "SELECT n.id, n.keeper, n.status FROM n")


_STAMP_MANY = (
    "UPDATE replaykit_runs SET owner = t.token FROM unnest(%s::text[], %s::bigint[]) AS t(wid, token) "
    "WHERE replaykit_runs.id = (SELECT id FROM replaykit_runs n WHERE n.workflow_id = t.wid "
    "ORDER BY generation DESC LIMIT 1 FOR UPDATE) RETURNING t.wid, replaykit_runs.id, replaykit_runs.keeper, "
    "replaykit_runs.status")


OWNER_SQL = """
SELECT a.application_name, l.pid, a.client_addr, a.client_hostname
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %s AND l.objid::bigint = %s
LIMIT 1
"""


def owner_params(key: str) -> tuple[int, int]:
    """How ``pg_locks`` shows a bigint advisory key: its high and low 32 bits, as unsigned oids."""
    k = int64_key(key) & 0xFFFFFFFFFFFFFFFF
    return k >> 32, k & 0xFFFFFFFF


def describe_owner(row: tuple[object, ...]) -> str:
    name, pid, addr, host = row
    client = f", client {host or addr}" if (host or addr) else ""
    return f"{name or 'a client'} (PostgreSQL backend pid {pid}{client})"


class Listener:
    """A thread that LISTENs on :data:`CHANNEL` and counts notifications, so that asking
    whether anything changed costs no round trip. While it is not listening (not started,
    or its connection lost and not yet back), :meth:`version` is ``None``: anything may have changed."""

    def __init__(self, open_connection: Callable[[], Connection]) -> None:
        self._open = open_connection
        self._conn: Connection | None = None
        self._count = 0
        self._mutex = threading.Lock()
        self._wake_r = self._wake_w = -1  # a pipe that wakes the thread to stop
        self._thread: threading.Thread | None = None
        self._closed = False

    def version(self) -> int | None:
        """The count of notifications seen, once listening (starts the listener on first use); ``None`` while
        not listening (the connection lost, or not made yet): every look then says "changed"."""
        with self._mutex:
            if self._thread is None and not self._closed:
                try:
                    self._listen()  # synchronously: every commit after this returns is counted
                except StoreError:  # the server unreachable (restarting): "changed", and asked again next time
                    return None
                self._wake_r, self._wake_w = os.pipe()
                self._thread = threading.Thread(target=self._serve, name="replaykit-pg-listener", daemon=True)
                self._thread.start()
            self._drain()  # what has arrived already (one recv), not only what the thread has read
            return self._count if self._conn is not None else None

    def _listen(self) -> None:
        conn = self._open()
        conn.execute(f"LISTEN {CHANNEL}")
        self._conn = conn

    def _drain(self) -> None:
        """Count the notifications that have arrived; notice a lost connection (under the mutex)."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.pgconn.consume_input()
            while conn.pgconn.notifies() is not None:
                self._count += 1
        except psycopg.Error:
            pass
        if conn.pgconn.status != pq.ConnStatus.OK:
            conn.close()
            self._conn = None
            self._count += 1

    def _serve(self) -> None:
        while not self._closed:
            conn = self._conn
            if conn is None:  # lost: listen again every half second until closed
                if select.select([self._wake_r], [], [], 0.5)[0]:
                    return
                try:
                    with self._mutex:
                        self._listen()
                        self._count += 1
                except (psycopg.Error, StoreError):
                    pass
                continue
            if self._wake_r in select.select([conn.pgconn.socket, self._wake_r], [], [])[0]:
                return
            with self._mutex:
                self._drain()

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is not None:
                os.write(self._wake_w, b"x")
        if thread is not None:
            thread.join(timeout=5)
            os.close(self._wake_r)
            os.close(self._wake_w)
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
