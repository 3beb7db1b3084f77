"""After a lost batch (SQLite rolled it back: a full disk, an I/O error), _batch_lost clears this engine's
keeper marks on the runs it gives up (store.keep(id, None)): a write, which opened the driver's next batch.
With no run left in memory, no evicted run and no timer, the driver then waited for a job with no timeout,
holding SQLite's write lock: every other writer (a signal, a start, another process) waited for its busy
timeout and failed with "database is locked". The lost commit is injected (it really rolls the batch back)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import replaykit as rk

from helpers import driver_turn, lose_a_commit, wait_until, waits_for_approval


def test_the_driver_does_not_idle_holding_the_write_lock_after_a_lost_batch(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    with rk.Engine(db, poll_interval=0.02) as engine:
        handle = engine.start(waits_for_approval, workflow_id="x")
        wait_until(lambda: "x" in engine._runs, "x waits for its signal, in memory")
        driver_turn(engine)
        lost = lose_a_commit(engine, lambda: True)  # the next batch that writes: the signal taken
        engine.signal("x", "approved", "yes")  # taking it is the batch that is lost: x ends in it, then is stopped
        wait_until(lambda: lost, "the batch that took the signal is lost")
        with pytest.raises(rk.StoreError):
            handle.result(timeout=10)
        time.sleep(0.2)  # the driver, idle: no run, no timer
        other = sqlite3.connect(db, timeout=0.5, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # what any writer does first (a signal, another process's step)
            other.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            pytest.fail(f"the idle driver still holds the store's write lock after the lost batch: {exc}")
        finally:
            other.close()
        engine.signal("x", "approved", "again")  # a writer of the engine's own store gets through too
    with rk.Engine(db, poll_interval=0.02) as again:  # what was committed goes on
        [resumed] = again.recover()
        assert resumed.result(timeout=10) == {"answer": "yes"}
