"""How the PostgreSQL store commits: a write in a transaction of its own, or in the open
group-commit batch of its thread (``Store.batch`` / ``Store.commit``).

In a batch, a write that finds no transaction of the batch open commits on its own: with
``"crash"`` durability every write (a commit costs no flush then, and a transaction would cost
two round trips more), with ``"power"`` the batch's first (a lone step is one INSERT + COMMIT,
one flush); the writes after it share one transaction and one flush. Earlier writes always
commit first, and once a write of a batch has failed, the rest of the batch is refused until
``commit`` reports it: a batch's later writes are never committed without its earlier ones.

Out of a batch, a statement may be sent without waiting for its result (:meth:`Writes.send`): the
thread's next call here waits for it first, so its writes still reach the server, and report their
errors, in the order they were made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq

from ..errors import StoreError
from .postgres_conn import CHANNEL, Connection, Pool, alive, int32_key
from .postgres_errors import translate, translated
from .postgres_schema import NAMESPACE
from .sqlite import Durability

_NOTIFY_AND_COMMIT = f"NOTIFY {CHANNEL}; COMMIT"


class Writes:
    """Transactions and group-commit batches over a :class:`Pool`; batches are per thread."""

    def __init__(self, pool: Pool, where: str, durability: Durability) -> None:
        self._pool = pool
        self.where = where
        self.durability = durability
        self._local = threading.local()

    def send(self, statement: Callable[[Connection], None], confirm: Callable[[Connection], None]) -> None:
        """One autocommit statement sent without waiting for its result, which :meth:`confirm` checks
        with ``confirm(conn)``; meanwhile the connection is this thread's alone. In a batch the
        statement is written as any other (sent and confirmed at once)."""
        self.confirm()
        if getattr(self._local, "batch", None) is not None:
            with self.write(notify=False, single=True) as conn:
                statement(conn)
                confirm(conn)
            return
        conn = self._pool.take()
        try:
            with translated(self.where):
                statement(conn)
        except BaseException:
            self._pool.give(conn)
            raise
        self._local.sent = (conn, confirm)

    def confirm(self) -> None:
        """Wait for the statement this thread sent, if any; raise what refused it."""
        sent: tuple[Connection, Callable[[Connection], None]] | None = getattr(self._local, "sent", None)
        if sent is None:
            return
        self._local.sent = None
        conn, confirm = sent
        try:
            with translated(self.where):
                confirm(conn)
        finally:
            self._pool.give(conn)

    @contextmanager
    def conn(self) -> Iterator[Connection]:
        """A connection for one call: this thread's batch connection, or one from the pool."""
        self.confirm()
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is not None:
            yield self._batch_conn(batch)
            return
        with self._pool.lent() as conn:
            yield conn

    def batched(self) -> bool:
        """Are this thread's writes grouped in a batch (its reads made on the batch's connection)?"""
        return getattr(self._local, "batch", None) is not None

    def _batch_conn(self, batch: _Batch) -> Connection:
        """The batch's connection; if it broke while the batch was open, the batch is lost (the
        server rolled it back), however that was noticed: a read may have been first to fail."""
        if batch.conn is not None and not alive(batch.conn):
            if batch.begun and batch.lost is None:
                self._lose(batch, StoreError(f"{self.where}: the connection was lost in the middle of a "
                                             "group-commit batch, and the server rolled the batch back."))
            self._pool.give(batch.conn)  # closed, and forgotten
            batch.conn, batch.begun = None, False
        if batch.conn is None:
            batch.conn = self._pool.take()
        return batch.conn

    def batch(self) -> None:
        """From now on, this thread's writes are grouped until :meth:`commit` (see the module's docstring)."""
        self.confirm()
        if getattr(self._local, "batch", None) is None:
            self._local.batch = _Batch()

    def commit(self) -> None:
        """Commit this thread's batch. Raises if the batch was lost (a write failed, or the
        connection broke): the writes after the failure were not recorded."""
        self.confirm()
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None:
            return
        conn = self._batch_conn(batch) if batch.conn is not None else None
        lost, batch.lost = batch.lost, None
        begun, batch.begun, batch.wrote = batch.begun, False, False
        if lost is not None:
            raise type(lost)(f"{lost} Of this batch, {batch.recorded}.") from lost
        if conn is not None and begun:
            with translated(self.where):
                conn.execute(_NOTIFY_AND_COMMIT if batch.notify else "COMMIT")

    @contextmanager
    def write(self, serialize: str | None = None, notify: bool = True, single: bool = False) -> Iterator[Connection]:
        """One write: its own transaction (an autocommit statement if ``single``), or part of this
        thread's open batch. ``serialize``: the workflow id whose run row it reads, then changes;
        ``notify``: tell listening stores at commit.

        Raising a replaykit error in the block changes nothing: every write here checks what it must
        before its first statement that writes."""
        self.confirm()
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None:
            with self._pool.lent() as conn, translated(self.where), self._alone(conn, serialize, notify, single):
                yield conn
            return
        conn = self._batch_conn(batch)
        if batch.lost is not None:
            raise type(batch.lost)(f"{batch.lost} (an earlier write of this batch failed; {batch.recorded})")
        try:
            if not batch.begun and (self.durability is Durability.CRASH or not batch.wrote):
                with self._alone(conn, serialize, notify, single):
                    yield conn
                batch.wrote = True
                return
            if not batch.begun:
                conn.execute("BEGIN")
                batch.begun, batch.notify = True, False
            if serialize is not None:
                self.serialize(conn, serialize)
            yield conn
            batch.notify = batch.notify or notify
        except (psycopg.Error, StoreError) as exc:  # its reads' failures too; PostgreSQL aborts the transaction
            lost = self._lose(batch, exc if isinstance(exc, StoreError) else translate(self.where, exc))
            if alive(conn) and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                with translated(self.where):
                    conn.execute("ROLLBACK")
            if lost is exc:
                raise
            raise lost from exc

    @contextmanager
    def _alone(self, conn: Connection, serialize: str | None, notify: bool, single: bool) -> Iterator[None]:
        """A write committed on its own: one autocommit statement, or BEGIN ... COMMIT."""
        if single:
            yield
            return
        conn.execute("BEGIN")
        try:
            if serialize is not None:
                self.serialize(conn, serialize)
            yield
            conn.execute(_NOTIFY_AND_COMMIT if notify else "COMMIT")
        except BaseException:
            if alive(conn) and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise

    def _lose(self, batch: _Batch, error: StoreError) -> StoreError:
        """The batch failed: refuse the rest of it until :meth:`commit`, which raises ``error``. Its
        later writes must never be committed without this one (a hole in a history)."""
        if not batch.wrote:
            batch.recorded = "none of the writes was recorded"
        elif self.durability is Durability.CRASH:
            batch.recorded = "the writes before the failed one are recorded (each committed on its own), none after"
        else:
            batch.recorded = "only the first write is recorded (it committed on its own), none after it"
        batch.lost, batch.begun = error, False
        return error

    def serialize(self, conn: Connection, workflow_id: str) -> None:
        """Wait for the other transactions that check and change this id's run row (held to commit).
        Its key space (two int4 keys) is apart from the ownership locks' (one bigint)."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (NAMESPACE, int32_key(workflow_id)))

    def forget(self) -> None:
        """Drop every thread's batch state (the store is closing)."""
        self._local = threading.local()


class _Batch:
    """A thread's group-commit batch: its connection, and whether its transaction is open or lost."""

    __slots__ = ("conn", "begun", "wrote", "notify", "lost", "recorded")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.begun = False  # BEGIN sent, COMMIT not yet
        self.wrote = False  # a write of this batch committed on its own
        self.notify = False  # something others must notice is in the open transaction
        self.lost: StoreError | None = None  # a write failed: refuse the rest until commit()
        self.recorded = ""  # what of the batch was recorded, once lost
