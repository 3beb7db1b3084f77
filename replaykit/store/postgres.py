"""The store for many machines: PostgreSQL through psycopg 3 (``pip install 'replaykit[postgres]'``).

``PostgresStore("postgresql://app@db/orders")`` has the semantics of ``SqliteStore``: the
same interface, errors and atomicity (``docs/postgres.md``). A durable step is one ``INSERT``
on an autocommit connection: one round trip, one commit. Durability is the same dial:
``"crash"`` commits with ``synchronous_commit = off`` (a commit survives this process being
killed; the server flushes it within a fraction of a second), ``"power"`` with ``on`` (each
commit is flushed to disk before it returns).

Writes that read and check a run's row first (signals, status changes, restart, continue-as-new)
take a transaction-level advisory lock on the workflow id before reading, so they are
serialised per id as SQLite serialises all writers; a plain step takes no advisory lock.

Fencing: the events of a run this store has locked are inserted only while the run's row carries
this store's token (``postgres_libpq.insert_event``); a store that does not hold the run records
its events only while no live process holds it, and takes the run from any stale owner.
"""

from __future__ import annotations

import builtins
import json
import secrets
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import psycopg  # here to say what is missing, before the modules below need it
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the PostgreSQL store needs psycopg 3: pip install 'replaykit[postgres]' (or 'psycopg[binary]')"
    ) from exc

from ..errors import IllegalTransitionError, WorkflowLockedError, WorkflowNotFoundError
from ..history import Event, Status, WorkflowInfo
from ..keys import SECRET_ENV, Keyring
from ..payloads import Codec
from . import chain
from .base import (
    RESTARTABLE,
    UNSET,
    Generation,
    Opening,
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
from .postgres_conn import (
    OWNER_SQL,
    AdvisoryLocks,
    Connection,
    Listener,
    Pool,
    alive,
    connect,
    describe_owner,
    int64_key,
    owner_params,
)
from .postgres_errors import translated
from .postgres_history import PAGE, SELECT_END, SELECT_PAGE, PostgresHistory, seal_from
from .postgres_libpq import event_sent, insert_event, send_event
from .postgres_runs import create_run, end_run
from .postgres_schema import KEEPERS, ensure_schema, identity_kept
from .postgres_work import PostgresWork, ended, restarted, wake
from .postgres_writes import Writes
from .sqlite import Durability
from .urls import redact
from .work import Placement

_SYNCHRONOUS_COMMIT = {Durability.CRASH: "off", Durability.POWER: "on"}
# A session idle inside a transaction this long is ended by the server: its process stopped (SIGSTOP, a
# frozen VM) with row locks that other processes' claims and writes wait for. A worker sets its lease.
_IDLE_TRANSACTION_LIMIT = 60.0

_NO_SECRET = (f"A PostgreSQL store's clients and workers share one: pass secret= to rk.Engine, rk.Client or "
              f"rk.Worker, or set {SECRET_ENV} in every process (docs/security.md); or record only JSON data.")
_INSERT_EVENTS = "INSERT INTO replaykit_events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_INSERT_UNFENCED = _INSERT_EVENTS + " ON CONFLICT DO NOTHING"
_NEXT_SIGNAL = ("SELECT id, name, encoding, payload, payload_bytes, sent_at, digest FROM replaykit_signals "
                "WHERE workflow_id = %s AND name = %s AND NOT consumed ORDER BY id LIMIT 1")
_RUN_COLUMNS = ("workflow_id, name, status, created_at, updated_at, custom_status, "
                "(SELECT queue FROM replaykit_work w WHERE w.workflow_id = r.workflow_id), "
                "(SELECT 'code version ' || problem_version || ': ' || problem FROM replaykit_work w "
                "WHERE w.workflow_id = r.workflow_id)")
_NEWEST_RUN = "SELECT {} FROM replaykit_runs r WHERE workflow_id = %s ORDER BY generation DESC LIMIT 1"
_SELECT_NEWEST_PAGE = SELECT_PAGE.replace("run = %s", f"run = ({_NEWEST_RUN.format('id')})")
_SELECT_NEWEST_END = SELECT_END.replace("run = %s", f"run = ({_NEWEST_RUN.format('id')})")
_NEWEST = "generation = (SELECT max(generation) FROM replaykit_runs n WHERE n.workflow_id = r.workflow_id)"
_NEW_GENERATION = (
    "INSERT INTO replaykit_runs (workflow_id, generation, name, status, created_at, updated_at, custom_status, owner) "
    "SELECT workflow_id, generation + 1, name, %s, %s, %s, {} FROM replaykit_runs WHERE id = %s "
    "RETURNING id, workflow_id, generation"
)
# A write made without the run's lock takes the run from a stale owner (FOR UPDATE: see postgres_conn._STAMP).
_REVOKE = ("UPDATE replaykit_runs SET owner = NULL WHERE id = "
           "(SELECT id FROM replaykit_runs WHERE id = %s AND owner IS NOT NULL FOR UPDATE)")


class PostgresStore(PostgresHistory, PostgresWork, Store):
    """A replaykit store in a PostgreSQL database: its tables are created if absent (with
    ``create=False`` they must exist), and a database holding other tables is refused.
    ``read_only``: opened only to be read: never created or migrated (a store of the previous schema
    is read as it stands), and every session read-only, so the server refuses any write.
    Thread-safe: each call borrows a pooled connection; a thread that batches keeps one."""

    networked = True
    _marks_runs = True  # runs carry keeper marks (schema 5 on): see __init__

    def __init__(self, url: str, *, durability: Durability | str = Durability.CRASH, create: bool = True,
                 secret: Secrets = None, pickle: str = "signed", migrate: bool = False,
                 read_only: bool = False) -> None:
        self.url = redact(url)
        self.read_only = read_only
        self.codec = Codec(Keyring.configured(secret, missing=_NO_SECRET), pickle)
        self.durability = Durability(durability)
        sync = _SYNCHRONOUS_COMMIT[self.durability]
        self._idle_transaction_limit = _IDLE_TRANSACTION_LIMIT
        opener = lambda: connect(url, self.url, sync, self._idle_transaction_limit, read_only)  # noqa: E731
        self._pool = Pool(opener)
        self._locks = AdvisoryLocks(opener, self.url)
        self._keepers = Keepers(lambda key: self._locks.try_acquire(key, None), self._locks.release,
                                self._locks.holds)
        self._listener = Listener(opener)
        self._writes = Writes(self._pool, self.url, self.durability)
        self._held: HeldRuns[int] = HeldRuns()  # workflow id -> row id of its newest run, while held here
        self._tokens: dict[str, int] = {}  # workflow id -> fencing token, from try_lock to unlock
        self._heads: dict[str, tuple[int, int, bytes]] = {}  # see PostgresHistory
        self._seeds: dict[str, tuple[int, bytes]] = {}
        self._local = threading.local()  # per thread: what changed() saw last
        self._page_reader: ThreadPoolExecutor | None = None
        self._reader_lock = threading.Lock()
        try:
            with self._pool.lent() as conn, translated(self.url):
                # refuses foreign databases before any write
                for_a_migration = lambda: self._chain_for_a_migration(conn)  # noqa: E731
                schema = ensure_schema(conn, self.url, create and not read_only, for_a_migration, migrate=migrate,
                                       writable=not read_only)
                self._marks_runs = schema >= KEEPERS  # a reader reads schema 4, which has no keeper column
                self._identity_kept, self._chain_of_keys = identity_kept(conn), None
        except BaseException:
            self.close()
            raise

    def _chain_for_a_migration(self, conn: Connection) -> chain.Chain:
        """The chain a migration checksums rows with: of the store's identity as its transaction reads it."""
        self._identity_kept, self._chain_of_keys = identity_kept(conn), None
        return self.chain()

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Every row of a query, fetched at once: no statement (and no snapshot) outlives the call.
        A read on a pooled connection the server had ended (a restart while it sat idle) is made
        once more on a fresh one: a read can be repeated, and the server may be back. (Not in a
        batch: its loss is the batch's, told at its commit, and nothing may be read past it.)"""
        used: Connection | None = None
        with translated(self.url):
            try:
                with self._writes.conn() as used:
                    return used.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if used is None or alive(used) or self._writes.batched():
                    raise
            with self._writes.conn() as conn:
                return conn.execute(sql, params).fetchall()

    def _read_one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    def _run(self, workflow_id: str) -> int:
        """The row id of the newest run of ``workflow_id``. Cached only while this store holds the
        id's lock (then nobody else can start a newer generation); read afresh otherwise."""
        run = self._held.get(workflow_id)
        if run is None:
            mark = self._held.mark()
            row = self._read_one(_NEWEST_RUN.format("id"), (workflow_id,))
            if row is None:
                raise self._not_found(workflow_id)
            run = row[0]
            self._hold_run(workflow_id, run, mark)
        return run

    def _hold_run(self, workflow_id: str, run: int, mark: int) -> None:
        """Cache a run read after ``mark`` if this store holds its lock (see :class:`HeldRuns`)."""
        if self._locks.holds(workflow_id):
            self._held.fill(workflow_id, run, mark)

    def _forget_run(self, workflow_id: str) -> None:
        self._held.forget(workflow_id)

    def _newest(self, conn: Connection, workflow_id: str) -> tuple[int, Status]:
        rows = conn.execute(_NEWEST_RUN.format("id, status"), (workflow_id,)).fetchall()
        if not rows:
            raise self._not_found(workflow_id)
        return rows[0][0], status_of(rows[0][1], workflow_id, self.url)

    def _not_found(self, workflow_id: str) -> WorkflowNotFoundError:
        return WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.url}")

    # -- the Store interface --------------------------------------------------------------

    def create(self, workflow_id: str, name: str, start: Event, status: Status = Status.RUNNING,
               history: Sequence[Event] = (), placement: Placement | None = None) -> bool:
        with self._writes.write(notify=False, single=True) as conn:  # the statement notifies
            events, seed = (start, *history), chain.seed(workflow_id, 1)
            digests = self.chained(events, seed)
            head = self.chain().seal(seed, status, (events[-1].seq, digests[-1])) if status.is_terminal else None
            return create_run(conn, workflow_id, name, status, events, digests, head,
                              self._tokens.get(workflow_id), placement)

    def restart(self, workflow_id: str, start: Event, history: Sequence[Event] = ()) -> None:
        with self._writes.write(serialize=workflow_id) as conn:  # the status check and the new generation
            run, status = self._newest(conn, workflow_id)
            if status not in RESTARTABLE:
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {status.value}; only a failed, cancelled or timed-out run "
                    "can be restarted")
            new = conn.execute(_NEW_GENERATION.format("NULL, NULL"), (Status.RUNNING.value, start.at, start.at, run))
            new_run, _, generation = new.fetchall()[0]
            self._insert_all(conn, new_run, (start, *history), chain.seed(workflow_id, generation))
            restarted(conn, workflow_id, start.at)

    def info(self, workflow_id: str) -> WorkflowInfo | None:
        row = self._read_one(_NEWEST_RUN.format(_RUN_COLUMNS), (workflow_id,))
        return None if row is None else info_from_row(row, self.url)

    def events(self, workflow_id: str) -> Iterator[Event]:
        return self.pages(self._run(workflow_id))

    def generations(self, workflow_id: str) -> builtins.list[Generation]:
        rows = self._read("SELECT generation, status, created_at, updated_at FROM replaykit_runs "
                          "WHERE workflow_id = %s ORDER BY generation", (workflow_id,))
        if not rows:
            raise self._not_found(workflow_id)
        return [generation_from_row(row, workflow_id, self.url) for row in rows]

    def generation_events(self, workflow_id: str, number: int) -> Iterator[Event]:
        row = self._read_one("SELECT id FROM replaykit_runs WHERE workflow_id = %s AND generation = %s",
                             (workflow_id, number))
        if row is None:
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no generation {number} in {self.url}")
        return self.pages(row[0])

    def opening(self, workflow_id: str, signal: str | None = None) -> Opening:
        """The three reads in one round trip (a pipeline); the history's later pages as :meth:`events`."""
        if not psycopg.Pipeline.is_supported():  # libpq older than 14
            return super().opening(workflow_id, signal)
        run = self._held.get(workflow_id)
        mark = self._held.mark()
        with self._writes.conn() as conn, translated(self.url):
            with conn.pipeline():
                row = conn.execute(_NEWEST_RUN.format("id, status, head, workflow_id, generation, " + _RUN_COLUMNS),
                                   (workflow_id,))
                page = (conn.execute(SELECT_PAGE, (run, -1, PAGE)) if run is not None
                        else conn.execute(_SELECT_NEWEST_PAGE, (workflow_id, -1, PAGE)))
                last = (conn.execute(SELECT_END, (run,)) if run is not None
                        else conn.execute(_SELECT_NEWEST_END, (workflow_id,)))
                waiting = None if signal is None else conn.execute(_NEXT_SIGNAL, (workflow_id, signal))
            rows, first, end = row.fetchall(), page.fetchall(), last.fetchall()
            waits = waiting is not None and bool(waiting.fetchall())
        if not rows:
            return Opening(None, iter(()), False)
        if run is None:
            self._hold_run(workflow_id, rows[0][0], mark)
        seal = seal_from([rows[0][1:5]], f"{workflow_id!r} in {self.url}")
        return Opening(info_from_row(rows[0][5:], self.url), self.pages(rows[0][0], first, seal, end), waits)

    def _reader(self) -> ThreadPoolExecutor:
        """The thread that reads pages ahead (started on first use)."""
        with self._reader_lock:
            if self._page_reader is None:
                self._page_reader = ThreadPoolExecutor(1, thread_name_prefix="replaykit-pg-pages")
            return self._page_reader

    def last_event(self, workflow_id: str) -> Event | None:
        return self.last(self._run(workflow_id))

    def _insert(self, conn: Connection, workflow_id: str, run: int, e: Event, seed: bytes | None = None) -> bytes:
        """Append one event with its checksum (returned): fenced by this store's token if it holds the
        run (else see :meth:`_unowned`). A duplicate ``seq`` is refused by the primary key without an
        error on the server, which would abort the whole transaction (a group-commit batch with it)."""
        token = self._tokens.get(workflow_id)
        digest = self.digest_of(conn, workflow_id, run, e, keep=token is not None, seed=seed)
        try:
            if token is not None:
                self._inserted(conn, workflow_id, run, e, token, insert_event(conn, run, e, token, digest))
                return digest
            params = (run, e.seq, e.step, e.kind, e.name, e.at, e.outcome, e.encoding,
                      *((e.payload, None) if type(e.payload) is str else (None, e.payload)), digest)
            if conn.execute(_INSERT_UNFENCED, params).rowcount != 1:
                raise self._duplicate(e)
        except BaseException:
            self.forget_head(workflow_id)
            raise
        return digest

    def _duplicate(self, e: Event) -> WorkflowLockedError:
        return WorkflowLockedError(
            f"event {e.seq} of this workflow was already recorded by another driver; "
            "two processes are driving the same workflow. Nothing was overwritten."
        )

    def _inserted(self, conn: Connection, workflow_id: str, run: int, e: Event, token: int, rows: int) -> None:
        """Raise unless the fenced insert of ``e`` inserted its row."""
        if rows == 1:
            return
        row = conn.execute("SELECT owner FROM replaykit_runs WHERE id = %s", (run,)).fetchall()
        if not row or row[0][0] != token:
            raise WorkflowLockedError(
                f"workflow {workflow_id!r} is no longer driven by this process: another process took it "
                f"over after this one lost its lock ({self.lock_owner(workflow_id) or 'no one holds it now'}). "
                f"Event {e.seq} was not recorded, nor anything else of this write; stop driving it here."
            )
        raise self._duplicate(e)

    def _unowned(self, conn: Connection, workflow_id: str, run: int) -> None:
        """Before a write of a run's events by a store that does not hold the run (``rk.cancel`` of a
        pending run): refuse it if a live process holds the run, else keep it free until commit and
        take it from any stale owner (a store whose lock died cannot record after this write).

        This store's own lock, on another thread (an engine looking at a pending run while a user
        cancels it), is not another process: the write goes on, as on SQLite."""
        take = "SELECT pg_try_advisory_xact_lock(%s)"
        key = int64_key(workflow_id)
        if not conn.execute(take, (key,)).fetchall()[0][0]:
            with self._locks.still():  # held by this store (another thread), or by another process?
                if self._locks.holds(workflow_id):
                    return  # ours: no one else can take it meanwhile, and our owner token stays
                free = conn.execute(take, (key,)).fetchall()[0][0]
            if not free:
                raise WorkflowLockedError(
                    f"workflow {workflow_id!r} is being driven by "
                    f"{self.lock_owner(workflow_id) or 'another process'}; "
                    "only the process driving it records its events, and nothing was recorded."
                )
        conn.execute(_REVOKE, (run,))

    def _insert_all(self, conn: Connection, run: int, events: Sequence[Event], seed: bytes) -> None:
        """A new run's first ``events`` (from seq 0), chained from its ``seed``."""
        with conn.cursor() as cur:
            cur.executemany(_INSERT_EVENTS, [
                (run, e.seq, e.step, e.kind, e.name, e.at, e.outcome, e.encoding,
                 *((e.payload, None) if type(e.payload) is str else (None, e.payload)), digest)
                for e, digest in zip(events, self.chained(events, seed), strict=True)])

    def record(self, workflow_id: str, event: Event, *, status: Status | None = None,
               consume_signal: int | None = None, custom_status: Any = UNSET) -> None:
        owned = workflow_id in self._tokens
        if owned and status is None and consume_signal is None and custom_status is UNSET:  # hot path
            run = self._run(workflow_id)  # cached under the lock; looked up before the write takes a connection
            with self._writes.write(notify=False, single=True) as conn:
                self._insert(conn, workflow_id, run, event)  # one INSERT: one round trip
            return
        token = self._tokens.get(workflow_id)
        if token is not None and status is not None and status.is_terminal and consume_signal is None:  # its end
            run = self._run(workflow_id)
            custom = None if custom_status is UNSET else (custom_status,)
            with self._writes.write(notify=False, single=True) as conn:  # the statement notifies
                digest = self.digest_of(conn, workflow_id, run, event, keep=False)
                head = self.seal(conn, workflow_id, run, status, (event.seq, digest))
                self._inserted(conn, workflow_id, run, event, token,
                               end_run(conn, workflow_id, run, event, (digest, head), token, status, custom))
            return
        changes_run = status is not None or custom_status is not UNSET
        with self._writes.write(serialize=workflow_id if changes_run else None) as conn:
            run = self._run(workflow_id)
            if not owned:
                self._unowned(conn, workflow_id, run)
            digest = self._insert(conn, workflow_id, run, event)
            if status is not None:
                sealed = self.seal(conn, workflow_id, run, status, (event.seq, digest)) if status.is_terminal else None
                conn.execute("UPDATE replaykit_runs SET status = %s, updated_at = %s, "
                             "head = CASE WHEN %s THEN %s ELSE head END WHERE id = %s",
                             (status.value, event.at, status.is_terminal, sealed, run))
                if status.is_terminal:
                    ended(conn, workflow_id, event.at)
            if consume_signal is not None:
                conn.execute("UPDATE replaykit_signals SET consumed = true WHERE id = %s", (consume_signal,))
            if custom_status is not UNSET:
                conn.execute("UPDATE replaykit_runs SET custom_status = %s WHERE id = %s",
                             (json.dumps(custom_status), run))

    def send(self, workflow_id: str, event: Event) -> None:
        """A step of a run this store holds: the INSERT is sent, and its result read by the thread's next
        call (or :meth:`confirm`), so the engine moves the workflow on during the round trip."""
        token = self._tokens.get(workflow_id)
        if token is None:
            self.record(workflow_id, event)
            return
        run = self._run(workflow_id)
        self._writes.send(
            lambda conn: send_event(conn, run, event, token, self.digest_of(conn, workflow_id, run, event, keep=True)),
            lambda conn: self._sent(conn, workflow_id, run, event, token))

    def _sent(self, conn: Connection, workflow_id: str, run: int, event: Event, token: int) -> None:
        try:
            self._inserted(conn, workflow_id, run, event, token, event_sent(conn))
        except BaseException:
            self.forget_head(workflow_id)
            raise

    def confirm(self) -> None:
        self._writes.confirm()

    def continue_as_new(self, workflow_id: str, result: Event, start: Event) -> Status:
        with self._writes.write(serialize=workflow_id) as conn:
            run = self._run(workflow_id)
            if workflow_id not in self._tokens:
                self._unowned(conn, workflow_id, run)
            digest = self._insert(conn, workflow_id, run, result)
            head = self.seal(conn, workflow_id, run, Status.CONTINUED, (result.seq, digest))
            was = conn.execute("UPDATE replaykit_runs r SET status = %s, updated_at = %s, head = %s FROM "
                               "(SELECT status FROM replaykit_runs WHERE id = %s) AS old WHERE r.id = %s "
                               "RETURNING old.status", (Status.CONTINUED.value, result.at, head, run, run)
                               ).fetchall()[0][0]
            status = continued_status(was)
            new = conn.execute(_NEW_GENERATION.format("custom_status, owner"),  # the same owner goes on
                               (status.value, start.at, start.at, run))
            new_run, _, generation = new.fetchall()[0]
            self._insert(conn, workflow_id, new_run, start, seed=chain.seed(workflow_id, generation))
        self.forget_head(workflow_id)
        self._forget_run(workflow_id)
        return status

    def set_custom_status(self, workflow_id: str, value: Any) -> None:
        with self._writes.write(serialize=workflow_id) as conn:
            conn.execute("UPDATE replaykit_runs SET custom_status = %s WHERE id = %s",
                         (json.dumps(value), self._run(workflow_id)))

    def delete(self, workflow_ids: Sequence[str], *, ended_before: float | None = None) -> builtins.list[str]:
        deleted = []
        with self._writes.write() as conn:
            for workflow_id in sorted(set(workflow_ids)):  # one order: two deleting stores cannot deadlock
                self._writes.serialize(conn, workflow_id)
                rows = conn.execute(_NEWEST_RUN.format("status, updated_at"), (workflow_id,)).fetchall()
                if rows and status_of(rows[0][0], workflow_id, self.url).is_terminal and (
                        ended_before is None or rows[0][1] < ended_before):
                    deleted.append(workflow_id)
            if deleted:  # a statement per table (signals has no full index: one scan, not one per id)
                conn.execute("DELETE FROM replaykit_events WHERE run IN "
                             "(SELECT id FROM replaykit_runs WHERE workflow_id = ANY(%s))", (deleted,))
                for table in ("replaykit_signals", "replaykit_work", "replaykit_runs"):
                    conn.execute(f"DELETE FROM {table} WHERE workflow_id = ANY(%s)", (deleted,))
        for workflow_id in deleted:
            self._forget_run(workflow_id)
            self.forget_head(workflow_id)
        return [w for w in dict.fromkeys(workflow_ids) if w in deleted]

    def set_status(self, workflow_id: str, status: Status, at: float) -> Status:
        with self._writes.write(serialize=workflow_id) as conn:
            run, old = self._newest(conn, workflow_id)
            if old is not status and not old.can_become(status):
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {old.value}; it cannot become {status.value}")
            conn.execute("UPDATE replaykit_runs SET status = %s, updated_at = %s WHERE id = %s",
                         (status.value, at, run))
            if status.is_terminal:
                self.seal_last(conn, run)
                ended(conn, workflow_id, at)
            elif old is Status.PAUSED:  # resumed: whoever is free drives it
                wake(conn, workflow_id, at)
        return old

    def send_signal(self, workflow_id: str, name: str, encoding: str, payload: str | bytes,
                    at: float) -> None:
        with self._writes.write(serialize=workflow_id) as conn:  # the status check and the insert
            _, status = self._newest(conn, workflow_id)
            if status.is_terminal:
                raise IllegalTransitionError(
                    f"workflow {workflow_id!r} is {status.value}; it can no longer take signals")
            text, data = (payload, None) if type(payload) is str else (None, payload)
            conn.execute(
                "INSERT INTO replaykit_signals (workflow_id, name, encoding, payload, payload_bytes, sent_at, digest) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (workflow_id, name, encoding, text, data, at,
                 self.signal_digest(workflow_id, name, encoding, payload, at)))
            wake(conn, workflow_id, at)

    def next_signal(self, workflow_id: str, name: str) -> Signal | None:
        row = self._read_one(_NEXT_SIGNAL, (workflow_id, name))
        return None if row is None else self.checked_signal(workflow_id, row)

    def inbox(self) -> set[str]:
        return {row[0] for row in self._read("SELECT DISTINCT workflow_id FROM replaykit_signals WHERE NOT consumed")}

    def inbox_of(self, names: Sequence[str]) -> set[str]:
        return {row[0] for row in self._read(
            "SELECT DISTINCT workflow_id FROM replaykit_signals WHERE NOT consumed AND name = ANY(%s)", (list(names),))}

    def consume_signal(self, signal_id: int) -> None:
        with self._writes.write() as conn:
            conn.execute("UPDATE replaykit_signals SET consumed = true WHERE id = %s", (signal_id,))

    def paused(self) -> set[str]:
        # Through the status index: a paused row is always its id's newest (only a running run pauses).
        return {row[0] for row in self._read("SELECT workflow_id FROM replaykit_runs WHERE status = 'paused'")}

    def list(self, status: Status | None = None) -> list[WorkflowInfo]:
        where = _NEWEST + (" AND status = %s" if status else "")
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM replaykit_runs r WHERE {where} ORDER BY id",
                          (status.value,) if status else ())
        return [info_from_row(row, self.url) for row in rows]

    def find(self, *, statuses: Sequence[Status | str] = (), workflows: Sequence[str] = (), prefix: str = "",
             since: float | None = None, until: float | None = None,
             limit: int | None = None) -> builtins.list[WorkflowInfo]:
        where, params = find_filters(statuses, workflows, prefix, since, until, "%s")
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM replaykit_runs r WHERE {' AND '.join([_NEWEST, *where])} "
                          "ORDER BY id DESC LIMIT %s", (*params, sql_limit(limit)))
        return [info_from_row(row, self.url) for row in rows]

    def try_lock(self, workflow_id: str, keeper: str | None = None) -> bool:
        """Take the run's lock and stamp its row with a fresh fencing token (see ``_insert``); the stamp
        reads the row's keeper mark too (store/keepers.py)."""
        self._writes.confirm()
        self._forget_run(workflow_id)
        self.forget_head(workflow_id)  # whatever was written meanwhile: the history is read again first
        token = secrets.randbits(63)
        marks: dict[str, tuple[str, str]] = {}
        if not self._locks.try_acquire(workflow_id, token, self._held.runs, marks, keeper):  # the row id, its mark
            return False
        self._tokens[workflow_id] = token
        if self._refused(marks, keeper):
            return False
        if workflow_id in marks:  # another keeper's, gone: not stamped yet
            try:
                self._locks.stamp(workflow_id, token)
            except BaseException:
                self._forget_run(workflow_id)
                self._tokens.pop(workflow_id, None)
                self._locks.release(workflow_id)
                raise
        return True

    def try_lock_many(self, workflow_ids: builtins.list[str]) -> builtins.list[str]:
        """:meth:`try_lock` for several runs at once (a worker's claim): the ids it got."""
        self._writes.confirm()
        for workflow_id in workflow_ids:
            self._forget_run(workflow_id)
            self.forget_head(workflow_id)
        tokens = {workflow_id: secrets.randbits(63) for workflow_id in workflow_ids}
        marks: dict[str, tuple[str, str]] = {}
        got = self._locks.try_acquire_many(tokens, self._held.runs, marks)
        for workflow_id in got:
            self._tokens[workflow_id] = tokens[workflow_id]
        refused = self._refused(marks, None)
        return [workflow_id for workflow_id in got if workflow_id not in refused]

    def _refused(self, marks: dict[str, tuple[str, str]], keeper: str | None) -> set[str]:
        """Of the runs just locked with these marks (of keepers other than ``keeper``), give back (and
        name) those a live engine keeps."""
        refused = {workflow_id for workflow_id, (mark, status) in marks.items()
                   if self._keepers.refuses(*read_mark(mark, status, workflow_id, self.url), keeper)}
        for workflow_id in refused:  # nothing was written under the lock: given back as it was taken
            self._forget_run(workflow_id)
            self._tokens.pop(workflow_id, None)
            self._locks.release(workflow_id)
        return refused

    def unlock(self, workflow_id: str) -> None:
        self._writes.confirm()  # a lock is given back only after what was written under it
        self._forget_run(workflow_id)
        self.forget_head(workflow_id)
        self._tokens.pop(workflow_id, None)
        self._locks.release(workflow_id)

    def keep(self, workflow_id: str, keeper: str | None) -> None:
        if keeper is not None:
            self._keepers.hold(keeper)
        with self._writes.write() as conn:
            conn.execute("UPDATE replaykit_runs SET keeper = %s WHERE id = %s", (keeper, self._run(workflow_id)))

    def keeper_of(self, workflow_id: str) -> str | None:
        row = self._read_one(_NEWEST_RUN.format("keeper, status"), (workflow_id,))
        if row is None:
            return None
        mark, status = read_mark(row[0], row[1], workflow_id, self.url)
        return mark if self._keepers.refuses(mark, status, None) else None

    def let_go(self, keeper: str) -> None:
        self._keepers.let_go(keeper)

    def lock_owner(self, workflow_id: str) -> str | None:
        row = self._read_one(OWNER_SQL, owner_params(workflow_id))
        if row is not None:
            return describe_owner(row)
        mark = self._read_one(_NEWEST_RUN.format("keeper"), (workflow_id,)) if self._marks_runs else None
        row = None if mark is None or mark[0] is None else self._read_one(OWNER_SQL, owner_params(keeper_key(mark[0])))
        return None if row is None else describe_owner(row) + ", an engine that keeps it out of memory"

    def batch(self) -> None:
        """Group this thread's writes until :meth:`commit` (``postgres_writes.py`` says how)."""
        self._writes.batch()
        self._held.batch()

    def unbatch(self) -> None:
        """This thread's batch mode ends (the engine's driver stops, after its last commit)."""
        self._held.unbatch()

    def commit(self) -> None:
        self._writes.commit()

    def changed(self) -> bool:
        """Has another connection committed anything but a plain step since this thread last asked?

        Every write but a plain step sends a notification at its commit; a listening
        connection counts them, so asking costs no round trip. A step alone concerns only
        the process driving its run, which wrote it."""
        version = self._listener.version()
        before, self._local.version = getattr(self._local, "version", None), version
        return version is None or before != version

    def end_idle_transactions_after(self, seconds: float) -> None:
        """The connections made from now on have the server end their session once it sits ``seconds``
        idle inside a transaction (``idle_in_transaction_session_timeout``); the idle ones are closed."""
        self._idle_transaction_limit = seconds
        self._pool.drop_idle()

    def close(self) -> None:
        """Close every connection: the server gives back the workflow locks held through this store."""
        try:
            self._writes.confirm()
        finally:
            self._listener.close()
            self._locks.close()
            self._pool.close()
            with self._reader_lock:  # a closed store still reads: a new reader then, if need be
                reader, self._page_reader = self._page_reader, None
            if reader is not None:
                reader.shutdown(wait=False)
            self._writes.forget()
            self._tokens.clear()
            self._heads.clear()
            self._seeds.clear()
            self._local = threading.local()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, durability={self.durability.value!r})"
