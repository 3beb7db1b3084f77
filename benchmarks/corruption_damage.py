"""The damages of the corruption campaign (benchmarks/corruption_campaign.py): each takes a seeded
random source and a copied store's directory, damages the store one way, and says what it did and
whether that only lost the last commits of an unfinished run."""

from __future__ import annotations

import os
import random
import sqlite3
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WF = "wf"


def _flip_bits(path: Path, bits: list[int]) -> None:
    data = bytearray(path.read_bytes())
    for bit in bits:
        data[bit // 8] ^= 1 << bit % 8
    path.write_bytes(bytes(data))


@contextmanager
def _rows_of_wf(d: Path) -> Iterator[tuple[sqlite3.Connection, int, list[int]]]:
    """A transaction on the store in ``d``, with ``wf``'s run id and event numbers."""
    conn = sqlite3.connect(d / "store.db", isolation_level=None)
    try:
        conn.execute("BEGIN")
        run = conn.execute("SELECT id FROM runs WHERE workflow_id = ?", (WF,)).fetchone()[0]
        yield conn, run, [s for (s,) in conn.execute("SELECT seq FROM events WHERE run = ? ORDER BY seq", (run,))]
        conn.execute("COMMIT")
    finally:
        conn.close()


def flip_file(rng: random.Random, d: Path) -> tuple[str, bool]:
    bits = [rng.randrange((d / "store.db").stat().st_size * 8) for _ in range(rng.randint(1, 8))]
    _flip_bits(d / "store.db", bits)
    return f"flipped bits {bits} of store.db", False


def flip_events_pages(rng: random.Random, d: Path) -> tuple[str, bool]:
    conn = sqlite3.connect(d / "store.db")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the events' pages are the file's
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'events'")]
    finally:
        conn.close()
    bits = [(rng.choice(pages) - 1) * size * 8 + rng.randrange(size * 8) for _ in range(rng.randint(1, 4))]
    _flip_bits(d / "store.db", bits)
    return f"flipped bits {bits} of store.db (checkpointed), in the events table's pages {pages}", False


def _changed(value: Any, rng: random.Random) -> tuple[Any, str]:
    """``value`` with one byte XORed with a random non-zero byte, and the SQL that stores it with its
    type (text keeps the raw bytes, UTF-8 or not); None if that is no value (NULL, or a NaN)."""
    fmt = "<d" if isinstance(value, float) else "<q" if isinstance(value, int) else ""
    raw = bytearray(struct.pack(fmt, value) if fmt else value.encode() if isinstance(value, str) else value)
    raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
    if fmt:
        new = struct.unpack(fmt, raw)[0]
        return (None if new != new else new), "?"
    return bytes(raw), "CAST(? AS TEXT)" if isinstance(value, str) else "?"


def _flip_column(*columns: str) -> Callable[[random.Random, Path], tuple[str, bool]]:
    def damage(rng: random.Random, d: Path) -> tuple[str, bool]:
        with _rows_of_wf(d) as (conn, run, seqs):
            for _ in range(100):
                seq, column = rng.choice(seqs), rng.choice(columns)
                old = conn.execute(f"SELECT {column} FROM events WHERE run = ? AND seq = ?", (run, seq)).fetchone()[0]
                new, sql = _changed(old, rng) if old not in (None, "", b"") else (None, "")
                if new is not None:
                    conn.execute(f"UPDATE events SET {column} = {sql} WHERE run = ? AND seq = ?", (new, run, seq))
                    return f"changed {column} of event {seq} from {old!r:.60} to {new!r:.60}", False
        raise RuntimeError("no value to change")
    return damage


def delete_row(rng: random.Random, d: Path, last: bool = False) -> tuple[str, bool]:
    with _rows_of_wf(d) as (conn, run, seqs):
        seq = seqs[-1] if last else rng.choice(seqs)
        conn.execute("DELETE FROM events WHERE run = ? AND seq = ?", (run, seq))
    return f"deleted event {seq} (of 0-{seqs[-1]})", seq == seqs[-1]  # the last: as if never committed


def swap_rows(rng: random.Random, d: Path) -> tuple[str, bool]:
    with _rows_of_wf(d) as (conn, run, seqs):
        a, b = rng.sample(seqs, 2)
        for old, new in ((a, -1), (b, a), (-1, b)):
            conn.execute("UPDATE events SET seq = ? WHERE run = ? AND seq = ?", (new, run, old))
    return f"swapped events {a} and {b}", False


_COPY = ("INSERT OR REPLACE INTO events (run, seq, step, kind, name, at, outcome, encoding, payload, digest) "
         "SELECT ?, ?, step, kind, name, at, outcome, encoding, payload, digest FROM events WHERE run = ? AND seq = ?")


def duplicate_row(rng: random.Random, d: Path) -> tuple[str, bool]:
    with _rows_of_wf(d) as (conn, run, seqs):
        seq = rng.choice(seqs)
        conn.execute(_COPY, (run, seqs[-1] + 1, run, seq))
    return f"copied event {seq} to a new last event {seqs[-1] + 1}", False


def splice_other(rng: random.Random, d: Path) -> tuple[str, bool]:
    with _rows_of_wf(d) as (conn, run, seqs):
        other = conn.execute("SELECT id FROM runs WHERE workflow_id = 'other'").fetchone()[0]
        seq = rng.choice([s for (s,) in conn.execute("SELECT seq FROM events WHERE run = ?", (other,))])
        at = seq if rng.random() < 0.5 else seqs[-1] + 1  # in place of ours, or after our last
        conn.execute(_COPY, (run, at, other, seq))
    return f"copied event {seq} of run 'other' to event {at} of {WF!r} (0-{seqs[-1]})", False


def torn_wal(rng: random.Random, d: Path, flip: bool) -> tuple[str, bool]:
    wal = d / "store.db-wal"
    data = bytearray(wal.read_bytes())
    at = rng.randrange(len(data))
    if flip:
        data[at] ^= rng.randrange(1, 256)
    wal.write_bytes(bytes(data) if flip else bytes(data[:at]))
    return f"{'changed byte' if flip else 'cut at byte'} {at} of the {len(data)}-byte -wal left by SIGKILL", True


def truncate_db(rng: random.Random, d: Path) -> tuple[str, bool]:
    size = (d / "store.db").stat().st_size
    at = rng.randrange(1, size)  # not 0: an empty file is a deleted store (a new one is made there)
    at = (at - at % 4096 or at) if rng.random() < 0.5 else at  # at a page boundary, or anywhere
    os.truncate(d / "store.db", at)
    return f"truncated the {size}-byte store.db to {at} bytes", False


ALL, WAL = ("done", "killed", "waiting"), ("killed",)  # the shapes a damage applies to
DAMAGES: dict[str, tuple[Callable[[random.Random, Path], tuple[str, bool]], tuple[str, ...]]] = {
    "flip-file-bits": (flip_file, ALL), "flip-events-pages": (flip_events_pages, ALL),
    "flip-payload": (_flip_column("payload"), ALL), "flip-name": (_flip_column("name"), ALL),
    "flip-kind": (_flip_column("kind"), ALL),
    "flip-other-column": (_flip_column("step", "at", "outcome", "encoding", "digest"), ALL),
    "delete-row": (delete_row, ALL), "delete-last": (lambda rng, d: delete_row(rng, d, last=True), ALL),
    "swap-rows": (swap_rows, ALL), "duplicate-row": (duplicate_row, ALL), "splice-other-run": (splice_other, ALL),
    "torn-wal-truncate": (lambda rng, d: torn_wal(rng, d, flip=False), WAL),
    "torn-wal-flip": (lambda rng, d: torn_wal(rng, d, flip=True), WAL), "truncate-db": (truncate_db, ALL),
}


