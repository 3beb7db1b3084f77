"""Processes that share a store with a test: readers, writers, openers.

    python store_child.py reader DB STOP          # open, count, close in a loop; at STOP print counts as JSON
    python store_child.py writer DB ID STOP       # commit events, checkpointing every two pages, until STOP
    python store_child.py opener DB TIMES         # open the store TIMES times; print what was refused
    python store_child.py full DB LEDGER LIMIT    # run `filler` with RLIMIT_FSIZE=LIMIT (0: no limit)
    python store_child.py full-engine DB LEDGER LIMIT    # the same through an Engine (thread pool, group commit)
    python store_child.py batch DB                # one group-commit batch that outgrows a file size limit
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import sys
import time
from typing import Any

import replaykit as rk

from helpers import journal


def counts(db: str) -> dict[str, int]:
    """Events per workflow id (newest run), read with a fresh plain SQLite connection."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT r.workflow_id, COUNT(*) FROM events e JOIN runs r ON r.id = e.run GROUP BY r.workflow_id"
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


def reader(db: str, stop: str) -> None:
    errors: list[str] = []
    reads = 0
    while not os.path.exists(stop):
        try:
            counts(db)  # each close may checkpoint, and would delete the WAL if it were the last connection
            reads += 1
        except sqlite3.Error as exc:
            errors.append(repr(exc))
    print(json.dumps({"counts": counts(db), "errors": errors, "reads": reads}))


def writer(db: str, workflow_id: str, stop: str) -> None:
    from replaykit.history import OK, START, Event

    with rk.SqliteStore(db) as store:
        conn = store._conn()
        conn.execute("PRAGMA wal_autocheckpoint = 2")  # a checkpoint every other page
        start = Event(0, 0, START, "filler", time.time(), OK, "json",
                      '{"args":[],"kwargs":{},"seed":1,"rules":2}')
        store.create(workflow_id, "filler", start)
        seq = 0
        while not os.path.exists(stop) and seq < 100_000:
            seq += 1
            store.record(workflow_id, Event(seq, seq, "activity", "pad", time.time(), OK, "json",
                                            json.dumps("x" * 3000)))  # about a page: the file grows
            print(seq, flush=True)


def opener(db: str, times: int) -> None:
    refused: list[str] = []
    for _ in range(times):
        try:
            rk.SqliteStore(db).close()
        except rk.ReplayKitError as exc:
            refused.append(str(exc))
    print(json.dumps({"opened": times - len(refused), "refused": refused[:5], "refusals": len(refused)}))


@rk.activity
def pad(i: int) -> str:
    journal(os.environ["LEDGER"], f"ran {i}")
    return "x" * 2000  # big results fill the file quickly


@rk.workflow
def filler(ctx: rk.Context, steps: int):
    for i in range(steps):
        yield pad(i)
    return steps


def limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def full(db: str, ledger: str, limit: int, engine: bool = False) -> None:
    os.environ["LEDGER"] = ledger
    if limit:
        limit_file_size(limit)
    outcome: dict[str, Any]
    try:
        if engine:
            with rk.Engine(db, activity_threads=4) as eng:
                outcome = {"result": eng.start(filler, 400, workflow_id="fill").result(timeout=60)}
        else:
            outcome = {"result": rk.run(filler, 400, workflow_id="fill", db=db)}
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever came out
        outcome = {"error": type(exc).__name__, "message": str(exc), "mro": [c.__name__ for c in type(exc).__mro__]}
    print(json.dumps(outcome))


def batch(db: str) -> None:
    """Write one batch until SQLite spills it to a full file and rolls it back; then try its tail, and
    then the first lost event again, as a driver that missed the loss would (the store holds the run, so it
    keeps the head of its history in memory: the head the lost batch wrote must be forgotten)."""
    from replaykit.history import OK, START, Event

    with rk.SqliteStore(db) as store:
        store.create("b", "b", Event(0, 0, START, "b", 1.0, OK, "json", "{}"))
    limit_file_size(os.path.getsize(db) + 300_000)
    errors = []
    with rk.SqliteStore(db) as store:
        assert store.try_lock("b")
        store.batch()
        seq = 1
        try:
            while seq < 5000:  # the page cache spills to the WAL long before the batch ends
                store.record("b", Event(seq, seq, "activity", "x", 1.0, OK, "json", json.dumps("x" * 3000)))
                seq += 1
        except rk.StoreFullError as exc:
            errors.append(f"write {seq}: {exc}")
        for later in (seq + 1, seq + 2):  # what a driver records next in the same turn
            try:
                store.record("b", Event(later, later, "activity", "x", 1.0, OK, "json", "1"))
            except rk.StoreFullError as exc:
                errors.append(f"write {later}: {exc}")
        try:
            store.commit()
        except rk.StoreFullError as exc:
            errors.append(f"commit: {exc}")
        try:
            store.record("b", Event(seq, seq, "activity", "x", 1.0, OK, "json", "1"))
            store.commit()
        except rk.CorruptStoreError as exc:
            errors.append(f"again {seq}: {exc}")
    print(json.dumps(errors))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "reader":
        reader(args[0], args[1])
    elif mode == "writer":
        writer(args[0], args[1], args[2])
    elif mode == "opener":
        opener(args[0], int(args[1]))
    elif mode in ("full", "full-engine"):
        full(args[0], args[1], int(args[2]), engine=mode == "full-engine")
    elif mode == "batch":
        batch(args[0])
    else:
        sys.exit(f"unknown mode {mode!r}")
