"""The work queue half of the Store contract (``store/work.py``), tested against the memory, SQLite
and PostgreSQL stores: claims, wake-ups, queue limits, the worker registry. Racing claims and dead
workers are real processes.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from test_store_conformance import result, start, step, wait_for

import replaykit as rk
from replaykit.history import Status
from replaykit.store import SqliteStore, Store, open_store
from replaykit.store.sqlite_schema import MIGRATED_TO
from replaykit.store.work import Placement, Queue, WorkerRecord

from conftest import PYTHON, Backend

NOW = 1000.0


def queued(store: Store, workflow_id: str, queue: str = "q", name: str = "w", **placement: object) -> None:
    assert store.create(workflow_id, name, start(name, at=NOW - 10), placement=Placement(queue, **placement))  # type: ignore[arg-type]


def claim(store: Store, queue: str = "q", capacity: int = 10, now: float = NOW, worker: str = "w1",
          names: tuple[str, ...] = ("w",), version: str = "v1") -> list[str]:
    return [workflow_id for workflow_id, _ in store.claim(worker, queue, names, capacity, now, version)]


def record(worker_id: str, queues: tuple[str, ...] = ("q",)) -> WorkerRecord:
    return WorkerRecord(worker_id, "host", 1, queues, ("w",), "v1", NOW, NOW, False)


def test_claims_take_ready_runs_by_priority_once(store: Store) -> None:
    queued(store, "low", priority=0)
    queued(store, "high", priority=5)
    queued(store, "later", ready_at=NOW + 60)
    queued(store, "elsewhere", queue="other")
    store.create("unqueued", "w", start())
    assert claim(store, capacity=1) == ["high"]
    assert claim(store, worker="w2") == ["low"]  # the held one is nobody else's
    assert claim(store) == []
    assert store.next_ready(["q"]) == NOW + 60
    assert claim(store, now=NOW + 60) == ["later"]
    assert store.next_ready(["q"]) is None


def test_claims_take_only_workflows_the_worker_has_and_live_runs(store: Store) -> None:
    queued(store, "theirs", name="other")
    queued(store, "paused")
    store.set_status("paused", Status.PAUSED, NOW)
    queued(store, "done")
    store.record("done", result(1), status=Status.COMPLETED)
    assert claim(store) == []
    assert claim(store, names=("w", "other")) == ["theirs"]


def test_a_run_handed_back_waits_for_its_deadline_or_a_wake_up(store: Store) -> None:
    queued(store, "a")
    assert claim(store) == ["a"]
    store.release("a", "w1", NOW + 100)
    store.unlock("a")
    assert claim(store) == []
    store.send_signal("a", "go", "json", "1", NOW + 1)  # a signal wakes it
    assert claim(store, now=NOW + 1) == ["a"]
    store.release("a", "w1", None)
    store.unlock("a")
    assert claim(store, now=NOW + 10_000) == []  # nothing to wake it: never ready
    store.set_status("a", Status.PAUSED, NOW + 2)
    store.set_status("a", Status.RUNNING, NOW + 3)  # a resume wakes it
    assert claim(store, now=NOW + 3) == ["a"]


def test_a_wake_up_while_held_is_kept_for_the_hand_back(store: Store) -> None:
    queued(store, "a")
    assert claim(store) == ["a"]
    store.send_signal("a", "go", "json", "1", NOW + 1)  # arrives while the run is held
    store.release("a", "w1", NOW + 500)
    store.unlock("a")
    assert claim(store, now=NOW + 1) == ["a"]


def test_a_release_by_a_worker_that_no_longer_holds_the_run_changes_nothing(store: Store) -> None:
    queued(store, "a")
    assert claim(store, worker="dead") == ["a"]
    store.unlock("a")
    store.unregister_worker("dead")  # declared dead: its run is ready, and another worker takes it
    assert claim(store, now=time.time() + 1, worker="successor") == ["a"]
    store.release("a", "dead", NOW, problem="WorkflowLockedError: ...", version="v1")  # the dead one, late
    assert [r for r in store.workers()] == [] and claim(store, now=time.time() + 1, worker="third") == []
    store.release("a", "successor", None)
    store.unlock("a")
    store.send_signal("a", "go", "json", "1", NOW)
    assert claim(store, worker="third") == ["a"]  # no problem was recorded by the late release


def test_a_child_ending_wakes_its_parent_and_an_ended_run_is_never_ready(store: Store) -> None:
    queued(store, "parent")
    assert claim(store) == ["parent"]
    queued(store, "child", parent="parent")
    store.release("parent", "w1", None)
    store.unlock("parent")
    assert claim(store) == ["child"]
    store.record("child", result(1, at=NOW + 5), status=Status.COMPLETED)
    store.release("child", "w1", None)
    store.unlock("child")
    assert claim(store, now=NOW + 5) == ["parent"]


def test_a_fleet_wide_limit_counts_what_every_worker_holds(store: Store) -> None:
    store.set_queue(Queue("q", concurrency=2))
    for i in range(5):
        queued(store, f"r{i}")
    assert len(claim(store, worker="w1")) == 2
    assert claim(store, worker="w2") == []
    store.release("r0", "w1", None)
    store.unlock("r0")
    assert claim(store, worker="w2") == ["r2"]


def test_a_per_key_limit_counts_each_partition(store: Store) -> None:
    store.set_queue(Queue("q", per_key=1))
    for i, key in enumerate("aaab"):
        queued(store, f"r{i}", key=key)
    queued(store, "nokey")  # no key: not limited by it
    assert sorted(claim(store)) == ["nokey", "r0", "r3"]


def test_a_rate_limit_counts_starts_not_wake_ups(store: Store) -> None:
    store.set_queue(Queue("q", rate=(2, 3600.0)))
    for i in range(4):
        queued(store, f"r{i}")
    assert claim(store) == ["r0", "r1"]
    store.release("r0", "w1", NOW)
    store.unlock("r0")
    assert claim(store) == ["r0"]  # started already: waking it is not a start
    assert claim(store) == []


def test_a_problem_is_left_to_workers_of_other_code(store: Store) -> None:
    queued(store, "a")
    assert claim(store) == ["a"]
    store.release("a", "w1", NOW, problem="NonDeterminismError: ...", version="v1")
    store.unlock("a")
    reported = "code version v1: NonDeterminismError: ..."
    assert store.info("a").problem == reported  # type: ignore[union-attr]
    assert [i.problem for i in store.list()] == [reported]
    assert claim(store, version="v1") == []
    assert claim(store, version="v2") == ["a"]
    store.release("a", "w1", NOW)  # driven fine under v2: the problem is gone
    store.unlock("a")
    assert store.info("a").problem is None  # type: ignore[union-attr]
    assert claim(store, version="v1") == ["a"]


def test_the_registry_lists_workers_with_their_runs_and_unregistering_releases_them(store: Store) -> None:
    store.register_worker(record("w1"))
    queued(store, "a")
    assert claim(store, worker="w1") == ["a"]
    [listed] = store.workers()
    assert (listed.worker_id, listed.queues, listed.runs, listed.stopping) == ("w1", ("q",), ("a",), False)
    assert store.heartbeat("w1", stopping=True)
    assert store.workers()[0].stopping
    store.unlock("a")
    store.unregister_worker("w1")
    assert store.workers() == []
    assert not store.heartbeat("w1")
    assert claim(store, now=time.time() + 1, worker="w2") == ["a"]  # what it held is ready at once


# -- several processes -------------------------------------------------------------------

_CHILD = """
import json, sys, time
from replaykit.store import open_store
from replaykit.store.work import WorkerRecord
store = open_store(sys.argv[1])
mode = sys.argv[2]
if mode == "register":
    store.register_worker(WorkerRecord("dying", "host", 1, ("q",), ("w",), "v1", 0.0, 0.0, False))
    assert store.claim("dying", "q", ["w"], 5, time.time(), "v1") == [("a", "w")]
    print("holding", flush=True)
    time.sleep(60)
else:  # claim: take what the queue allows, hold it a moment, give it back; log each holding
    deadline = time.monotonic() + float(sys.argv[3])
    log = []
    while time.monotonic() < deadline:
        got = store.claim(mode, "q", ["w"], 3, time.time(), "v1")
        t0 = time.time()
        time.sleep(0.002 * len(got))
        t1 = time.time()
        for workflow_id, _ in got:
            store.release(workflow_id, mode, time.time())
            store.unlock(workflow_id)
        log.extend([t0, t1] for _ in got)
    print(json.dumps(log), flush=True)
"""


def test_a_dead_workers_runs_are_released_by_the_next_reaper(backend: Backend, child_env: dict[str, str]) -> None:
    backend.needs_database("a worker process killed")
    store = backend.open()
    queued(store, "a")
    child = subprocess.Popen([PYTHON, "-c", _CHILD, str(backend.target), "register"], env=child_env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        assert store.reap_workers(lease=30) == []  # alive: its lock is held
        assert [w.runs for w in store.workers()] == [("a",)]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        wait_for(lambda: store.reap_workers(lease=30) == ["dying"])
        assert store.workers() == []
        assert claim(store, now=time.time() + 1) == ["a"]
    finally:
        child.kill()
        child.wait(timeout=10)


def test_racing_claims_in_several_processes_never_exceed_a_fleet_limit(backend: Backend,
                                                                        child_env: dict[str, str]) -> None:
    backend.needs_database("processes racing")
    store = backend.open()
    store.set_queue(Queue("q", concurrency=3))
    for i in range(12):
        queued(store, f"r{i}")
    children = [subprocess.Popen([PYTHON, "-c", _CHILD, str(backend.target), f"c{n}", "3"], env=child_env,
                                 stdout=subprocess.PIPE, text=True) for n in range(4)]
    holds = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        holds.extend(json.loads(out))
    assert len(holds) > 30  # the processes did race
    # Each logged holding lies inside the store's: claimed before it began, released after it ended.
    edges = sorted([(t0, 1) for t0, _ in holds] + [(t1, -1) for _, t1 in holds], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    assert most <= 3


def test_an_sqlite_store_of_schema_1_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    with SqliteStore(path) as s:
        s.create("a", "w", start(), history=[step(1)])
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE work; DROP TABLE queues; DROP TABLE workers; "
                       "ALTER TABLE events DROP COLUMN digest; ALTER TABLE runs DROP COLUMN head; "
                       "ALTER TABLE signals DROP COLUMN digest; PRAGMA user_version = 1;")
    conn.close()
    with pytest.raises(rk.MigrationRequiredError):
        open_store(path)
    with open_store(path, migrate=True) as s:
        assert [e.seq for e in s.events("a")] == [0, 1]
        queued(s, "b")
        assert claim(s) == ["b"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchall() == [(MIGRATED_TO,)]  # 1 -> 2 -> 3 -> 4
    conn.close()



def test_a_worker_whose_session_was_ended_learns_it_at_its_next_heartbeat(pg_url: str) -> None:
    with open_store(pg_url) as store, open_store(pg_url) as other:
        store.register_worker(record("cut-off"))
        assert store.heartbeat("cut-off")
        pid = other._read("SELECT backend FROM replaykit_workers WHERE id = 'cut-off'")[0][0]  # type: ignore[attr-defined]
        other._read("SELECT pg_terminate_backend(%s)", (pid,))  # type: ignore[attr-defined]
        wait_for(lambda: other.reap_workers(lease=30) == ["cut-off"])
        assert not store.heartbeat("cut-off")
        store.register_worker(record("cut-off"))  # registers again, on a new session
        assert store.heartbeat("cut-off") and other.reap_workers(lease=30) == []


def test_a_silent_worker_past_its_lease_is_cut_off_and_its_runs_released(pg_url: str,
                                                                         child_env: dict[str, str]) -> None:
    with open_store(pg_url) as store:
        queued(store, "a")
        child = subprocess.Popen([PYTHON, "-c", _CHILD, pg_url, "register"], env=child_env, stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "holding"
            child.send_signal(signal.SIGSTOP)  # alive, its session open, but silent
            assert store.reap_workers(lease=30) == []
            wait_for(lambda: store.reap_workers(lease=0.2) == ["dying"])  # its session ended, then reaped
            assert claim(store, now=time.time() + 1) == ["a"]
        finally:
            child.kill()
            child.wait(timeout=10)


def test_a_recorded_end_hands_the_run_back_in_the_same_transaction(store: Store) -> None:
    store.set_queue(Queue("q", concurrency=1))
    store.register_worker(record("w1"))
    queued(store, "a")
    queued(store, "b")
    assert claim(store) == ["a"]
    store.record("a", result(1), status=Status.COMPLETED)
    assert [w.runs for w in store.workers()] == [()]  # no separate release needed: the slot is free
    store.unlock("a")
    assert claim(store) == ["b"]


def test_a_child_ending_after_its_parent_does_not_wake_the_parent(store: Store) -> None:
    queued(store, "parent")
    queued(store, "child", parent="parent")
    assert claim(store) == ["parent", "child"] or claim(store) == []
    store.record("parent", result(1), status=Status.CANCELLED)  # the parent-close policy cancels the child
    store.record("child", result(1), status=Status.CANCELLED)
    store.unlock("parent")
    store.unlock("child")
    assert store.next_ready(["q"]) is None  # nothing ready: no claim would ever find anything
