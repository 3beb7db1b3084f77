"""A run's hash chain: each event's digest covers the previous event's digest and all of this
event's fields, so a flipped bit, a dropped, reordered or duplicated row, or a row spliced in
from another run is caught as the history is read, before anything is replayed from it.

The chain is keyed (keyed BLAKE2b) with a key derived from the store's secret, so a writer of the
store without the secret cannot forge a history that passes, and salted with the store's identity,
so a history copied from another store that shares the secret does not pass either. The first
event chains from a seed made of the run's workflow id and generation. Events are numbered from 0
with no gap: a missing row is caught by its number as well as by the chain. A run that ended is
sealed: its row keeps a keyed digest (its *head*) of its seed, its status and its last event's
position and digest, so a finished history cut short or lengthened, a status changed, or the end
of another run copied in, is caught too.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from hashlib import blake2b
from hmac import compare_digest
from typing import Any

from ..errors import CorruptStoreError, MigrationRequiredError, PayloadAuthenticationError
from ..history import Event, Status
from .base import Signal

DIGEST_SIZE = 16
_SEED = b"replaykit chain 1\x00"
SIGNAL_SEED = b"replaykit signal 1\x00"  # what a signal row's checksum starts from
# seq, step, at, the lengths of the four texts after them, and the payload's kind (1 text, 2 bytes)
_HEAD = struct.Struct("<qqdIIIIB").pack
_SEAL = b"replaykit seal 1"  # the seal's key is the chain's, personalised apart from the events'


def seed(workflow_id: str, generation: int) -> bytes:
    """What the first event (seq 0) of a run (a generation of a workflow id) chains from: no row of
    one run verifies in another, and a history keeps its digests in another store (no row id in them)."""
    return blake2b(_SEED + struct.pack("<q", generation) + workflow_id.encode(), digest_size=DIGEST_SIZE).digest()


def _fields(prev: bytes, e: Event) -> bytes:
    """What an event's digest covers: ``prev``, the numbers (packed), the four texts (their lengths
    in the head: no two events hash alike), the payload and whether it is text or bytes (the same
    bytes stored as the other kind read back as another value)."""
    seq, step, kind, name, at, outcome, encoding, payload = e
    if not (type(kind) is str and type(name) is str and type(outcome) is str and type(encoding) is str):
        raise TypeError("a text field holds a value that is not text")
    if isinstance(payload, str):  # the common case: one encode for all five texts
        return (prev + _HEAD(seq, step, at, len(kind), len(name), len(outcome), len(encoding), 1)
                + f"{kind}{name}{outcome}{encoding}{payload}".encode())
    return (prev + _HEAD(seq, step, at, len(kind), len(name), len(outcome), len(encoding), 2)
            + f"{kind}{name}{outcome}{encoding}".encode() + payload)


IDENTITY_SIZE = 16  # bytes of a store's identity: BLAKE2b's salt


def new_identity() -> str:
    """A new store's identity, as its meta table keeps it (hex)."""
    return os.urandom(IDENTITY_SIZE).hex()


def identity_of(kept: object, where: str) -> bytes:
    """The identity a store's meta table keeps (``None``: a store made before identities, which has none)."""
    if kept is None:
        return b""
    try:
        identity = bytes.fromhex(kept) if isinstance(kept, str) else b""
    except ValueError:
        identity = b""
    if len(identity) != IDENTITY_SIZE:
        raise CorruptStoreError(
            f"{where}: the store's identity (the 'identity' row of its meta table) is damaged ({str(kept)[:40]!r}, "
            f"not {IDENTITY_SIZE * 2} hex digits). Every history in the store is checksummed with it, so none can be "
            "checked. Restore the store from a backup; nothing was read or recorded.")
    return identity


class Chain:
    """The chain of one store's keys: the first key links new events, any of them verifies (so
    histories recorded before a key rotation still read). ``identity``, the store's own (empty for a
    store made before identities), salts every digest: a history copied from another store under the
    same keys does not verify here."""

    def __init__(self, keys: Sequence[bytes], identity: bytes = b"") -> None:
        if not keys:
            raise ValueError("a chain needs at least one key")
        self._primed = [blake2b(key=key[:64], digest_size=DIGEST_SIZE, salt=identity) for key in keys]
        self._sealing = [blake2b(key=key[:64], digest_size=DIGEST_SIZE, person=_SEAL, salt=identity) for key in keys]

    def link(self, prev: bytes, e: Event) -> bytes:
        """The digest of event ``e`` recorded after the event whose digest is ``prev``."""
        mac = self._primed[0].copy()
        mac.update(_fields(prev, e))
        return mac.digest()

    def matches(self, prev: bytes, e: Event, digest: Any) -> bytes | None:
        """``digest`` if it is event ``e``'s after ``prev`` under one of the keys; else ``None``."""
        data = _fields(prev, e)
        for primed in self._primed:
            mac = primed.copy()
            mac.update(data)
            if _same(mac.digest(), digest):
                return bytes(digest)
        return None

    def seal(self, seed: bytes, status: Status, last: tuple[int, bytes] | None) -> bytes:
        """The head of a run (chained from ``seed``) that ended ``status`` at event ``last`` (its
        position and digest; ``None``: no events)."""
        mac = self._sealing[0].copy()
        mac.update(_sealed(seed, status, last))
        return mac.digest()

    def check_seal(self, head: Any, seed: bytes, status: Status, last: tuple[int, bytes] | None,
                   where: str) -> None:
        """A run that ended must carry the seal of its seed, status and last event (``last``: the
        last event read and its digest); a run that has not ended carries none. Every run has
        events (its start first): one with none is damaged."""
        if last is None:
            raise CorruptStoreError(f"the history of {where} is damaged: it has no events, not even its start. "
                                    "Nothing was run from it; restore the store from a backup.")
        if head is None:
            if status.is_terminal:
                raise CorruptStoreError(f"the history of {where} is damaged: the run ended, but its row lost the "
                                        "seal of its end. Restore the store from a backup.")
            return
        if not status.is_terminal:
            raise CorruptStoreError(f"the history of {where} is damaged: its row says the run has not ended, but "
                                    "it carries the seal of an end. Restore the store from a backup.")
        data = _sealed(seed, status, last)
        for sealing in self._sealing:
            mac = sealing.copy()
            mac.update(data)
            if _same(mac.digest(), head):
                return
        raise CorruptStoreError(
            f"the history of {where} is damaged: it ends at event {last[0]} and says it ended {status.value}, "
            "which is not how the run was sealed when it ended (events cut off its end or added after it, its "
            "status changed, or the end of another run copied in). Nothing was replayed from it; restore the "
            "store from a backup.")

    def verified(self, rows: Iterable[tuple[Any, ...]], prev: bytes, prev_seq: int,
                 where: str) -> Iterator[tuple[Event, bytes]]:
        """Each row ``(seq, step, kind, name, at, outcome, encoding, payload, digest)`` as an event
        with its digest, once its number follows ``prev_seq`` and its digest follows ``prev``;
        otherwise :class:`CorruptStoreError` naming ``where`` (the run) and the event's position."""
        first = self._primed[0]
        for row in rows:
            event = Event._make(row[:8])
            if event.seq != prev_seq + 1:
                what = "is missing" if event.seq > prev_seq + 1 else "is there twice or out of order"
                raise CorruptStoreError(
                    f"the history of {where} is damaged: event {prev_seq + 1} {what} (found event {event.seq} "
                    "next). Nothing was replayed from it; restore the store from a backup.")
            try:
                mac = first.copy()
                mac.update(_fields(prev, event))
                mine = mac.digest()
                digest = mine if _same(mine, row[8]) else self.matches(prev, event, row[8])  # else an older key's
            except (TypeError, AttributeError, UnicodeError, struct.error) as exc:  # a value of a wrong kind
                raise broken(where, event.seq, f"a field of the wrong kind ({exc})") from exc
            if digest is None:
                if event.seq == 0 and row[8] is not None:
                    raise _other_key(where)
                why = "it has no checksum" if row[8] is None else "its checksum does not match its contents"
                raise broken(where, event.seq, why)
            prev, prev_seq = digest, event.seq
            yield event, digest


def signal_fields(workflow_id: str, name: str, encoding: str, payload: str | bytes, at: float) -> Event:
    """A signal's row in the shape the chain hashes (every text's length is in the hash)."""
    return Event(0, 0, "signal", workflow_id, at, name, encoding, payload)


def checked_signal(links: Chain, workflow_id: str, row: tuple[Any, ...], where: str) -> Signal:
    """A signal row ``(id, name, encoding, payload, sent_at, digest)`` of the store ``where``,
    once its checksum matches; else :class:`CorruptStoreError` (the signal is not delivered)."""
    signal_id, name, encoding, payload, at, digest = row
    try:
        ok = links.matches(SIGNAL_SEED, signal_fields(workflow_id, name, encoding, payload, at), digest) is not None
    except (TypeError, AttributeError, UnicodeError, struct.error):
        ok = False
    if not ok:
        raise CorruptStoreError(
            f"signal #{signal_id} to {workflow_id!r} in {where} is damaged (its checksum does not match its "
            "contents): it was not delivered. Restore the store from a backup.")
    return Signal(signal_id, name, encoding, payload, at)


def _same(digest: bytes, stored: Any) -> bool:
    """Is ``stored`` (a column's value) ``digest``? Compared in constant time."""
    return isinstance(stored, (bytes, memoryview)) and compare_digest(digest, stored)


def _sealed(seed: bytes, status: Status, last: tuple[int, bytes] | None) -> bytes:
    seq, digest = (-1, b"") if last is None else last
    return seed + struct.pack("<q", seq) + digest + status.value.encode()


def migration_required(where: str, version: int, checksums: int) -> MigrationRequiredError:
    """A store from before checksums (schema ``version``) that nobody has vouched for."""
    return MigrationRequiredError(
        f"{where} has store schema {version}, from before histories were checksummed (schema {checksums}). "
        "Checksumming its rows vouches for them as they stand, so it is done only when asked: run "
        f"`replaykit migrate {where}` once (with the secret the store will use), after making sure nobody "
        "else could write it. A store this replaykit version has already used never goes back to an older "
        "schema: if it did, someone changed it; restore it from a backup. Nothing was changed.")


def set_back(version: int, what: str = "the checksums") -> CorruptStoreError:
    """A store whose schema number says ``version`` while its tables already have ``what`` a later
    schema added (replaykit moves the number forward only, with the tables, in one transaction)."""
    return CorruptStoreError(
        f"the store says it is of schema {version}, but its tables already have {what} of a later one: "
        "its schema number was set back (not by replaykit). Restore it from a backup; nothing was changed.")


def broken(where: str, seq: int, why: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"the history of {where} is damaged at event {seq}: {why} (a changed, swapped or spliced row, a flipped "
        "bit, rows copied in from another store, or a store recorded under another secret). Nothing was "
        "replayed from it and the store was not changed; restore it from a backup, or give the secret it was "
        "recorded with.")


def _other_key(where: str) -> PayloadAuthenticationError:
    return PayloadAuthenticationError(
        f"the history of {where} does not check out under this process's secret from its first event: it was "
        "recorded with another secret (give every process of a store the same REPLAYKIT_SECRET, and keep old ones "
        "in REPLAYKIT_OLD_SECRETS while rotating), or it was copied in from another store, or its first event, its "
        "run's row (id, generation) or the store's identity (meta 'identity') is damaged. Nothing was replayed "
        "from it and the store was not changed.")
