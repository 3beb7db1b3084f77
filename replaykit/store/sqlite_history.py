"""An SQLite store's histories as a hash chain (store/chain.py): how events are written with their
checksums, read back verified, and sealed when a run ends; and how a signal row is sealed.

``SqliteStore`` mixes this in; it supplies ``codec``, ``path``, ``_read`` and ``_run``.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import (
    CorruptStoreError,
    PayloadAuthenticationError,
    StoreError,
    WorkflowLockedError,
    WorkflowNotFoundError,
)
from ..history import Event, Status
from . import chain
from .base import Signal, status_of

if TYPE_CHECKING:
    from ..payloads import Codec
    from .held import HeldRuns
    from .locks import FileLocks

PAGE = 256  # history rows per query: memory stays bounded, and no statement stays open between pages
EVENT_COLUMNS = "seq, step, kind, name, at, outcome, encoding, payload"
_INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_PREV_DIGEST = "SELECT digest FROM events WHERE run = ? AND seq = ?"
_SELECT_PAGE = f"SELECT {EVENT_COLUMNS}, digest FROM events WHERE run = ? AND seq > ? ORDER BY seq LIMIT ?"
_NEXT_ROW = ("SELECT typeof(run), typeof(seq), run > ?1, CASE WHEN run = ?1 THEN 1 ELSE seq END FROM events "
             "WHERE (run, seq) > (?1, ?2) ORDER BY run, seq LIMIT 1")  # the row after a history's last, in key order
_SEAL = "SELECT status, head, workflow_id, generation FROM runs WHERE id = ?"
_SEED = "SELECT workflow_id, generation FROM runs WHERE id = ?"
_NEWEST_SEAL = ("SELECT id, status, head, workflow_id, generation FROM runs WHERE workflow_id = ? "
                "ORDER BY generation DESC LIMIT 1")

# what seals a run that ended: its chain's seed, its status and its last event (seq, checksum)
Sealed = tuple[bytes, Status, tuple[int, bytes]]
_CHAIN_KEY = b"history chain"


class ChainedHistory:
    """Writes and reads a store's events through its hash chain."""

    codec: Codec
    path: str
    _chain_of_keys: chain.Chain | None = None
    _identity_kept: object = None  # the store's identity as its meta table keeps it (None: none)

    if TYPE_CHECKING:
        _locks: FileLocks
        _held: HeldRuns[tuple[int, bytes]]

        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]: ...
        def _run(self, workflow_id: str) -> int: ...

    def chain(self) -> chain.Chain:
        """The chain of this store's keys (never makes a missing key file: ``SqliteStore.create`` does, for
        a store that holds no history)."""
        if self._chain_of_keys is None:
            keys = self.codec.keys.derived(_CHAIN_KEY)
            if not keys:
                raise PayloadAuthenticationError(
                    f"{self.path}: its histories are chained with the store's key, and {self.codec.keys.missing()}. "
                    "Nothing was read or recorded.")
            self._chain_of_keys = chain.Chain(keys, chain.identity_of(self._identity_kept, self.path))
        return self._chain_of_keys

    def _insert(self, conn: sqlite3.Connection, run: int, e: Event, head: tuple[int, bytes] | None = None) -> bytes:
        """Record event ``e`` of run ``run`` with its checksum; returns the checksum. ``head``: the
        run's last event as this store wrote it, ``(seq, checksum)``, if this store holds the run."""
        if head is not None and head[0] == e.seq - 1:
            prev = head[1]  # no read: nobody else writes a run this store holds
        elif e.seq == 0:
            prev = chain.seed(*conn.execute(_SEED, (run,)).fetchall()[0])
        else:
            found = conn.execute(_PREV_DIGEST, (run, e.seq - 1)).fetchall()
            if not found or found[0][0] is None:
                raise CorruptStoreError(
                    f"{self.path}: event {e.seq} of run #{run} cannot be recorded: event {e.seq - 1} before it "
                    "is missing or has no checksum. Nothing was recorded; restore the store from a backup.")
            prev = found[0][0]
        digest = self.chain().link(prev, e)
        try:
            conn.execute(_INSERT_EVENT, (run, *e, digest))
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc) and "PRIMARY KEY" not in str(exc):  # not a row already there
                raise StoreError(f"{self.path}: event {e.seq} cannot be recorded: the store refuses one of its "
                                 f"fields ({exc}). Nothing was recorded.") from exc
            workflow_id = conn.execute("SELECT workflow_id FROM runs WHERE id = ?", (run,)).fetchall()
            if workflow_id and self._locks.holds(workflow_id[0][0]):  # nobody else may write it
                raise WorkflowLockedError(
                    f"{self.path}: event {e.seq} of {workflow_id[0][0]!r} is already in the store, though this "
                    "process holds the run and read its history as ending before it: either the store is "
                    "damaged (rows its reads did not see; see PRAGMA integrity_check and restore it from a "
                    "backup) or a process wrote it without the lock. Nothing was overwritten.") from exc
            raise WorkflowLockedError(
                f"event {e.seq} of this workflow was already recorded by another driver; "
                "two processes are driving the same workflow. Nothing was overwritten."
            ) from exc
        return digest

    def _seal(self, conn: sqlite3.Connection, run: int, known: Sealed | None = None) -> None:
        """The run ended: its row gets the seal of its status and last event (:meth:`chain.Chain.seal`),
        from ``known`` (seed, status, last event) if the caller has them, else as its rows stand."""
        links = self.chain()
        conn.execute("UPDATE runs SET head = ? WHERE id = ?",
                     (links.seal(*known) if known else seal_of_run(conn, run, links), run))

    def _set_status(self, conn: sqlite3.Connection, run: int, status: Status, at: float,
                    known: Sealed | None = None) -> None:
        """Run ``run`` becomes ``status``; a status that ends it seals it too (see :meth:`_seal`)."""
        if status.is_terminal and known is not None:
            conn.execute("UPDATE runs SET status = ?, updated_at = ?, head = ? WHERE id = ?",
                         (status.value, at, self.chain().seal(*known), run))
            return
        conn.execute("UPDATE runs SET status = ?, updated_at = ? WHERE id = ?", (status.value, at, run))
        if status.is_terminal:
            self._seal(conn, run)

    def _pages(self, run: int, workflow_id: str) -> Iterator[Event]:
        """The run's events, read a page at a time by ``seq`` and checked against the run's hash
        chain as they come (and, once all are read, against the seal of a run that ended): each page
        is fetched whole, so an abandoned iterator holds no statement open, and a long history is
        never in memory at once."""
        where = f"{workflow_id!r} in {self.path}"
        status, head, seed = self._run_seal(run, where)  # read first: a run that has ended gets no more events
        after, prev = -1, seed
        while True:
            rows = self._read(_SELECT_PAGE, (run, after, PAGE))
            if rows:
                for event, digest in self.chain().verified(rows, prev, after, where):
                    yield event
                    prev = digest  # where the next page chains from
            if rows:
                after = rows[-1][0]
            if len(rows) < PAGE:  # the end: checked before a reader that read it all goes on live
                if self._ends_at(run, after, prev, where):
                    self.chain().check_seal(head, seed, status, (after, prev) if after >= 0 else None, where)
                    return

    def _ends_at(self, run: int, last: int, digest: bytes, where: str) -> bool:
        """Does the run's history end where reading it forward ended (``last``, -1 for none)? A damaged
        page can make SQLite's scans stop early without an error while the rows after are still in the
        table, so the end is checked two more ways: the last row found from the end (a seek down the
        other side of the tree) must be the one read last, and the row after it in the table's key order
        must start another run (a damaged key sorts itself out of the run and hides the rows behind
        it). ``False``: rows were added since (another process drives the run); read on."""
        rows = self._read("SELECT seq, digest FROM events WHERE run = ? ORDER BY seq DESC LIMIT 1", (run,))
        end = rows[0] if rows else (-1, None)
        after = self._read(_NEXT_ROW, (run, last)) if end[0] == last else []
        grown = end[0] > last or after[:1] == [("integer", "integer", 0, 1)]  # a row of this run after it
        if grown and self._read(_SELECT_PAGE, (run, last, 1)):
            return False  # recorded since
        if end[0] == last and (last < 0 or end[1] == digest):
            if not after or after[0] == ("integer", "integer", 1, 0):  # none, or the start of a later run
                return True
            found = "a damaged row after it, where the next run's first event or nothing should be"
        else:
            found = f"event {end[0]}"
        raise CorruptStoreError(
            f"the history of {where} is damaged: reading it in order ends at event {last}, but reading on from "
            f"there finds {found} (a damaged page of the store). Nothing was replayed from it and the store "
            "was not changed; restore it from a backup.")

    def _run_seal(self, run: int, where: str) -> tuple[Status, Any, bytes]:
        """The run's status, its seal (``head``) and the seed its chain starts from."""
        return _sealing(self._read(_SEAL, (run,)), where)

    def last_event(self, workflow_id: str) -> Event | None:
        where = f"{workflow_id!r} in {self.path}"
        if self._held.get(workflow_id) is not None:
            run = self._run(workflow_id)
            status, head, seed = self._run_seal(run, where)
        else:  # the newest run and its seal in one read
            rows = self._read(_NEWEST_SEAL, (workflow_id,))
            if not rows:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {self.path}")
            run = rows[0][0]
            status, head, seed = _sealing([rows[0][1:]], where)
        rows = self._read(f"SELECT {EVENT_COLUMNS}, digest FROM events WHERE run = ? ORDER BY seq DESC LIMIT 2",
                          (run,))
        if not rows:
            self.chain().check_seal(head, seed, status, None, where)
            return None
        if len(rows) == 1:  # the start alone: it chains from the seed
            prev, prev_seq = seed, -1
        else:
            prev, prev_seq = rows[1][8], rows[1][0]
        event, digest = next(self.chain().verified(rows[:1], prev, prev_seq, where))
        self.chain().check_seal(head, seed, status, (event.seq, digest), where)
        return event

    # -- signals ------------------------------------------------------------------------

    def signal_digest(self, workflow_id: str, name: str, encoding: str, payload: str | bytes, at: float) -> bytes:
        """The checksum of a signal's row: its workflow, name, value and time."""
        return self.chain().link(chain.SIGNAL_SEED, chain.signal_fields(workflow_id, name, encoding, payload, at))

    def checked_signal(self, workflow_id: str, row: tuple[Any, ...]) -> Signal:
        """A signal row ``(id, name, encoding, payload, sent_at, digest)`` once its checksum matches."""
        return chain.checked_signal(self.chain(), workflow_id, row, self.path)


def delete_ended(conn: sqlite3.Connection, workflow_ids: Sequence[str], where: str,
                 ended_before: float | None = None) -> list[str]:
    """Delete, in ``conn``'s transaction, every row of each id whose newest run has ended (before
    ``ended_before``, if given); the ids deleted."""
    deleted = []
    for workflow_id in dict.fromkeys(workflow_ids):
        row = conn.execute("SELECT status, updated_at FROM runs WHERE workflow_id = ? ORDER BY generation DESC "
                           "LIMIT 1", (workflow_id,)).fetchall()
        if row and status_of(row[0][0], workflow_id, where).is_terminal and (
                ended_before is None or row[0][1] < ended_before):
            deleted.append(workflow_id)
    for start in range(0, len(deleted), 500):  # a statement per table and 500 ids (signals has no full index)
        ids = deleted[start:start + 500]
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM events WHERE run IN (SELECT id FROM runs WHERE workflow_id IN ({marks}))", ids)
        for table in ("signals", "work", "runs"):
            conn.execute(f"DELETE FROM {table} WHERE workflow_id IN ({marks})", ids)
    return deleted


def _sealing(rows: list[Any], where: str) -> tuple[Status, Any, bytes]:
    """``(status, seal, seed)`` of a run from its row ``(status, head, workflow_id, generation)``."""
    try:
        return Status(rows[0][0]), rows[0][1], chain.seed(rows[0][2], rows[0][3])
    except (IndexError, ValueError, TypeError, AttributeError, struct.error) as exc:
        raise CorruptStoreError(f"the run row of {where} is damaged ({rows[0][:1] if rows else 'gone'}): "
                                "restore the store from a backup") from exc


def seal_of_run(conn: sqlite3.Connection, run: int, links: chain.Chain) -> bytes:
    """The seal of run ``run`` as it stands (status and last event) in ``conn``'s transaction."""
    (workflow_id, generation, status), = conn.execute(
        "SELECT workflow_id, generation, status FROM runs WHERE id = ?", (run,)).fetchall()
    last = conn.execute("SELECT seq, digest FROM events WHERE run = ? ORDER BY seq DESC LIMIT 1", (run,)).fetchall()
    return links.seal(chain.seed(workflow_id, generation), Status(status), last[0] if last else None)
