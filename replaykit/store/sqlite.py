"""The embedded default store: one SQLite file in WAL mode.

Durability is a dial (``docs/durability.md``): ``"crash"`` (default) commits
with ``synchronous=NORMAL`` and survives the process being killed;
``"power"`` uses ``synchronous=FULL`` and also survives power loss. Each
durable step is one ``INSERT`` committed on its own: one commit, nothing more.
"""

from __future__ import annotations

import builtins
import enum
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import Any
from urllib.parse import quote

from ..errors import (
    IllegalTransitionError,
    StoreError,
    WorkflowNotFoundError,
)
from ..history import Event, Status, WorkflowInfo
from ..keys import Keyring
from ..payloads import Codec
from . import chain
from .base import (
    RESTARTABLE,
    UNSET,
    Generation,
    Secrets,
    Signal,
    Store,
    continued_status,
    find_filters,
    generation_from_row,
    info_from_row,
    sql_limit,
    status_of,
)
from .held import HeldRuns
from .keepers import Keepers, keeper_key, read_mark
from .locks import FileLocks, stores_open
from .sqlite_access import read_only_error, read_only_query
from .sqlite_errors import cannot_open, refused, translated, translated_error, undecodable
from .sqlite_history import ChainedHistory, delete_ended
from .sqlite_schema import KEEPERS, ensure_schema, identity_kept
from .sqlite_work import SqliteWork, ended, place, restarted, wake
from .work import Placement


class Durability(str, enum.Enum):
    """What a committed step survives."""

    CRASH = "crash"  # the process being killed (synchronous=NORMAL)
    POWER = "power"  # power loss / OS crash as well (synchronous=FULL, fsync per commit)

    @classmethod
    def _missing_(cls, value: object) -> Durability:
        raise ValueError(f"durability= must be one of {', '.join(repr(d.value) for d in cls)} (what a committed "
                         f"step survives: the process killed, or a power loss as well); got {value!r}")


_SYNCHRONOUS = {Durability.CRASH: "NORMAL", Durability.POWER: "FULL"}
_RUN_COLUMNS = ("workflow_id, name, status, created_at, updated_at, custom_status, "
                "(SELECT queue FROM work w WHERE w.workflow_id = runs.workflow_id), "
                "(SELECT 'code version ' || problem_version || ': ' || problem FROM work w "
                "WHERE w.workflow_id = runs.workflow_id)")
_NEWEST_RUN = "SELECT {} FROM runs WHERE workflow_id = ? ORDER BY generation DESC LIMIT 1"
# A run is created only where its id has no row at all: a row whose generation was changed (not 1)
# must be read, and refused as damaged, not joined by a second first generation.
_CREATE_RUN = ("INSERT INTO runs (workflow_id, generation, name, status, created_at, updated_at) "
               "SELECT ?, 1, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM runs WHERE workflow_id = ?)")
_MARK = _NEWEST_RUN.format("id, status, keeper")  # store/keepers.py
# a store that holds none gets its key file made by its first run; one that does keeps the key it was recorded with
_HOLDS_HISTORY = "SELECT EXISTS (SELECT 1 FROM runs) OR EXISTS (SELECT 1 FROM signals)"


class SqliteStore(ChainedHistory, SqliteWork, Store):
    """A replaykit store in one SQLite file: created if absent (with ``create=False`` it must exist),
    refused if foreign. Only SQLite reads the file: a plain ``open()`` and ``close()`` of a database
    this process has open would drop SQLite's POSIX locks on it, and let another process delete the
    WAL under us.

    A store this process may not write (the file, or the directory its WAL needs), or one opened
    with ``read_only=True``, is read as it stands: its runs, lists, queries and the results of runs
    that ended work; anything that must record raises :class:`StoreReadOnlyError` naming the path.
    """

    batched_starts = True  # see Store.batched_starts

    def __init__(self, path: str | os.PathLike[str], *, durability: Durability | str = Durability.CRASH,
                 create: bool = True, secret: Secrets = None, pickle: str = "signed", read_only: bool = False,
                 migrate: bool = False) -> None:
        self.path = os.fspath(path)
        self.codec = Codec(Keyring.configured(secret, key_file=self.path + ".key", may_make=self._holds_no_history),
                           pickle)
        self.durability = Durability(durability)
        self._uri = "file:" + quote(os.path.abspath(self.path))  # what pathname2url does on POSIX
        self._local = threading.local()
        self._all_conns: list[sqlite3.Connection] = []
        self._mutex = threading.Lock()
        # workflow id -> (row id, chain seed) of its newest run, while this store holds the id's lock
        self._held: HeldRuns[tuple[int, bytes]] = HeldRuns()
        # run row id -> (seq, checksum) of the last event this store wrote for it, kept like _held
        self._heads: dict[int, tuple[int, bytes]] = {}
        # run row ids of runs this store created without a work row, kept like _heads: only create() places a
        # run in the work queue, so their end has no work row to clear
        self._unplaced: set[int] = set()
        self._locks = FileLocks(self.path)  # counts this store as a user of the file; no descriptor yet
        self._keepers = Keepers(self._locks.try_acquire, self._locks.release, self._locks.holds)
        self._opened = False  # until then, SQLite's errors are judged by refused()
        try:
            # how SQLite reads a store this process may not write (None: it may)
            self._read_only_query = read_only_query(self.path, wanted=read_only)
            self.read_only = read_only or self._read_only_query is not None
            try:
                conn = self._conn("rwc" if create and not self.read_only else "rw")
                # refuses foreign files before anything is written
                schema = ensure_schema(conn, self.path, create, self._chain_for_a_migration,
                                       writable=not self.read_only, migrate=migrate)
                self._marks_runs = schema >= KEEPERS  # a reader reads schema 3, which has no keeper column
                self._identity_kept, self._chain_of_keys = identity_kept(conn), None
            except sqlite3.DatabaseError as exc:
                self.close()
                raise refused(self.path, exc, in_use=stores_open(self.path) > 0) from exc
            except UnicodeDecodeError as exc:
                raise undecodable(self.path, exc) from exc
            if not self.read_only:
                with translated(self.path):
                    conn.execute("PRAGMA journal_mode = WAL")  # persistent, stored in the file
            self._opened = True
        except BaseException:
            self.close()
            raise

    def _holds_no_history(self) -> bool:
        """May a write make the store's missing key file? Only while it holds no run (asked outside a
        transaction: create() asks before its own)."""
        return not self._read(_HOLDS_HISTORY)[0][0]

    def _chain_for_a_migration(self) -> chain.Chain:
        """A migration checksums a store from before checksums (its owner vouched for it): with the key file
        made if it has none yet, and the store's identity as the migration's transaction reads it."""
        self.codec.keys.make_key_file()
        self._identity_kept, self._chain_of_keys = identity_kept(self._conn()), None
        return self.chain()

    # -- connections and schema ------------------------------------------------

    def _conn(self, mode: str = "rw") -> sqlite3.Connection:
        """This thread's connection. Once the store exists it is opened ``rw``: never created again."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                query = self._read_only_query or f"mode={mode}"
                conn = sqlite3.connect(f"{self._uri}?{query}", uri=True, isolation_level=None,
                                       check_same_thread=False, cached_statements=64)
            except sqlite3.Error as exc:
                raise cannot_open(self.path, exc, create=query == "mode=rwc") from exc
            with self._mutex:
                self._all_conns.append(conn)
            self._local.conn = conn
            with translated(self.path) if self._opened else nullcontext():
                conn.execute("PRAGMA busy_timeout = 10000")
                conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.durability]}")
                if self.read_only:  # opened read-write only for SQLite's log keeping: no statement writes
                    conn.execute("PRAGMA query_only = 1")
        return conn

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        conn = self._conn()
        if getattr(self._local, "batching", False):  # part of the open batch: committed with it
            return _InBatch(self, conn)
        return self._own_transaction(conn)

    @contextmanager
    def _own_transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        with translated(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on a full disk or an I/O error
                    conn.execute("ROLLBACK")
                raise

    # -- group commit --------------------------------------------------------------------

    def batch(self) -> None:
        """From now on, this thread's writes share one transaction until :meth:`commit`."""
        self._local.batching = True
        self._held.batch()

    def unbatch(self) -> None:
        """This thread's writes commit on their own again (after its last :meth:`commit`)."""
        self._local.batching = False
        self._held.unbatch()

    def commit(self) -> None:
        """Commit this thread's batch (one fsync in ``power`` mode, for all its writes).

        Raises if SQLite rolled the batch back (a full disk, an I/O error): none of it is recorded.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "open", False) and not conn.in_transaction:
            self._rolled_back_meanwhile()  # sets self._local.lost
        self._local.open = False
        lost: StoreError | None = getattr(self._local, "lost", None)
        if lost is not None:
            self._local.lost = None
            raise type(lost)(f"{lost} None of this batch's writes was recorded.") from lost
        if conn is not None and conn.in_transaction:
            try:
                with translated(self.path):
                    conn.execute("COMMIT")
            except BaseException:
                self._forget_all()  # what the batch wrote may be rolled back: read runs and heads afresh
                raise

    def _begin_write(self, conn: sqlite3.Connection) -> None:
        """Before a write of the open batch (see :class:`_InBatch`): begin the batch if it is not open;
        refuse the write once SQLite has rolled the batch back."""
        lost: StoreError | None = getattr(self._local, "lost", None)
        if lost is not None:
            raise type(lost)(f"{lost} (an earlier write of this batch; SQLite rolled the batch back)")
        if getattr(self._local, "open", False) and not conn.in_transaction:
            raise self._rolled_back_meanwhile()
        if not conn.in_transaction:
            with translated(self.path):
                conn.execute("BEGIN IMMEDIATE")
            self._local.open = True

    def _write_failed(self, conn: sqlite3.Connection, exc: BaseException) -> BaseException:
        """A write of the open batch raised ``exc``: the error to raise (SQLite's said as replaykit's);
        if SQLite rolled the batch back with it, the batch is lost."""
        error = translated_error(self.path, exc)
        if isinstance(error, StoreError) and not conn.in_transaction:
            self._local.lost = error
            self._local.open = False  # known lost: said by this error, not found out later
            self._forget_all()  # the runs and heads written in the batch were rolled back with it
        return error

    def _rolled_back_meanwhile(self) -> StoreError:
        """The batch this thread began is gone without a commit: SQLite rolled it back on an error of
        another statement on its connection (an I/O error or no memory in a read can). Its writes are
        lost, and the rest of the batch must not be committed without them."""
        lost = StoreError(f"{self.path}: SQLite rolled back this batch after an error (of a read on its "
                          "connection); none of its writes was recorded.")
        self._local.lost = lost
        self._local.open = False
        self._forget_all()
        return lost

    def _forget(self, workflow_id: str) -> None:
        """Stop caching ``workflow_id``'s run and the head of its history (its lock changes hands, or a
        new generation starts)."""
        held = self._held.forget(workflow_id)
        if held is not None:
            self._heads.pop(held[0], None)
            self._unplaced.discard(held[0])

    def _forget_all(self) -> None:
        """A batch was lost: a run or event it wrote may be gone (and its row id taken by another process)."""
        self._held.forget_all()
        self._heads.clear()
        self._unplaced.clear()

    def _hold(self, workflow_id: str, run: int, generation: Any, mark: int | None = None) -> None:
        """Cache the newest run of ``workflow_id`` if this process holds the id's lock (then nobody
        else can start a newer generation or write to this one), as :meth:`HeldRuns.fill` allows."""
        if type(generation) is int and self._locks.holds(workflow_id):
            self._held.fill(workflow_id, (run, chain.seed(workflow_id, generation)), mark)

    def _run(self, workflow_id: str) -> int:
        """The row id of the newest run of ``workflow_id``: cached while this process holds the run
        (:meth:`_hold`), read afresh otherwise."""
        held = self._held.get(workflow_id)
        if held is not None:
            return held[0]
        mark = self._held.mark()
        row = self._read_one(_NEWEST_RUN.format("id, generation"), (workflow_id,))
        if row is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
        self._hold(workflow_id, row[0], row[1], mark)
        return int(row[0])

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Every row of a query, fetched at once: no statement (and no read snapshot) outlives the call."""
        conn = self._conn()
        with translated(self.path):
            return conn.execute(sql, params).fetchall()

    def _read_one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    # -- the Store interface ----------------------------------------------------

    def create(self, workflow_id: str, name: str, start: Event, status: Status = Status.RUNNING,
               history: Sequence[Event] = (), placement: Placement | None = None) -> bool:
        if self.read_only:  # a rerun of a run that exists is fine: nothing to record
            if self._read_one(_NEWEST_RUN.format("id"), (workflow_id,)) is not None:
                return False
            raise read_only_error(self.path, f"starting workflow {workflow_id!r} needs to record it")
        self._locks.check()  # a lock directory refused: said now, before a run nobody could drive is recorded
        self.codec.keys.load_to_write()  # a store's first run makes its key file
        with self._transaction() as conn:
            cur = conn.execute(_CREATE_RUN, (workflow_id, name, status.value, start.at, start.at, workflow_id))
            if cur.rowcount == 0:
                return False
            run = cur.lastrowid
            assert run is not None
            seed = chain.seed(workflow_id, 1)
            head = (-1, seed)  # the start chains from the run's seed
            for event in (start, *history):
                head = (event.seq, self._insert(conn, run, event, head))
            if status.is_terminal:
                self._seal(conn, run, (seed, status, head))
            if placement is not None:
                place(conn, workflow_id, name, placement, start.at)
        self._hold(workflow_id, run, 1)
        if self._held.get(workflow_id) is not None:
            self._heads[run] = head
            if placement is None:
                self._unplaced.add(run)
        return True

    def _newest(self, conn: sqlite3.Connection, workflow_id: str) -> tuple[int, Status]:
        """The newest run's row id and status, read in the caller's transaction."""
        row = conn.execute(_NEWEST_RUN.format("id, status"), (workflow_id,)).fetchall()
        if not row:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
        return row[0][0], status_of(row[0][1], workflow_id, self.path)

    def restart(self, workflow_id: str, start: Event, history: Sequence[Event] = ()) -> None:
        with self._transaction() as conn:  # the status check and the new generation in one transaction
            run, status = self._newest(conn, workflow_id)
            if status not in RESTARTABLE:
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {status.value}; only a failed, cancelled or timed-out run "
                    "can be restarted")
            cur = conn.execute(
                "INSERT INTO runs (workflow_id, generation, name, status, created_at, updated_at) "
                "SELECT workflow_id, generation + 1, name, ?, ?, ? FROM runs WHERE id = ?",
                (Status.RUNNING.value, start.at, start.at, run),
            )
            assert cur.lastrowid is not None
            for event in (start, *history):
                self._insert(conn, cur.lastrowid, event)
            restarted(conn, workflow_id, start.at)
        self._forget(workflow_id)  # a newer generation now

    def info(self, workflow_id: str) -> WorkflowInfo | None:
        row = self._read_one(_NEWEST_RUN.format(_RUN_COLUMNS), (workflow_id,))
        return None if row is None else info_from_row(row, self.path)

    def delete(self, workflow_ids: Sequence[str], *, ended_before: float | None = None) -> builtins.list[str]:
        if self.read_only:
            raise read_only_error(self.path, "deleting runs needs to write")
        with self._transaction() as conn:
            deleted = delete_ended(conn, workflow_ids, self.path, ended_before)
        for workflow_id in deleted:
            self._forget(workflow_id)
        return deleted

    def events(self, workflow_id: str) -> Iterator[Event]:
        return self._pages(self._run(workflow_id), workflow_id)

    def generations(self, workflow_id: str) -> builtins.list[Generation]:
        rows = self._read("SELECT generation, status, created_at, updated_at FROM runs WHERE workflow_id = ? "
                          "ORDER BY generation", (workflow_id,))
        if not rows:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
        return [generation_from_row(row, workflow_id, self.path) for row in rows]

    def generation_events(self, workflow_id: str, number: int) -> Iterator[Event]:
        row = self._read_one("SELECT id FROM runs WHERE workflow_id = ? AND generation = ?", (workflow_id, number))
        if row is None:
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no generation {number} in {self.path}")
        return self._pages(row[0], workflow_id)

    def record(self, workflow_id: str, event: Event, *, status: Status | None = None,
               consume_signal: int | None = None, custom_status: Any = UNSET) -> None:
        run = self._run(workflow_id)
        held = self._held.get(workflow_id)  # then nobody else writes the run: its head is the one we wrote
        head = self._heads.get(run) if held is not None else None
        if status is None and consume_signal is None and custom_status is UNSET:  # hot path: one INSERT
            conn = self._conn()
            with _InBatch(self, conn) if getattr(self._local, "batching", False) else translated(self.path):
                digest = self._insert(conn, run, event, head)
        else:
            with self._transaction() as conn:
                digest = self._insert(conn, run, event, head)
                if status is not None:
                    known = (held[1], status, (event.seq, digest)) if held is not None else None
                    self._set_status(conn, run, status, event.at, known)
                    if status.is_terminal and run not in self._unplaced:
                        ended(conn, workflow_id, event.at)
                if consume_signal is not None:
                    conn.execute("UPDATE signals SET consumed = 1 WHERE id = ?", (consume_signal,))
                if custom_status is not UNSET:
                    conn.execute("UPDATE runs SET custom_status = ? WHERE id = ?", (json.dumps(custom_status), run))
        if held is not None:
            self._heads[run] = (event.seq, digest)

    def continue_as_new(self, workflow_id: str, result: Event, start: Event) -> Status:
        run = self._run(workflow_id)
        with self._transaction() as conn:
            (was,) = conn.execute("SELECT status FROM runs WHERE id = ?", (run,)).fetchone()
            status = continued_status(was)
            self._insert(conn, run, result)
            self._set_status(conn, run, Status.CONTINUED, result.at)
            cur = conn.execute(
                "INSERT INTO runs (workflow_id, generation, name, status, created_at, updated_at, custom_status) "
                "SELECT workflow_id, generation + 1, name, ?, ?, ?, custom_status FROM runs WHERE id = ?",
                (status.value, start.at, start.at, run),
            )
            assert cur.lastrowid is not None
            self._insert(conn, cur.lastrowid, start)
        self._forget(workflow_id)
        return status

    def set_custom_status(self, workflow_id: str, value: Any) -> None:
        run = self._run(workflow_id)
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET custom_status = ? WHERE id = ?", (json.dumps(value), run))

    def set_status(self, workflow_id: str, status: Status, at: float) -> Status:
        with self._transaction() as conn:  # the newest generation, read in the transaction that changes it
            run, old = self._newest(conn, workflow_id)
            if old is not status and not old.can_become(status):
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {old.value}; it cannot become {status.value}")
            self._set_status(conn, run, status, at)
            if status.is_terminal:
                ended(conn, workflow_id, at)
            elif old is Status.PAUSED:  # resumed: whoever is free drives it
                wake(conn, workflow_id, at)
        return old

    def send_signal(self, workflow_id: str, name: str, encoding: str, payload: str | bytes,
                    at: float) -> None:
        with self._transaction() as conn:  # the status check and the insert in one transaction
            _, status = self._newest(conn, workflow_id)
            if status.is_terminal:
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {status.value}; it can no longer take signals")
            conn.execute(
                "INSERT INTO signals (workflow_id, name, encoding, payload, sent_at, consumed, digest) "
                "VALUES (?, ?, ?, ?, ?, 0, ?)",
                (workflow_id, name, encoding, payload, at,
                 self.signal_digest(workflow_id, name, encoding, payload, at)),
            )
            wake(conn, workflow_id, at)

    def next_signal(self, workflow_id: str, name: str) -> Signal | None:
        row = self._read_one(
            "SELECT id, name, encoding, payload, sent_at, digest FROM signals "
            "WHERE workflow_id = ? AND name = ? AND consumed = 0 ORDER BY id LIMIT 1",
            (workflow_id, name),
        )
        return None if row is None else self.checked_signal(workflow_id, row)

    def inbox(self) -> set[str]:
        return {row[0] for row in self._read("SELECT DISTINCT workflow_id FROM signals WHERE consumed = 0")}

    def inbox_of(self, names: Sequence[str]) -> set[str]:
        marks = ", ".join("?" * len(names))
        return {row[0] for row in self._read(
            f"SELECT DISTINCT workflow_id FROM signals WHERE consumed = 0 AND name IN ({marks})", tuple(names))}

    def consume_signal(self, signal_id: int) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE signals SET consumed = 1 WHERE id = ?", (signal_id,))

    def paused(self) -> set[str]:
        # Through the status index: a paused row is always its id's newest (only a running run pauses).
        return {row[0] for row in self._read("SELECT workflow_id FROM runs WHERE status = 'paused'")}

    def list(self, status: Status | None = None) -> list[WorkflowInfo]:
        # The newest generation of each id from the rows themselves (a window), not through an index:
        # a damaged row that no longer matches its index entry is then listed (and refused), not hidden.
        where = "newest = 1" + (" AND status = ?" if status else "")
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM (SELECT *, row_number() OVER (PARTITION BY workflow_id "
                          f"ORDER BY generation DESC) AS newest FROM runs) AS runs WHERE {where} ORDER BY id",
                          (status.value,) if status else ())
        return [info_from_row(row, self.path) for row in rows]

    def find(self, *, statuses: Sequence[Status | str] = (), workflows: Sequence[str] = (), prefix: str = "",
             since: float | None = None, until: float | None = None,
             limit: int | None = None) -> builtins.list[WorkflowInfo]:
        where, params = find_filters(statuses, workflows, prefix, since, until, "?")
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM (SELECT *, row_number() OVER (PARTITION BY workflow_id "
                          f"ORDER BY generation DESC) AS newest FROM runs) AS runs "
                          f"WHERE {' AND '.join(['newest = 1', *where])} ORDER BY id DESC LIMIT ?",
                          (*params, -1 if (bound := sql_limit(limit)) is None else bound))
        return [info_from_row(row, self.path) for row in rows]

    def try_lock(self, workflow_id: str, keeper: str | None = None) -> bool:
        if not self.try_lock_new(workflow_id):
            return False
        if self.read_only:
            return True
        try:  # read under the lock: a mark is written before its run's lock is given up
            run, mark, status = self._mark(workflow_id)
            if mark is not None:
                if self._keepers.refuses(mark, status, keeper):
                    self._locks.release(workflow_id)
                    return False
                if mark == keeper:  # taken back by its keeper: nobody's mark while it is locked
                    with self._transaction() as conn:
                        conn.execute("UPDATE runs SET keeper = NULL WHERE id = ?", (run,))
        except BaseException:
            self._locks.release(workflow_id)
            raise
        return True

    def try_lock_new(self, workflow_id: str) -> bool:
        self._forget(workflow_id)
        if self.read_only:  # no lock can be taken (it is a write); a run that ended needs none to be read
            info = self.info(workflow_id)
            if info is not None and info.status.is_terminal:
                return True
            raise read_only_error(self.path, f"driving workflow {workflow_id!r} needs to record its steps")
        return self._locks.try_acquire(workflow_id)

    def unlock(self, workflow_id: str) -> None:
        self._forget(workflow_id)
        if not self.read_only:
            self._locks.release(workflow_id)

    def keep(self, workflow_id: str, keeper: str | None) -> None:
        if keeper is not None:
            self._keepers.hold(keeper)
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET keeper = ? WHERE id = ?", (keeper, self._run(workflow_id)))

    def keeper_of(self, workflow_id: str) -> str | None:
        if self.read_only:
            return None
        _, mark, status = self._mark(workflow_id)
        return mark if self._keepers.refuses(mark, status, None) else None

    def _mark(self, workflow_id: str) -> tuple[int | None, str | None, Status]:
        """The newest run's row id, keeper mark and status (no run: no mark), checked (store/keepers.py)."""
        row = self._read_one(_MARK, (workflow_id,))
        if row is None:
            return None, None, Status.RUNNING
        return (row[0], *read_mark(row[2], row[1], workflow_id, self.path))

    def let_go(self, keeper: str) -> None:
        self._keepers.let_go(keeper)

    def lock_owner(self, workflow_id: str) -> str | None:
        pid = self._locks.holder(workflow_id)
        kept = ""
        if pid is None and self._marks_runs:
            _, mark, _ = self._mark(workflow_id)
            if mark is None:
                return None
            pid, kept = self._locks.holder(keeper_key(mark)), ", an engine that keeps it out of memory"
        return None if pid is None else f"pid {pid} on {os.uname().nodename}{kept}"

    def changed(self) -> bool:
        version: int = self._read("PRAGMA data_version")[0][0]
        before, self._local.data_version = getattr(self._local, "data_version", None), version
        return before != version

    def close(self) -> None:
        """Close every connection, and give back the workflow locks taken through this store."""
        with self._mutex:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
        self._locks.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, durability={self.durability.value!r})"


class _InBatch:
    """One write of the open batch: committed with it. Once SQLite has rolled the batch back, the rest
    of it is refused until :meth:`SqliteStore.commit`: a batch's later writes must never be committed
    without its first. A class, not a ``@contextmanager``: a step's every write goes through it."""

    __slots__ = ("store", "conn")

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self.store, self.conn = store, conn

    def __enter__(self) -> sqlite3.Connection:
        self.store._begin_write(self.conn)
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            error = self.store._write_failed(self.conn, exc)
            if error is not exc:
                raise error from exc
