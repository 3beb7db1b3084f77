"""The embedded default store: one SQLite file in WAL mode.

Durability is a dial (``docs/durability.md``): ``"crash"`` (default) commits
with ``synchronous=NORMAL`` and survives the process being killed;
``"power"`` uses ``synchronous=FULL`` and also survives power loss. Each
durable step is one ``INSERT`` committed on its own: one commit, nothing more.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from .. import payloads
from ..errors import (
    CorruptStoreError,
    IllegalTransitionError,
    NotAStoreError,
    StoreTooNewError,
    WorkflowLockedError,
    WorkflowNotFoundError,
)
from ..history import Event, Status, WorkflowInfo
from .base import UNSET, Signal, Store
from .locks import FileLocks

SCHEMA_VERSION = 1
APPLICATION_ID = 0x524B4954  # "RKIT" in the SQLite header: marks a replaykit store
_SQLITE_MAGIC = b"SQLite format 3\x00"


class Durability(str, enum.Enum):
    """What a committed step survives."""

    CRASH = "crash"  # the process being killed (synchronous=NORMAL)
    POWER = "power"  # power loss / OS crash as well (synchronous=FULL, fsync per commit)


_SYNCHRONOUS = {Durability.CRASH: "NORMAL", Durability.POWER: "FULL"}

# sqlite-utils cannot declare WITHOUT ROWID tables; the history table is one
# (a single b-tree keyed by (run, seq): one insert per step, no extra index).
_EVENTS_DDL = """
CREATE TABLE events (
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    encoding TEXT NOT NULL,
    payload,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID
"""
_INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_EVENT_COLUMNS = "seq, step, kind, name, at, outcome, encoding, payload"
_SELECT_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM events WHERE run = ? ORDER BY seq"
_RUN_COLUMNS = "workflow_id, name, status, created_at, updated_at, custom_status"
_NEWEST = "generation = (SELECT MAX(generation) FROM runs r WHERE r.workflow_id = runs.workflow_id)"


def _check_header(path: str) -> None:
    """Refuse files that are not SQLite, or are visibly truncated, before SQLite touches them."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(_SQLITE_MAGIC):
        if len(header) < len(_SQLITE_MAGIC) and _SQLITE_MAGIC.startswith(header):
            raise CorruptStoreError(f"{path}: the file is truncated ({size} bytes): not even an SQLite header")
        raise NotAStoreError(
            f"{path} is not an SQLite database, so it cannot be a replaykit store. "
            "Pass the path of a replaykit store, or a path that does not exist yet. The file was not changed."
        )
    if len(header) < 100:
        raise CorruptStoreError(f"{path}: the file is truncated ({size} bytes, header incomplete)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if page_size and pages and size < pages * page_size:
        raise CorruptStoreError(
            f"{path}: the file is truncated: its header describes {pages} pages of {page_size} bytes "
            f"({pages * page_size} bytes) but the file holds {size}. Restore it from a backup; "
            "replaykit will not overwrite it."
        )


@contextmanager
def _translated(path: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if type(exc) is sqlite3.DatabaseError:  # malformed image, not a database, ...
            raise CorruptStoreError(f"{path}: SQLite cannot read the database: {exc}") from exc
        raise


class SqliteStore(Store):
    """A replaykit store in one SQLite file (created if absent, refused if foreign)."""

    def __init__(self, path: str | os.PathLike[str], *, durability: Durability | str = Durability.CRASH) -> None:
        self.path = os.fspath(path)
        self.durability = Durability(durability)
        _check_header(self.path)
        self._local = threading.local()
        self._all_conns: list[sqlite3.Connection] = []
        self._mutex = threading.Lock()
        self._runs: dict[str, int] = {}
        with _translated(self.path):
            conn = self._conn()
            self._init_schema(conn)  # refuses foreign files before anything is written
            conn.execute("PRAGMA journal_mode = WAL")  # persistent, stored in the file
        self._locks = FileLocks(self.path)

    # -- connections and schema ------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   cached_statements=64)
            with _translated(self.path):
                conn.execute("PRAGMA busy_timeout = 10000")
                conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.durability]}")
            self._local.conn = conn
            with self._mutex:
                self._all_conns.append(conn)
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            db = sqlite_utils.Database(conn)
            if app_id == APPLICATION_ID:
                if version > SCHEMA_VERSION:
                    raise StoreTooNewError(
                        f"{self.path} was written by a newer replaykit (store schema {version}; this "
                        f"version reads up to {SCHEMA_VERSION}). Upgrade replaykit to use it; "
                        "the file was not changed."
                    )
                conn.execute("COMMIT")
                return
            tables = db.table_names()
            if tables:
                raise NotAStoreError(
                    f"{self.path} is an SQLite database of something else (tables: "
                    f"{', '.join(tables[:5])}), not a replaykit store. Use a separate file for "
                    "replaykit; this one was not changed."
                )
            self._create_schema(conn, db)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _create_schema(conn: sqlite3.Connection, db: sqlite_utils.Database) -> None:
        meta, runs, signals = (db.table(name) for name in ("meta", "runs", "signals"))
        meta.create({"key": str, "value": str}, pk="key")
        meta.insert_all([
            {"key": "schema_version", "value": str(SCHEMA_VERSION)},
            {"key": "payload_format", "value": str(payloads.FORMAT_VERSION)},
        ])
        runs.create(
            {"id": int, "workflow_id": str, "generation": int, "name": str, "status": str,
             "created_at": float, "updated_at": float, "custom_status": str},
            pk="id", not_null={"workflow_id", "generation", "name", "status"},
        )
        runs.create_index(["workflow_id", "generation"], unique=True)
        runs.create_index(["status"])
        conn.execute(_EVENTS_DDL)
        signals.create(
            {"id": int, "workflow_id": str, "name": str, "encoding": str, "payload": str,
             "sent_at": float, "consumed": int},
            pk="id", defaults={"consumed": 0},
        )
        signals.create_index(["workflow_id", "name", "consumed"])
        # A partial index, which sqlite-utils cannot declare: finds the unconsumed few among all signals.
        conn.execute("CREATE INDEX signals_unconsumed ON signals (workflow_id) WHERE consumed = 0")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        if getattr(self._local, "batching", False):  # part of the open batch: committed with it
            with _translated(self.path):
                self._begin_batch(conn)
                yield conn
            return
        with _translated(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- group commit --------------------------------------------------------------------

    def batch(self) -> None:
        """From now on, this thread's writes share one transaction until :meth:`commit`."""
        self._local.batching = True

    def commit(self) -> None:
        """Commit this thread's batch (one fsync in ``power`` mode, for all its writes)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.in_transaction:
            with _translated(self.path):
                conn.execute("COMMIT")

    @staticmethod
    def _begin_batch(conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")

    def _run(self, workflow_id: str) -> int:
        """The row id of the newest run of ``workflow_id`` (cached: runs only ever get newer)."""
        run = self._runs.get(workflow_id)
        if run is None:
            with _translated(self.path):
                row = self._conn().execute(
                    "SELECT id FROM runs WHERE workflow_id = ? ORDER BY generation DESC LIMIT 1", (workflow_id,)
                ).fetchone()
            if row is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
            run = self._runs[workflow_id] = row[0]
        return run

    # -- the Store interface ----------------------------------------------------

    def create(self, workflow_id: str, name: str, start: Event, status: Status = Status.RUNNING) -> bool:
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO runs (workflow_id, generation, name, status, created_at, updated_at) "
                "VALUES (?, 1, ?, ?, ?, ?)",
                (workflow_id, name, status.value, start.at, start.at),
            )
            if cur.rowcount == 0:
                return False
            assert cur.lastrowid is not None
            self._insert(conn, cur.lastrowid, start)
            self._runs[workflow_id] = cur.lastrowid
            return True

    def info(self, workflow_id: str) -> WorkflowInfo | None:
        with _translated(self.path):
            row = self._conn().execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE workflow_id = ? ORDER BY generation DESC LIMIT 1",
                (workflow_id,),
            ).fetchone()
        return None if row is None else _info(row)

    def events(self, workflow_id: str) -> Iterator[Event]:
        run = self._run(workflow_id)
        with _translated(self.path):
            yield from map(Event._make, self._conn().execute(_SELECT_EVENTS, (run,)))

    def last_event(self, workflow_id: str) -> Event | None:
        run = self._run(workflow_id)
        with _translated(self.path):
            row = self._conn().execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE run = ? ORDER BY seq DESC LIMIT 1", (run,)).fetchone()
        return None if row is None else Event(*row)

    def _insert(self, conn: sqlite3.Connection, run: int, e: Event) -> None:
        try:
            conn.execute(_INSERT_EVENT, (run, *e))
        except sqlite3.IntegrityError as exc:
            raise WorkflowLockedError(
                f"event {e.seq} of this workflow was already recorded by another driver; "
                "two processes are driving the same workflow. Nothing was overwritten."
            ) from exc

    def record(self, workflow_id: str, event: Event, *, status: Status | None = None,
               consume_signal: int | None = None, custom_status: Any = UNSET) -> None:
        run = self._run(workflow_id)
        if status is None and consume_signal is None and custom_status is UNSET:  # hot path: one INSERT
            conn = self._conn()
            try:
                if getattr(self._local, "batching", False):
                    self._begin_batch(conn)
                self._insert(conn, run, event)
            except sqlite3.DatabaseError as exc:
                with _translated(self.path):
                    raise exc
            return
        with self._transaction() as conn:
            self._insert(conn, run, event)
            if status is not None:
                conn.execute("UPDATE runs SET status = ?, updated_at = ? WHERE id = ?",
                             (status.value, event.at, run))
            if consume_signal is not None:
                conn.execute("UPDATE signals SET consumed = 1 WHERE id = ?", (consume_signal,))
            if custom_status is not UNSET:
                conn.execute("UPDATE runs SET custom_status = ? WHERE id = ?", (json.dumps(custom_status), run))

    def continue_as_new(self, workflow_id: str, result: Event, start: Event) -> None:
        run = self._run(workflow_id)
        with self._transaction() as conn:
            self._insert(conn, run, result)
            conn.execute("UPDATE runs SET status = ?, updated_at = ? WHERE id = ?",
                         (Status.CONTINUED.value, result.at, run))
            cur = conn.execute(
                "INSERT INTO runs (workflow_id, generation, name, status, created_at, updated_at, custom_status) "
                "SELECT workflow_id, generation + 1, name, ?, ?, ?, custom_status FROM runs WHERE id = ?",
                (Status.RUNNING.value, start.at, start.at, run),
            )
            assert cur.lastrowid is not None
            self._insert(conn, cur.lastrowid, start)
        self._runs[workflow_id] = cur.lastrowid

    def set_custom_status(self, workflow_id: str, value: Any) -> None:
        run = self._run(workflow_id)
        with _translated(self.path):
            self._conn().execute("UPDATE runs SET custom_status = ? WHERE id = ?", (json.dumps(value), run))

    def set_status(self, workflow_id: str, status: Status, at: float) -> Status:
        run = self._run(workflow_id)
        with self._transaction() as conn:
            old = Status(conn.execute("SELECT status FROM runs WHERE id = ?", (run,)).fetchone()[0])
            if old is not status and not old.can_become(status):
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {old.value}; it cannot become {status.value}")
            conn.execute("UPDATE runs SET status = ?, updated_at = ? WHERE id = ?", (status.value, at, run))
        return old

    def send_signal(self, workflow_id: str, name: str, encoding: str, payload: str | bytes,
                    at: float) -> None:
        self._run(workflow_id)  # the id must exist
        with _translated(self.path):
            self._conn().execute(
                "INSERT INTO signals (workflow_id, name, encoding, payload, sent_at, consumed) "
                "VALUES (?, ?, ?, ?, ?, 0)",
                (workflow_id, name, encoding, payload, at),
            )

    def next_signal(self, workflow_id: str, name: str) -> Signal | None:
        with _translated(self.path):
            row = self._conn().execute(
                "SELECT id, name, encoding, payload, sent_at FROM signals "
                "WHERE workflow_id = ? AND name = ? AND consumed = 0 ORDER BY id LIMIT 1",
                (workflow_id, name),
            ).fetchone()
        return None if row is None else Signal(*row)

    def inbox(self) -> set[str]:
        with _translated(self.path):
            rows = self._conn().execute("SELECT DISTINCT workflow_id FROM signals WHERE consumed = 0").fetchall()
        return {row[0] for row in rows}

    def consume_signal(self, signal_id: int) -> None:
        with _translated(self.path):
            self._conn().execute("UPDATE signals SET consumed = 1 WHERE id = ?", (signal_id,))

    def list(self, status: Status | None = None) -> list[WorkflowInfo]:
        db = sqlite_utils.Database(self._conn())
        where = _NEWEST + (" AND status = ?" if status else "")
        with _translated(self.path):
            rows = db.table("runs").rows_where(where, [status.value] if status else [], order_by="id",
                                               select=_RUN_COLUMNS)
            return [_info(tuple(r.values())) for r in rows]

    def try_lock(self, workflow_id: str) -> bool:
        return self._locks.try_acquire(workflow_id)

    def unlock(self, workflow_id: str) -> None:
        self._locks.release(workflow_id)

    def lock_owner(self, workflow_id: str) -> str | None:
        pid = self._locks.holder(workflow_id)
        return None if pid is None else f"pid {pid} on {socket.gethostname()}"

    def changed(self) -> bool:
        with _translated(self.path):
            version: int = self._conn().execute("PRAGMA data_version").fetchone()[0]
        before, self._local.data_version = getattr(self._local, "data_version", None), version
        return before != version

    def close(self) -> None:
        with self._mutex:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, durability={self.durability.value!r})"


def _info(row: tuple[Any, ...]) -> WorkflowInfo:
    custom = None if row[5] is None else json.loads(row[5])
    return WorkflowInfo(row[0], row[1], Status(row[2]), row[3], row[4], custom)
