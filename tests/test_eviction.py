"""Runs an engine drives without holding them in memory (evicted beyond ``max_cached_runs``, or
paused while out): what wakes them, and that every handle on them ends.

The tests that take ``any_db`` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any

import pytest

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from conftest import PYTHON
from helpers import driver_turn, journal, read_journal, timers_fired, wait_until


@rk.workflow(name="ev_naps")
def naps(ctx: rk.Context, seconds: float) -> Any:
    yield rk.sleep(seconds)
    return "woke"


def _parked(engine: rk.Engine, workflow_id: str) -> None:
    wait_until(lambda: workflow_id in engine._runs and not engine._runs[workflow_id].executions
               and engine._runs[workflow_id].machine.outstanding, f"{workflow_id} waits")


def _evicted(engine: rk.Engine, workflow_id: str) -> None:
    wait_until(lambda: workflow_id in engine._evicted, f"{workflow_id} is evicted")


def test_an_evicted_runs_timeout_has_one_entry_in_the_heap_however_often_it_is_woken(tmp_path: Any) -> None:
    @rk.workflow(name="ev_many_naps")
    def many_naps(ctx: rk.Context) -> Any:
        for _ in range(20):
            yield rk.sleep(0.02)
        yield rk.sleep(30)
        return "rested"

    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0) as engine:
        engine.start(many_naps, workflow_id="n", timeout=60)
        wait_until(lambda: len(list(engine.store.events("n"))) == 21 and "n" in engine._evicted, "it slept 20 times")
        later = time.time() + 40
        entries = [entry for deadline, _, entry, _ in list(engine._timers._heap) if deadline > later]
    assert len(entries) == 1  # its timeout; before, one more per wake-up, each holding a whole run


def test_a_refused_second_start_of_an_evicted_run_leaves_it_to_its_timer(tmp_path: Any) -> None:
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0) as engine:
        first = engine.start(naps, 0.5, workflow_id="r")
        wait_until(lambda: "r" in engine._evicted, "the run is evicted")
        refused = engine.start(naps, 9.0, workflow_id="r")  # not the same arguments
        with pytest.raises(rk.ReplayKitError, match="9.0"):
            refused.result(timeout=10)
        assert first.result(timeout=10) == "woke"


@rk.activity
def double(x: int) -> int:
    return 2 * x


@rk.workflow(name="ev_naps_then_doubles")
def naps_then_doubles(ctx: rk.Context, seconds: float) -> Any:
    yield rk.sleep(seconds)
    return (yield double(21))


def test_an_evicted_run_paused_and_resumed_from_a_shell_is_driven_to_its_end(
        tmp_path: Any, child_env: dict[str, str]) -> None:
    db = str(tmp_path / "s.db")
    told: list[str] = []

    def cli(*args: str) -> None:
        done = subprocess.run([PYTHON, "-m", "replaykit", *args, db, "r"], env=child_env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    clock = FakeClock(time.time())  # its timer comes due when the test says: after the pause is told
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        engine.on("run_paused", lambda event: told.append(event.workflow_id))
        handle = engine.start(naps_then_doubles, 1.5, workflow_id="r")
        wait_until(lambda: "r" in engine._evicted, "the run is evicted")
        cli("pause")
        wait_until(lambda: told == ["r"], "the pause is told", timeout=20)  # by the poll, without replaying it
        assert "r" not in engine._runs and "r" in engine._evicted  # paused, it stays out of memory
        clock.advance_to(clock.now() + 1.5)  # its timer comes due while it is paused: it stays paused, told once
        timers_fired(engine)
        assert handle.status() is rk.Status.PAUSED and told == ["r"] and "r" not in engine._runs
        cli("resume")
        assert handle.result(timeout=10) == 42


def test_a_cancel_from_another_process_reaches_an_evicted_run_before_its_timer(
        tmp_path: Any, child_env: dict[str, str]) -> None:
    db = str(tmp_path / "s.db")
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02) as engine:
        handle = engine.start(naps, 30.0, workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "the run is evicted")
        subprocess.run([PYTHON, "-c", "import replaykit as rk, sys; rk.cancel(sys.argv[1], 'x', 'from afar')", db],
                       env=child_env, check=True, timeout=60)
        with pytest.raises(rk.WorkflowCancelled, match="from afar"):
            handle.result(timeout=10)


def test_resume_returns_a_handle_that_sees_the_end_of_a_run_paused_in_memory(any_db: str) -> None:
    """Not about deadlines: the handle ``engine.resume`` returned for a run held here never ended."""
    with rk.Engine(any_db, poll_interval=0.02) as engine:
        first = engine.start(naps_then_doubles, 1.0, workflow_id="z")
        _parked(engine, "z")
        engine.pause("z")
        wait_until(lambda: engine._runs["z"].paused, "the run is paused")
        wait_until(lambda: [e.kind for e in engine.store.events("z")] == ["start", "timer"], "its sleep ends")
        time.sleep(0.2)
        assert first.status() is rk.Status.PAUSED  # its next step waits for the resume
        resumed = engine.resume("z")
        assert resumed.result(timeout=10) == 42 and first.result(timeout=10) == 42



def test_terminating_an_evicted_run_tells_hooks_it_was_cancelled(tmp_path: Any) -> None:
    told: list[tuple[str, str]] = []
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0) as engine:
        engine.on("run_cancelled", lambda event: told.append((event.workflow_id, str(event.error))))
        handle = engine.start(naps, 30.0, workflow_id="e")
        wait_until(lambda: "e" in engine._evicted, "the run is evicted")
        engine.terminate("e", "enough")
        with pytest.raises(rk.WorkflowTerminated):
            handle.result(timeout=10)
        wait_until(lambda: told == [("e", "enough")], "the hook is told")  # before: never




def test_a_terminate_from_another_process_ends_the_first_handle_of_an_evicted_run(
        any_db: str, child_env: dict[str, str]) -> None:
    """The lock is free, so the other process ends the run itself: no request is left for the poll."""
    with rk.Engine(any_db, max_cached_runs=0, poll_interval=0.02) as engine:
        handle = engine.start(naps, 30.0, workflow_id="x")
        _evicted(engine, "x")
        subprocess.run([PYTHON, "-c", "import replaykit as rk, sys; rk.terminate(sys.argv[1], 'x', 'afar')", any_db],
                       env=child_env, check=True, timeout=60)
        with pytest.raises(rk.WorkflowTerminated):
            handle.result(timeout=5)  # before: waited until its 30 s sleep came due


@rk.workflow(name="ev_approval_then_rest")
def approval_then_rest(ctx: rk.Context) -> Any:
    index, _ = yield rk.any(rk.wait_signal("go"), rk.sleep(1.0))  # the signal wins: the sleep is cancelled
    yield rk.sleep(60)
    return index


def test_a_cancelled_timer_does_not_wake_an_evicted_run(tmp_path: Any) -> None:
    woken: list[str] = []
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0) as engine:
        engine.on("run_resumed", lambda event: woken.append(event.workflow_id))
        engine.start(naps, 0.9, workflow_id="head")  # an earlier entry: the cancelled one is not on top
        engine.start(approval_then_rest, workflow_id="x")
        time.sleep(0.3)
        engine.signal("x", "go", 1)
        wait_until(lambda: "x" in engine._evicted and len(list(engine.store.events("x"))) == 2, "x rests, evicted")
        time.sleep(1.5)  # past the cancelled sleep's time
    assert woken.count("x") == 0  # before: replayed for nothing when the cancelled sleep's entry came due


@rk.workflow(name="ev_rounds")
def rounds(ctx: rk.Context, left: int) -> Any:
    yield rk.sleep(0.8)
    if left == 0:
        return "done"
    yield rk.continue_as_new(left - 1)


@pytest.mark.parametrize("cap", [None, 0], ids=["in-memory", "evicted"])
def test_a_run_paused_as_it_continues_as_new_is_driven_after_a_resume_from_a_shell(
        tmp_path: Any, child_env: dict[str, str], cap: int | None) -> None:
    db = str(tmp_path / "s.db")

    def cli(*args: str) -> None:
        subprocess.run([PYTHON, "-m", "replaykit", *args, db, "x"], env=child_env, check=True, timeout=60,
                       capture_output=True)

    with rk.Engine(db, max_cached_runs=cap, poll_interval=0.02) as engine:
        handle = engine.start(rounds, 1, workflow_id="x")
        if cap == 0:
            _evicted(engine, "x")
        else:
            _parked(engine, "x")
        first_start = engine.store.info("x").created_at  # type: ignore[union-attr]
        cli("pause")
        if cap is None:  # its sleep ends while it is paused: the step continues it as new, paused
            wait_until(lambda: engine.store.info("x").created_at != first_start,  # type: ignore[union-attr]
                       "the paused step continues it as new")
        else:  # evicted, it stays out while paused: its resume wakes it
            time.sleep(1.0)
        time.sleep(0.2)
        cli("resume")
        assert handle.result(timeout=10) == "done"  # before: running, unlocked, and nobody drove it


def test_pausing_evicted_runs_keeps_them_out_of_memory(tmp_path: Any, child_env: dict[str, str]) -> None:
    db = str(tmp_path / "s.db")
    paused: list[str] = []
    clock = FakeClock(time.time())  # their timers come due when the test says: after the pauses are told
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        engine.on("run_paused", lambda event: paused.append(event.workflow_id))
        handles = [engine.start(naps, 1.5, workflow_id=f"r{i}") for i in range(30)]
        wait_until(lambda: len(engine._evicted) == 30, "all are evicted", timeout=20)
        subprocess.run([PYTHON, "-c", "import replaykit as rk, sys\n"
                        "for i in range(30): rk.pause(sys.argv[1], f'r{i}')", db],
                       env=child_env, check=True, timeout=60)
        wait_until(lambda: sorted(paused) == sorted(f"r{i}" for i in range(30)), "every pause is told, once",
                   timeout=20)
        owners = {engine.store.lock_owner(f"r{i}") for i in range(30)}  # no run lock: only this engine's mark
        assert (len(engine._runs), owners) == (0, {f"pid {os.getpid()} on {os.uname().nodename}, an engine that "
                                                   "keeps it out of memory"})  # before its first form: 30 locked
        clock.advance_to(clock.now() + 1.5)  # their timers come due while they are paused
        timers_fired(engine)
        assert len(engine._runs) == 0 and len(paused) == 30
        subprocess.run([PYTHON, "-c", "import replaykit as rk, sys\n"
                        "for i in range(30): rk.resume(sys.argv[1], f'r{i}')", db],
                       env=child_env, check=True, timeout=60)
        assert [h.result(timeout=20) for h in handles] == ["woke"] * 30


def test_an_ordinary_signal_to_evicted_runs_costs_no_query_per_run(tmp_path: Any, child_env: dict[str, str]) -> None:
    db = str(tmp_path / "s.db")
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02) as engine:
        for i in range(50):
            engine.start(naps, 600.0, workflow_id=f"r{i}")
        wait_until(lambda: len(engine._evicted) == 50, "all are evicted")
        for i in range(50):
            engine.signal(f"r{i}", "stray", i)  # nobody waits for it
        time.sleep(0.3)
        asked = [0]
        next_signal = engine.store.next_signal

        def counted(*args: Any, **kwargs: Any) -> Any:
            asked[0] += 1
            return next_signal(*args, **kwargs)

        engine.store.next_signal = counted  # type: ignore[method-assign]
        subprocess.run([PYTHON, "-c", "import replaykit as rk, sys, time\n"
                        "for i in range(10): rk.send_signal(sys.argv[1], 'r0', 'stray', i); time.sleep(0.05)", db],
                       env=child_env, check=True, timeout=60)  # a change at about every poll
        engine.store.next_signal = next_signal  # type: ignore[method-assign]
        assert len(engine._evicted) == 50
    assert asked[0] == 0  # before: two reads per evicted run with mail, at every poll


@pytest.mark.parametrize("cap", [None, 0], ids=["in-memory", "evicted"])
def test_a_handle_of_a_closed_engine_sees_the_end_another_engine_records(tmp_path: Any, cap: int | None) -> None:
    db = str(tmp_path / "s.db")
    with rk.Engine(db, max_cached_runs=cap) as first:
        handle = first.start(naps, 1.0, workflow_id="x")
        if cap == 0:
            _evicted(first, "x")
        else:
            _parked(first, "x")
    with rk.Engine(db) as second:
        second.recover()
        assert second.handle("x").result(timeout=10) == "woke"
    assert handle.result(timeout=5) == "woke"  # before: waited for ever for the engine that closed


@rk.activity
def slow_round(path: str) -> str:
    journal(path, "began")
    time.sleep(0.6)
    return "round"


@rk.workflow(name="ev_worker_rounds")
def worker_rounds(ctx: rk.Context, path: str, left: int) -> Any:
    yield slow_round(path)
    if left == 0:
        return "done"
    yield rk.continue_as_new(path, left - 1)


def test_a_worker_run_paused_as_it_continues_as_new_goes_on_after_its_resume(tmp_path: Any) -> None:
    """Workers keep no paused run aside: the queue brings it back when it is resumed."""
    db, path = str(tmp_path / "s.db"), str(tmp_path / "journal")
    with rk.Worker(db, workflows=[worker_rounds], heartbeat=0.1) as _, rk.Client(db) as client:
        handle = client.start(worker_rounds, path, 1, workflow_id="w")
        wait_until(lambda: read_journal(path) == ["began"], "its first round runs")
        first_start = client.store.info("w").created_at  # type: ignore[union-attr]
        client.pause("w")
        wait_until(lambda: client.store.info("w").created_at != first_start,  # type: ignore[union-attr]
                   "the paused step continues it as new")
        time.sleep(0.3)
        assert handle.status() is rk.Status.PAUSED and read_journal(path) == ["began"]
        client.resume("w")
        assert handle.result(timeout=20) == "done" and read_journal(path) == ["began", "began"]


def test_another_engine_leaves_an_evicted_run_to_the_engine_that_keeps_it(any_db: str,
                                                                         child_env: dict[str, str]) -> None:
    told_a: list[str] = []
    told_b: list[str] = []

    def cli(verb: str) -> None:
        subprocess.run([PYTHON, "-m", "replaykit", verb, any_db, "x"], env=child_env, check=True, timeout=60,
                       capture_output=True)

    with rk.Engine(any_db, max_cached_runs=0, poll_interval=0.02) as a, rk.Engine(any_db, poll_interval=0.02) as b:
        a.on("*", lambda event: told_a.append(event.kind))
        b.on("*", lambda event: told_b.append(event.kind))
        first = a.start(naps, 4.0, workflow_id="x")
        _evicted(a, "x")
        [follower] = b.recover()  # B tries the run's lock, is refused, and follows it
        driver_turn(b)  # after B's try
        assert "x" not in b._runs  # before: B took the run over, and A's hooks never heard of it again
        assert "keeps it out of memory" in (b.store.lock_owner("x") or "")
        cli("pause")
        wait_until(lambda: "run_paused" in told_a, "A is told the pause")
        cli("resume")
        assert first.result(timeout=10) == "woke" and follower.result(timeout=10) == "woke"
    assert told_a == ["run_created", "run_started", "run_suspended", "run_paused", "run_resumed", "run_suspended",
                      "run_resumed", "step_completed", "run_completed"]  # evicted again after its resume
    assert told_b == []


@rk.workflow(name="ev_naps_twice")
def naps_twice(ctx: rk.Context, seconds: float) -> Any:
    yield rk.sleep(0.05)
    yield rk.sleep(seconds)
    return "woke"


def test_terminating_a_paused_evicted_run_tells_it_once_though_the_poll_wakes_it_meanwhile(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import replaykit.terminating as terminating

    real = terminating.request

    def request_then_a_thread_switch(*args: Any) -> bool:
        ended = real(*args)
        time.sleep(0.4)  # the caller is preempted after the commit: the driver polls meanwhile
        return ended

    monkeypatch.setattr(terminating, "request", request_then_a_thread_switch)
    told = _told_as_a_paused_kept_run_is_terminated(str(tmp_path / "s.db"))
    assert told.count("run_paused") == 1 and told.count("run_cancelled") == 1  # before: never told cancelled


def _told_as_a_paused_kept_run_is_terminated(db: str) -> list[str]:
    """What an engine's hooks are told as it terminates a run it keeps out of memory, paused."""
    told: list[str] = []
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02) as engine:
        engine.on("*", lambda event: told.append(event.kind))
        handle = engine.start(naps_twice, 60.0, workflow_id="x")
        wait_until(lambda: "x" in engine._evicted and len(list(engine.store.events("x"))) == 2, "x rests, evicted")
        rk.pause(engine.store, "x")
        wait_until(lambda: "x" in engine._paused_here, "kept paused, out of memory")
        engine.terminate("x", "by hand")
        with pytest.raises(rk.WorkflowTerminated):
            handle.result(timeout=10)
        time.sleep(0.4)  # a second tell, if any, comes meanwhile
        driver_turn(engine)
    return told


def test_terminating_a_paused_evicted_run_whose_lock_is_busy_tells_it_once(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's lock is busy whenever engine.terminate looks (the poll is taking it up): the call leaves a
    request, the poll's take-up ends the paused kept run and tells it (``_ended_if_asked``), then the
    call, seeing it ended, told it again (a CI run on Python 3.13 caught the interleaving)."""
    import replaykit.terminating as terminating

    real, busy, caller = terminating._end_if_free, [], threading.current_thread()

    def busy_for_the_caller(*args: Any) -> bool:
        if threading.current_thread() is caller:
            busy.append(args)
            return False  # as if the driver held the run's lock each time the call looks
        return real(*args)

    monkeypatch.setattr(terminating, "_end_if_free", busy_for_the_caller)
    told = _told_as_a_paused_kept_run_is_terminated(str(tmp_path / "s.db"))
    assert busy, "the lock was never busy: the test did not test anything"
    assert told.count("run_cancelled") == 1, told


@rk.workflow(name="ev_naps_or_not")
def naps_or_not(ctx: rk.Context, seconds: float) -> Any:
    try:
        yield rk.sleep(seconds)
    except rk.Cancelled:
        return "cancelled"
    return "woke"


@pytest.mark.parametrize("how", ["cancel", "pause_then_resume", "start_again"])
def test_an_evicted_run_reopened_by_a_control_or_a_start_is_told_started_once(tmp_path: Any, how: str) -> None:
    told: list[str] = []
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0, poll_interval=0.02) as engine:
        engine.on("*", lambda event: told.append(event.kind))
        handle = engine.start(naps_or_not, 2.0, workflow_id="x")
        _evicted(engine, "x")
        if how == "cancel":
            engine.cancel("x")
        elif how == "pause_then_resume":
            engine.pause("x")
            wait_until(lambda: "x" in engine._paused_here, "kept paused out of memory")
            engine.resume("x")
        else:
            engine.start(naps_or_not, 2.0, workflow_id="x")
        handle.result(timeout=10)
        time.sleep(0.4)
    assert told.count("run_started") == 1  # before: twice (a history of its start alone read as a fresh run)
    if how == "pause_then_resume":
        assert told[told.index("run_paused") + 1] == "run_resumed"


@rk.workflow(name="ev_chores")
def chores(ctx: rk.Context, seconds: float) -> Any:
    yield rk.side_effect(lambda: 1)
    yield rk.sleep(seconds)
    return "done"


def test_recover_takes_up_a_run_restarted_after_it_was_terminated_elsewhere(
        any_db: str, child_env: dict[str, str]) -> None:
    with rk.Engine(any_db, max_cached_runs=0, poll_interval=0.02) as engine:
        first = engine.start(chores, 30.0, workflow_id="x")
        _evicted(engine, "x")
        subprocess.run([PYTHON, "-m", "replaykit", "terminate", any_db, "x"], env=child_env, check=True, timeout=60,
                       capture_output=True)
        with pytest.raises(rk.WorkflowTerminated):
            first.result(timeout=5)
        rk.restart(any_db, "x", workflows=[chores])  # "an engine that recovers it drives it"
        assert [h.workflow_id for h in engine.recover()] == ["x"]  # before: skipped, as if still evicted here


@rk.workflow(name="ev_catches_its_timeout")
def catches_its_timeout(ctx: rk.Context) -> Any:
    try:
        yield rk.sleep(30)
    except rk.TimedOut:
        pass
    yield rk.sleep(30)
    return "done"


def test_a_run_that_caught_its_timeout_stays_out_of_memory_when_paused_while_evicted(tmp_path: Any) -> None:
    """Nothing is left to time out: the pause keeps it out, and hooks hear run_paused alone."""
    told: list[str] = []
    clock = FakeClock(time.time())
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        engine.on("*", lambda e: told.append(e.kind) if e.kind.startswith("run_") else None)
        engine.start(catches_its_timeout, workflow_id="p", timeout=1.0)
        wait_until(lambda: "p" in engine._evicted, "evicted on its first sleep")
        clock.advance_to(clock.now() + 1.5)  # its timeout: woken, caught, asleep again, evicted again
        timers_fired(engine)
        wait_until(lambda: [e.kind for e in engine.store.events("p")] == ["start", "cancel"], "the timeout")
        wait_until(lambda: "p" in engine._evicted, "evicted on its second sleep")
        engine.pause("p")  # (what came before it may still be told after it: hooks wait for the commit)
        wait_until(lambda: "run_paused" in told, "the pause is told")
        timers_fired(engine)
        assert told[told.index("run_paused"):] == ["run_paused"] and "p" not in engine._runs


def test_a_paused_run_held_in_memory_times_out_at_its_deadline(tmp_path: Any) -> None:
    told: list[str] = []
    clock = FakeClock(time.time())
    with rk.Engine(str(tmp_path / "s.db"), poll_interval=0.02, clock=clock) as engine:
        engine.on("*", lambda e: told.append(e.kind) if e.kind.startswith("run_") else None)
        handle = engine.start(naps, 30.0, workflow_id="p", timeout=2.0)
        wait_until(lambda: "p" in engine._runs, "the run waits")
        engine.pause("p")
        wait_until(lambda: "run_paused" in told, "the pause is told")
        clock.advance_to(clock.now() + 2.5)
        timers_fired(engine)
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=20)
        wait_until(lambda: "run_timed_out" in told, "the end is told")
        assert told == ["run_created", "run_started", "run_suspended", "run_paused", "run_timed_out"]
        assert "p" not in engine._runs


def test_a_paused_evicted_run_times_out_when_it_is_resumed(tmp_path: Any) -> None:
    """The documented limit (docs/durability.md, "Memory"): out of memory, its deadline passes
    unseen while it is paused; its resume delivers the timeout."""
    clock = FakeClock(time.time())
    with rk.Engine(str(tmp_path / "s.db"), max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        paused: list[str] = []
        engine.on("run_paused", lambda e: paused.append(e.workflow_id))
        handle = engine.start(naps, 30.0, workflow_id="p", timeout=2.0)
        wait_until(lambda: "p" in engine._evicted, "the run is evicted")
        engine.pause("p")
        wait_until(lambda: paused == ["p"], "the pause is told")
        clock.advance_to(clock.now() + 2.5)
        timers_fired(engine)
        assert handle.status() is rk.Status.PAUSED and "p" not in engine._runs
        engine.resume("p")
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=20)


def test_an_engine_keeps_a_thousand_runs_in_memory_by_default_and_keeps_the_rest_its_own(tmp_path: Any) -> None:
    db = str(tmp_path / "s.db")
    with rk.Engine(db) as engine, rk.Engine(db) as other:
        for i in range(1005):
            engine.start(naps, 3600.0, workflow_id=f"r{i:04}")
        wait_until(lambda: len(engine._evicted) == 5 and len(engine._runs) == 1000, "five runs beyond 1,000 evicted")
        [kept] = list(engine._evicted)[:1]
        assert engine.store.lock_owner(kept) == (f"pid {os.getpid()} on {os.uname().nodename}, an engine that keeps "
                                                 "it out of memory")
        with pytest.raises(rk.WorkflowLockedError, match="keeps it out of memory"):
            other.start(naps, 3600.0, workflow_id=kept).result(timeout=10)
    with rk.Engine(db, max_cached_runs=None) as engine:  # the first engine closed: its runs are anyone's
        assert len(engine.recover()) == 1005
        wait_until(lambda: len(engine._runs) == 1005 and not engine._evicted, "all 1,005 kept in memory")
