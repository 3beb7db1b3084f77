"""A PostgreSQL store's histories as a hash chain (store/chain.py): the checksum each event is
written with, the history read back verified page by page, a run sealed when it ends, and a
signal row's checksum.

Writing an event needs the checksum of the one before it. The process driving a run has just
read its history (or written its last event), so that checksum is kept per run while this store
holds the run: a step costs no extra round trip. Events are never changed once written, so a kept
checksum cannot go stale; anything else reads it.

Without a secret, a PostgreSQL store's chain is keyed with a public constant: it catches damage,
not forgery (docs/security.md).

``PostgresStore`` mixes this in; it supplies ``codec``, ``url``, ``_read``, ``_pool``, ``_reader``
and ``_tokens``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import CorruptStoreError
from ..history import Event, Status
from . import chain
from .base import Signal
from .postgres_conn import Connection, Pool
from .postgres_errors import translated
from .postgres_libpq import Ahead

if TYPE_CHECKING:
    from ..payloads import Codec

PAGE = 256  # history rows per query, as SqliteStore reads them
EVENT_COLUMNS = "seq, step, kind, name, at, outcome, encoding, payload, payload_bytes, digest"
SELECT_PAGE = f"SELECT {EVENT_COLUMNS} FROM replaykit_events WHERE run = %s AND seq > %s ORDER BY seq LIMIT %s"
_SELECT_PAGE_AFTER = SELECT_PAGE.replace("%s", "$1", 1).replace("%s", "$2", 1).replace("%s", "$3", 1).encode()
_SEAL = "SELECT status, head, workflow_id, generation FROM replaykit_runs WHERE id = %s"
SELECT_END = "SELECT seq, digest FROM replaykit_events WHERE run = %s ORDER BY seq DESC LIMIT 1"
_PREV = "SELECT digest FROM replaykit_events WHERE run = %s AND seq = %s"
_SEED = "SELECT workflow_id, generation FROM replaykit_runs WHERE id = %s"
_CHAIN_KEY = b"history chain"
PUBLIC_KEY = b"replaykit: a store without a secret"  # keys the chain of a store without one (anyone can)

Seal = tuple[Status, Any, bytes, str]  # the run's status, its head, the seed its chain starts from, its id


class PostgresHistory:
    """Writes and reads a PostgreSQL store's events through its hash chain."""

    codec: Codec
    url: str
    _pool: Pool
    _tokens: dict[str, int]
    _heads: dict[str, tuple[int, int, bytes]]  # workflow id -> its run, the seq and checksum of its last event
    _seeds: dict[str, tuple[int, bytes]]  # workflow id -> its run and that run's seed, while held
    _chain_of_keys: chain.Chain | None = None
    _identity_kept: object = None  # the store's identity as its meta table keeps it (None: none)

    if TYPE_CHECKING:
        def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]: ...
        def _reader(self) -> ThreadPoolExecutor: ...

    def chain(self) -> chain.Chain:
        """The chain of this store's secret (and older ones), or of the public key without one."""
        if self._chain_of_keys is None:
            self._chain_of_keys = chain.Chain(self.codec.keys.derived(_CHAIN_KEY) or (PUBLIC_KEY,),
                                              chain.identity_of(self._identity_kept, self.url))
        return self._chain_of_keys

    # -- writing ------------------------------------------------------------------------

    def digest_of(self, conn: Connection, workflow_id: str, run: int, e: Event, *, keep: bool,
                  seed: bytes | None = None) -> bytes:
        """The checksum event ``e`` of ``run`` is written with (``seed``: the run's, if known, for
        its first event). Kept as the run's last if ``keep`` (this store holds the run): forget it
        with :meth:`forget_head` if the write fails."""
        if e.seq == 0:
            prev = self.seed_of(conn, workflow_id, run) if seed is None else seed
        else:
            kept = self._heads.get(workflow_id)
            if kept is not None and kept[:2] == (run, e.seq - 1):
                prev = kept[2]
            else:
                rows = conn.execute(_PREV, (run, e.seq - 1)).fetchall()
                if not rows or rows[0][0] is None:
                    raise CorruptStoreError(
                        f"{self.url}: event {e.seq} of run #{run} cannot be recorded: event {e.seq - 1} before it "
                        "is missing or has no checksum. Nothing was recorded; restore the store from a backup.")
                prev = bytes(rows[0][0])
        digest = self.chain().link(prev, e)
        if keep:
            self._heads[workflow_id] = (run, e.seq, digest)
        return digest

    def forget_head(self, workflow_id: str) -> None:
        self._heads.pop(workflow_id, None)
        self._seeds.pop(workflow_id, None)

    def seed_of(self, conn: Connection, workflow_id: str, run: int) -> bytes:
        """What run ``run`` of ``workflow_id`` chains from (kept while this store holds the run)."""
        kept = self._seeds.get(workflow_id)
        if kept is not None and kept[0] == run:
            return kept[1]
        seed = chain.seed(*conn.execute(_SEED, (run,)).fetchall()[0])
        self._seeds[workflow_id] = (run, seed)
        return seed

    def seal(self, conn: Connection, workflow_id: str, run: int, status: Status, last: tuple[int, bytes]) -> bytes:
        """The seal of run ``run`` ending ``status`` at ``last`` (its last event's position and checksum)."""
        return self.chain().seal(self.seed_of(conn, workflow_id, run), status, last)

    def seal_last(self, conn: Connection, run: int) -> None:
        """Seal run ``run`` as it stands: it ended (its status is set) without a new event."""
        workflow_id, generation, status = conn.execute(
            "SELECT workflow_id, generation, status FROM replaykit_runs WHERE id = %s", (run,)).fetchall()[0]
        last = conn.execute(SELECT_END, (run,)).fetchall()
        head = self.chain().seal(chain.seed(workflow_id, generation), Status(status),
                                 (last[0][0], bytes(last[0][1])) if last else None)
        conn.execute("UPDATE replaykit_runs SET head = %s WHERE id = %s", (head, run))

    def chained(self, events: Sequence[Event], seed: bytes) -> list[bytes]:
        """The checksums of a run's first ``events`` (from seq 0), chained from its ``seed``."""
        links, prev, digests = self.chain(), seed, []
        for e in events:
            prev = links.link(prev, e)
            digests.append(prev)
        return digests

    # -- reading ------------------------------------------------------------------------

    def seal_of(self, run: int) -> Seal:
        return seal_from(self._read(_SEAL, (run,)), f"run #{run} in {self.url}")

    def pages(self, run: int, first: list[Any] | None = None, seal: Seal | None = None,
              end: list[Any] | None = None) -> Iterator[Event]:
        """The run's events a page at a time by ``seq`` (from ``first``, the first page, if read
        already), each checked against the run's chain as it comes, and, once all are read, against
        its seal if it ended. The next page is asked for before the current one is handed out, so
        it travels while that one replays (see ``postgres_libpq.Ahead``: nothing stays open on the
        server, and no connection is held by an iterator abandoned half-way). Where the reading
        ended is checked against the run's last row found from the end (``end``, if read already):
        a damaged index or page must not pass for a shorter history."""
        status, head, seed, workflow_id = self.seal_of(run) if seal is None else seal
        prev, where = seed, f"{workflow_id!r} in {self.url}"
        links, after = self.chain(), -1
        rows = self._read(SELECT_PAGE, (run, -1, PAGE)) if first is None else first
        while True:
            ahead = None
            if len(rows) == PAGE:
                ahead = Ahead(self._pool, self._reader(), _SELECT_PAGE_AFTER,
                              [b"%d" % run, b"%d" % rows[-1][0], b"%d" % PAGE])
            for event, digest in links.verified(map(chain_row, rows), prev, after, where):
                yield event
                prev, after = digest, event.seq
            if ahead is not None:
                with translated(self.url):
                    rows = ahead.rows()
                continue
            end = self._read(SELECT_END, (run,)) if end is None else end
            last = (end[0][0], bytes(end[0][1])) if end and end[0][1] is not None else (-1, None)
            if last[0] > after and (rows := self._read(SELECT_PAGE, (run, after, PAGE))):
                end = None  # recorded since it was read (another process drives the run): read on
                continue
            if last[0] != after or (after >= 0 and last[1] != prev):
                raise CorruptStoreError(
                    f"the history of {where} is damaged: reading it in order ends at event {after}, but reading "
                    f"it from the end finds event {last[0]} there. Nothing was replayed from it; restore the "
                    "store from a backup.")
            break
        links.check_seal(head, seed, status, (after, prev) if after >= 0 else None, where)
        if workflow_id in self._tokens and after >= 0:  # driven from here: its next step chains from this
            self._heads[workflow_id] = (run, after, prev)
            self._seeds[workflow_id] = (run, seed)

    def last(self, run: int) -> Event | None:
        """The run's last event, checked against the one before it (and the seal)."""
        status, head, seed, workflow_id = self.seal_of(run)
        where = f"{workflow_id!r} in {self.url}"
        rows = self._read(f"SELECT {EVENT_COLUMNS} FROM replaykit_events WHERE run = %s ORDER BY seq DESC LIMIT 2",
                          (run,))
        if not rows:
            self.chain().check_seal(head, seed, status, None, where)
            return None
        prev, prev_seq = (seed, -1) if len(rows) == 1 else (rows[1][9], rows[1][0])
        event, digest = next(self.chain().verified([chain_row(rows[0])], prev, prev_seq, where))
        self.chain().check_seal(head, seed, status, (event.seq, digest), where)
        return event

    # -- signals ------------------------------------------------------------------------

    def signal_digest(self, workflow_id: str, name: str, encoding: str, payload: str | bytes, at: float) -> bytes:
        return self.chain().link(chain.SIGNAL_SEED, chain.signal_fields(workflow_id, name, encoding, payload, at))

    def checked_signal(self, workflow_id: str, row: tuple[Any, ...]) -> Signal:
        """A row ``(id, name, encoding, payload, payload_bytes, sent_at, digest)`` once its checksum matches."""
        signal_id, name, encoding, text, data, at, digest = row
        payload = data if text is None else text
        return chain.checked_signal(self.chain(), workflow_id, (signal_id, name, encoding, payload, at, digest),
                                    f"{self.url}")


def chain_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A page's row as the chain reads it: the payload in one column."""
    seq, step, kind, name, at, outcome, encoding, text, data, digest = row
    return (seq, step, kind, name, at, outcome, encoding, data if text is None else text, digest)


def seal_from(rows: list[Any], where: str) -> Seal:
    """``(status, head, workflow_id, generation)`` of a run row as a :data:`Seal`."""
    try:
        status, head, workflow_id, generation = rows[0]
        return Status(status), head, chain.seed(workflow_id, generation), workflow_id
    except (IndexError, ValueError, TypeError, AttributeError) as exc:
        raise CorruptStoreError(f"the run row of {where} is damaged ({rows[0][:1] if rows else 'gone'}): "
                                "restore the store from a backup") from exc
