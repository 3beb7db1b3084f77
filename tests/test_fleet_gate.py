"""A worker's activity gate (an activity starts only once a heartbeat confirms the worker's place) on
PostgreSQL: an activity it refuses leaves its run ready for a worker to take, never stranded.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest

import replaykit as rk


@rk.activity
def fleet_gate_step(name: str, seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return name


@rk.workflow
def fleet_gate_two(ctx: rk.Context, first: float):
    a = yield fleet_gate_step("a", first)
    b = yield fleet_gate_step("b")
    return [a, b]


def test_a_run_whose_activity_the_gate_refused_while_its_worker_kept_its_place_is_not_stranded(pg_url: str) -> None:
    """The heartbeats of a worker are held up for longer than its lease (a slow server: here a lock on
    the registry table, which the heartbeat's UPDATE waits for), while nobody cuts the worker off. The
    activity submitted meanwhile waits at the gate, which gives up after the lease: the run is handed
    back ready at once, and the worker (or another) takes it again. Before, it was handed back as one
    another worker took over, with no ready time: no worker ever claimed it, and it stayed 'running'."""
    worker = rk.Worker(pg_url, workflows=[fleet_gate_two], queues=["main"], heartbeat=0.2, lease=1.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    client = rk.Client(pg_url)
    admin = psycopg.connect(pg_url)
    try:
        client.start(fleet_gate_two, 1.2, workflow_id="r1", queue="main")
        time.sleep(0.1)  # activity "a" (1.2 s) runs
        admin.execute("LOCK TABLE replaykit_workers IN EXCLUSIVE MODE")  # heartbeats wait; reads go on
        time.sleep(3.0)  # "b" is submitted at ~1.3 s, waits at the gate for a heartbeat, given up at ~2.3 s
        admin.rollback()
        assert client.handle("r1").result(timeout=10) == ["a", "b"]
    finally:
        admin.close()
        worker.stop()
        client.close()


lock_held_at_b: list[bool] = []
current_worker: list[rk.Worker] = []


@rk.activity
def fleet_gate_check_lock(workflow_id: str) -> str:
    lock_held_at_b.append(current_worker[0].store._locks.holds(workflow_id))  # type: ignore[attr-defined]
    return "b"


@rk.workflow
def fleet_gate_lock_kept(ctx: rk.Context, first: float):
    a = yield fleet_gate_step("a", first)
    b = yield fleet_gate_check_lock(ctx.workflow_id)
    return [a, b]


@pytest.mark.parametrize("threads", [16, 0], ids=["on threads", "inline"])
def test_a_run_claimed_before_the_worker_lost_its_place_starts_no_activity_until_claimed_again(
        pg_url: str, threads: int) -> None:
    """The worker's lock connection ends (the server ended it, as a reaper does) while an activity of its run
    runs: the run's lock ended with it. The worker registers again and goes on; the run, still in its memory,
    must not start its next activity without its lock: it is handed back and claimed again first. Before,
    the gate looked only at the life an activity was submitted in, and the next activity ran unlocked.
    Inline (no activity threads), the driver runs the activity: the same gate holds it."""
    lock_held_at_b.clear()
    worker = rk.Worker(pg_url, workflows=[fleet_gate_lock_kept], queues=["main"], heartbeat=0.1, lease=5.0,
                       activity_threads=threads)
    current_worker[:] = [worker]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    client = rk.Client(pg_url)
    admin = psycopg.connect(pg_url, autocommit=True)
    try:
        client.start(fleet_gate_lock_kept, 1.0, workflow_id="r2", queue="main")
        deadline = time.monotonic() + 20
        while not worker.holds("r2"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # activity "a" (1 s) runs
        backend = worker.store._locks.backend()  # type: ignore[attr-defined]
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))  # the run's lock goes with it
        assert client.handle("r2").result(timeout=20) == ["a", "b"]
        assert lock_held_at_b == [True]
    finally:
        admin.close()
        worker.stop()
        client.close()


def test_on_sqlite_no_activity_waits_for_a_heartbeat(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The gate is for stores that cut a silent worker off (PostgreSQL): a stopped SQLite process keeps its
    locks, and nobody takes its runs over. A worker whose heartbeat is longer than its lease (valid on SQLite,
    where the lease is not used) had every activity wait for a heartbeat, and some refused and handed back."""
    db = str(tmp_path / "s.db")
    with caplog.at_level(logging.WARNING, logger="replaykit"), \
            rk.Worker(db, workflows=[fleet_gate_two], queues=["main"], heartbeat=10.0, lease=2.0) as worker:
        time.sleep(2.5)  # its last heartbeat is older than the lease now; the next comes at 10 s
        client = rk.Client(worker.store)
        handles = [client.start(fleet_gate_two, 0.0, workflow_id=f"s-{n}", queue="main") for n in range(3)]
        assert [h.result(timeout=30) for h in handles] == [["a", "b"]] * 3
    assert not [r for r in caplog.records if "not started" in r.getMessage()]
