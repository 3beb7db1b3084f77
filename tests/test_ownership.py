"""Ownership of a run is given up only once everything it covers is committed.

With group commit, a run's last steps are committed at the end of the driver's turn.
Were its lock released earlier, another process could take the run over, replay a
history without those steps, and run a completed activity again. These tests run
several real engine processes on one SQLite file and count activity executions
from a ledger that every execution appends to (``tests/engine_child.py``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from conftest import PYTHON, ROOT
from helpers import read_journal, timers_fired

CHILD = str(ROOT / "tests" / "engine_child.py")


def executions(ledger: str) -> dict[tuple[str, int, int], list[int]]:
    """(workflow id, step, attempt) -> the pids that executed it, in ledger order."""
    runs: dict[tuple[str, int, int], list[int]] = defaultdict(list)
    for line in read_journal(ledger):
        workflow_id, step, attempt, pid = line.split()
        runs[(workflow_id, int(step), int(attempt))].append(int(pid))
    return runs


def assert_all_completed(db: str, count: int) -> None:
    """Every run ``w<k>`` completed with the result of ``engine_child.chain``: k + 0 + 1 + 4."""
    with rk.SqliteStore(db) as store:
        for k in range(count):
            info, last = store.info(f"w{k}"), store.last_event(f"w{k}")
            assert info is not None and info.status is rk.Status.COMPLETED, (k, info)
            assert last is not None and last.value() == k + 5, (k, last)


def test_a_finished_run_is_not_taken_over_by_a_process_recovering_in_a_loop(
        tmp_path: Path, db: str, child_env: dict[str, str]) -> None:
    ledger, stop = str(tmp_path / "ledger"), tmp_path / "stop"
    rk.SqliteStore(db).close()  # both processes open an existing store
    recoverer = subprocess.Popen([PYTHON, CHILD, "recover", db, ledger, str(stop)], env=child_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        count = 300
        driver = subprocess.run([PYTHON, CHILD, "drive", db, ledger, str(count)], env=child_env,
                                capture_output=True, text=True, timeout=60)
    finally:
        stop.touch()
        out, err = recoverer.communicate(timeout=30)
    runs = executions(ledger)
    twice = {key: pids for key, pids in runs.items() if len(pids) > 1}
    assert not twice, f"completed activities ran again (no process was killed): {sorted(twice.items())[:5]}"
    assert driver.returncode == 0, driver.stderr
    assert recoverer.returncode == 0, err
    assert len(runs) == count * 3
    assert_all_completed(db, count)


def test_engines_killed_at_random_never_rerun_an_activity_of_a_live_process(
        tmp_path: Path, db: str, child_env: dict[str, str]) -> None:
    """Several engines share one file and are SIGKILLed and restarted at random.

    An execution of (workflow, step, attempt) may repeat only if every earlier execution
    of it happened in a process that was later SIGKILLed (its result may not have been
    committed): a repeat after a process that lived on is a completed activity run twice.
    """
    ledger, count, slots = str(tmp_path / "ledger"), 60, 4
    rng = random.Random(8)
    rk.SqliteStore(db).close()
    spawned: list[subprocess.Popen[str]] = []

    def spawn() -> subprocess.Popen[str]:
        proc = subprocess.Popen([PYTHON, CHILD, "worker", db, ledger, str(count), str(rng.randrange(10**6))],
                                env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        spawned.append(proc)
        return proc

    workers = [spawn() for _ in range(slots)]
    killed: set[int] = set()
    try:
        for _ in range(12):
            time.sleep(rng.uniform(0.1, 0.4))
            slot = rng.randrange(slots)
            if workers[slot].poll() is None:
                workers[slot].send_signal(signal.SIGKILL)
                workers[slot].wait(timeout=10)
                killed.add(workers[slot].pid)
            workers[slot] = spawn()
        for proc in workers:
            _, err = proc.communicate(timeout=45)
            assert proc.returncode == 0, err
    finally:
        for proc in spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len({p.pid for p in spawned}) == len(spawned)  # no pid reused: the ledger's pids are unambiguous
    assert killed, "the test killed nobody"

    violations = []
    for key, pids in executions(ledger).items():
        for i in range(1, len(pids)):
            survivors = [pid for pid in pids[:i] if pid not in killed]
            if survivors:
                violations.append((key, pids, survivors))
    assert not violations, f"activities ran again after a process that lived on: {violations[:5]}"
    assert_all_completed(db, count)


@rk.workflow(name="naps_then_works")
def naps_then_works(ctx: rk.Context) -> Any:
    yield rk.sleep(0.5)
    return (yield double(21))


@rk.activity
def double(x: int) -> int:
    return 2 * x


def test_a_handle_follows_its_run_when_another_engine_takes_it_over_while_evicted(tmp_path: Path) -> None:
    """Engine A evicts a run parked on a timer (giving its lock up); engine B recovers it. When A's timer
    is due, A's handle must follow the run to its end, not fail with WorkflowLockedError."""
    db = str(tmp_path / "s.db")
    with rk.Engine(db, max_cached_runs=0) as a, rk.Engine(db) as b:
        handle = a.start(naps_then_works, workflow_id="n1")
        deadline = time.monotonic() + 10
        while "n1" not in a._evicted:
            assert time.monotonic() < deadline, "the run was never evicted"
            time.sleep(0.01)
        taken = [h for h in b.recover() if h.workflow_id == "n1"]
        assert taken and taken[0].result(timeout=10) == 42
        assert handle.result(timeout=10) == 42


def _evicted(engine: rk.Engine, workflow_id: str) -> None:
    deadline = time.monotonic() + 10
    while workflow_id not in engine._evicted:
        assert time.monotonic() < deadline, "the run was never evicted"
        time.sleep(0.01)


def test_a_cancel_reaches_an_evicted_run(tmp_path: Path) -> None:
    began = time.time()
    clock = FakeClock(began)  # its timer never comes due: only the cancel can end it
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0, clock=clock) as engine:
        handle = engine.start(naps_then_works, workflow_id="c1")
        _evicted(engine, "c1")
        engine.cancel("c1", "stop it")
        with pytest.raises(rk.WorkflowCancelled, match="stop it"):
            engine.handle("c1").result(timeout=10)  # a handle that lets no time pass while it waits
        with pytest.raises(rk.WorkflowCancelled, match="stop it"):
            handle.result(timeout=10)
        assert handle.status() is rk.Status.CANCELLED and clock.now() == began


def test_a_pause_while_evicted_leaves_the_run_paused_and_resume_finishes_it(tmp_path: Path) -> None:
    import threading

    clock = FakeClock(time.time())  # its timer comes due when the test says: after the pause is told
    paused = threading.Event()
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0, clock=clock) as engine:
        engine.on("run_paused", lambda event: paused.set())
        handle = engine.start(naps_then_works, workflow_id="p1")
        _evicted(engine, "p1")
        engine.pause("p1")
        assert paused.wait(timeout=20)
        clock.advance_to(clock.now() + 0.5)
        timers_fired(engine)
        with pytest.raises(rk.ResultTimeoutError):
            handle.result(timeout=0.5)  # past the timer: still paused, the handle still waiting
        assert handle.status() is rk.Status.PAUSED
        resumed = engine.resume("p1")
        assert resumed.result(timeout=10) == 42
        assert handle.result(timeout=10) == 42


@rk.workflow(name="waits_for_go")
def waits_for_go(ctx: rk.Context) -> Any:
    return (yield rk.wait_signal("go"))


def test_a_started_run_taken_by_another_engines_recovery_is_followed_not_refused(tmp_path: Path) -> None:
    """A web process starts runs while a worker recovers in a loop: the worker may take a run first;
    the starter's handle then follows it to its end (before: WorkflowLockedError)."""
    import threading

    db = str(tmp_path / "s.db")
    stop = threading.Event()
    with rk.Engine(db) as worker, rk.Engine(db) as web:
        def recover_forever() -> None:
            while not stop.is_set():
                worker.recover()

        thread = threading.Thread(target=recover_forever)
        thread.start()
        try:
            handles = [web.start(naps_briefly, i, workflow_id=f"r{i}") for i in range(150)]
            assert [h.result(timeout=30) for h in handles] == [2 * i for i in range(150)]
        finally:
            stop.set()
            thread.join()


@rk.workflow(name="naps_briefly")
def naps_briefly(ctx: rk.Context, i: int) -> Any:
    return (yield double(i))


def test_a_run_paused_right_after_its_start_is_waited_for_not_refused(tmp_path: Path) -> None:
    with rk.Engine(str(tmp_path / "s.db")) as engine:
        handle = engine.start(waits_for_go, workflow_id="p")
        engine.pause("p")
        with pytest.raises(rk.ResultTimeoutError):
            handle.result(timeout=0.3)
        engine.resume("p")
        engine.signal("p", "go", 5)
        assert handle.result(timeout=10) == 5


def test_a_handle_that_follows_the_store_polls_it_at_its_interval_not_in_a_spin() -> None:
    from replaykit.history import OK, START, Event

    class CountingStore(rk.MemoryStore):
        reads = 0

        def info(self, workflow_id: str) -> rk.WorkflowInfo | None:
            CountingStore.reads += 1
            return super().info(workflow_id)

    store = CountingStore()
    store.create("x", "w", Event(0, 0, START, "w", 0.0, OK, "json", "{}"))
    handle = rk.WorkflowHandle("x", store, 0.05, driven_here=True)
    with pytest.raises(rk.ResultTimeoutError):
        handle.result(timeout=0.01)  # a waiter was there before ...
    handle._follow()  # ... the engine found another process driving the run
    with pytest.raises(rk.ResultTimeoutError):
        handle.result(timeout=0.5)
    assert CountingStore.reads < 100  # about one read per 0.05 s poll, not a busy loop


SPREAD = """
import collections, os, sys
from replaykit.store import SqliteStore
store = SqliteStore(sys.argv[1])
assert all(store.try_lock(f"run-{i}") for i in range(1600))
folder = sys.argv[1] + "-locks.d"  # only its files: reading the store takes SQLite's own locks too
shards = {str(os.stat(os.path.join(folder, name)).st_ino) for name in os.listdir(folder)}
per_file = collections.Counter(inode for line in open("/proc/locks") for inode in [line.split()[5].split(":")[-1]]
                               if line.split()[1] == "POSIX" and line.split()[4] == str(os.getpid())
                               and inode in shards)
print(len(per_file), max(per_file.values()))
"""


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="reads Linux's /proc/locks")
def test_the_locks_of_many_runs_are_spread_over_sixteen_files(tmp_path: Path, child_env: dict[str, str]) -> None:
    # The kernel walks a file's whole list of locks on each lock and unlock: with every run's lock in
    # one file, an engine with 10,000 runs parked in memory paid 470 µs a lock and unlock.
    done = subprocess.run([PYTHON, "-c", SPREAD, str(tmp_path / "store.db")], env=child_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files, most = map(int, done.stdout.split())
    assert files == 16 and most < 200, done.stdout  # about 100 each; all 1,600 in one file before
    assert sorted(p.name for p in (tmp_path / "store.db-locks.d").iterdir()) == [f"{i:x}" for i in range(16)]


# Eviction's defects, fixed: each test below failed before (an xfail marker pinned it).


@rk.workflow(name="sleeps_long")
def sleeps_long(ctx: rk.Context, seconds: float) -> Any:
    yield rk.sleep(seconds)
    return "woke"


def test_an_evicted_run_times_out_at_its_deadline_not_when_its_timer_wakes_it(tmp_path: Path) -> None:
    """Its timeout's entry names it by id and wakes it (before: the run ran on until its sleep, 15 s
    here, came due)."""
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0) as engine:
        handle = engine.start(sleeps_long, 15.0, workflow_id="t1", timeout=0.5)
        _evicted(engine, "t1")
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=5)


def test_a_run_whose_timeout_passed_while_no_process_drove_it_times_out_when_taken_up(tmp_path: Path) -> None:
    """Its sleep came due after its deadline: the sleep does not move it on (before: the replay started
    the overdue sleep first, and the run completed past its timeout)."""
    db = str(tmp_path / "s.db")
    with rk.Engine(db, max_cached_runs=0) as first:
        first.start(sleeps_long, 0.8, workflow_id="t2", timeout=0.4)
        _evicted(first, "t2")
    time.sleep(1.0)  # both the timeout and the sleep are past when the next engine takes the run up
    with rk.Engine(db) as second, pytest.raises(rk.WorkflowTimedOut):
        second.start(sleeps_long, 0.8, workflow_id="t2", timeout=0.4).result(timeout=10)  # a rerun takes it up


@rk.activity
def charge(label: str) -> str:
    return label


@rk.workflow(name="naps_then_charges")
def naps_then_charges(ctx: rk.Context) -> Any:
    yield rk.sleep(3600)  # ended by its parent's cancel long before
    return (yield charge(ctx.workflow_id))


@rk.workflow(name="parent_of_napper")
def parent_of_napper(ctx: rk.Context) -> Any:
    return (yield rk.child_workflow(naps_then_charges, workflow_id="napper"))


def test_cancelling_a_parent_cancels_its_evicted_child_at_once(tmp_path: Path) -> None:
    """The cancel wakes the child (before: it stayed running and ran its next step when its timer came due)."""
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0) as engine:
        parent = engine.start(parent_of_napper, workflow_id="parent")
        _evicted(engine, "napper")
        engine.cancel("parent")
        with pytest.raises(rk.WorkflowCancelled):
            parent.result(timeout=10)
        with pytest.raises(rk.WorkflowCancelled):
            engine.handle("napper").result(timeout=10)  # before its timer: the cancel itself ended it
        assert [e.name for e in engine.store.events("napper") if e.kind == "activity"] == []


def test_starting_an_evicted_run_again_drives_it_and_its_first_handle_follows(tmp_path: Path) -> None:
    """The run is taken out of the evicted ones once it is replayed (before: the first handle waited for ever)."""
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0) as engine:
        first = engine.start(sleeps_long, 0.5, workflow_id="again")
        _evicted(engine, "again")
        second = engine.start(sleeps_long, 0.5, workflow_id="again")
        assert second.result(timeout=10) == "woke"
        assert first.result(timeout=3) == "woke"
