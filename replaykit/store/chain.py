"""A run's hash chain: each event's digest covers the previous event's digest and all of this
event's fields, so a flipped bit, a dropped, reordered or duplicated row, or a row spliced in
from another run is caught as the history is read, before anything is replayed from it.

The first event chains from a seed made of the run's row id. Events are numbered from 0 with
no gap: a missing row is caught by its number as well as by the chain. (A tail cut off whole
leaves a valid, shorter chain: the rows after it were never read as recorded.)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from typing import Any

from ..errors import CorruptStoreError
from ..history import Event

DIGEST_SIZE = 16
_SEED = b"replaykit chain 1\x00"


def seed(run: int) -> bytes:
    """What the run's first event (seq 0) chains from."""
    return blake2b(_SEED + str(run).encode(), digest_size=DIGEST_SIZE).digest()


_HEAD = struct.Struct("<qqdIIII").pack  # seq, step, at, and the lengths of the four texts after them


def link(prev: bytes, e: Event) -> bytes:
    """The digest of event ``e`` recorded after the event whose digest is ``prev``: over ``prev``,
    the numbers (packed), the four texts (their lengths in the head: no two events hash alike),
    and the payload."""
    seq, step, kind, name, at, outcome, encoding, payload = e
    return blake2b(prev + _HEAD(seq, step, at, len(kind), len(name), len(outcome), len(encoding))
                   + (kind + name + outcome + encoding).encode()
                   + (payload.encode() if isinstance(payload, str) else payload), digest_size=DIGEST_SIZE).digest()


def verified(rows: Iterable[tuple[Any, ...]], prev: bytes, prev_seq: int, where: str) -> Iterator[tuple[Event, bytes]]:
    """Each row ``(seq, step, kind, name, at, outcome, encoding, payload, digest)`` as an event with
    its digest, once its number follows ``prev_seq`` and its digest follows ``prev``; otherwise
    :class:`CorruptStoreError` naming ``where`` (the run) and the event's position."""
    for row in rows:
        event = Event._make(row[:8])
        if event.seq != prev_seq + 1:
            what = "is missing" if event.seq > prev_seq + 1 else "is there twice or out of order"
            raise CorruptStoreError(
                f"the history of {where} is damaged: event {prev_seq + 1} {what} (found event {event.seq} "
                "next). Nothing was replayed from it; restore the store from a backup.")
        try:
            digest = link(prev, event)
        except (TypeError, AttributeError, UnicodeError) as exc:  # a value of the wrong kind in a column
            raise _broken(where, event.seq, f"a field of the wrong kind ({exc})") from exc
        if row[8] != digest:
            why = "it has no checksum" if row[8] is None else "its checksum does not match its contents"
            raise _broken(where, event.seq, why)
        prev, prev_seq = digest, event.seq
        yield event, digest


def _broken(where: str, seq: int, why: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"the history of {where} is damaged at event {seq}: {why} (a changed, swapped or spliced row, or a "
        "flipped bit). Nothing was replayed from it and the store was not changed; restore it from a backup.")
