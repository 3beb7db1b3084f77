"""A worker's driver on SQLite whose batch is lost: _batch_lost commits the cleared marks at once (so that
the driver does not idle holding SQLite's write lock), but the lost-commit callbacks run after that
commit, and a worker's (WorkerEngine._unlock: the run handed back again) writes: into a new batch, left
open while the driver waits for a job. Every other writer (the worker's own claims and heartbeats,
a client, another process) then fails with 'database is locked'."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from worker_app import WORKFLOWS, quick

import replaykit as rk

from helpers import lose_a_commit, wait_until


def test_a_worker_does_not_idle_holding_the_write_lock_after_a_lost_batch(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    with rk.Client(db) as client, rk.Worker(db, workflows=WORKFLOWS, heartbeat=0.1, poll_interval=0.05) as w:
        runner = threading.Thread(target=w.run, daemon=True)
        runner.start()
        [engine] = w._engines
        started: list[float] = []
        lost = lose_a_commit(engine, lambda: threading.current_thread() is engine._thread
                             and bool(started) and time.monotonic() > started[0] + 0.5)
        handle = client.start(quick, 1, 1.0, workflow_id="x")  # its activity's result: the batch lost
        wait_until(lambda: "x" in engine._runs, "x is claimed and driven")
        started.append(time.monotonic())
        wait_until(lambda: lost, "the batch recording the activity's result is lost", timeout=20)
        time.sleep(0.5)  # the driver, idle: no run in memory, no timer
        other = sqlite3.connect(db, timeout=1.0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            pytest.fail(f"the worker's idle driver holds the store's write lock after the lost batch: {exc}")
        finally:
            other.close()
        assert handle.result(timeout=20) == 2  # handed back, claimed again, finished
        w.request_stop()
