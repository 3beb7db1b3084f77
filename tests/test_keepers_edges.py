"""Kept runs at the edges: a wake that finds the lock busy or the store failing, a run another live engine
took up, a failed start retried in the same turn, evicted children (each test failed at aa2a1e8)."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from conftest import PYTHON
from helpers import driver_turn, timers_fired, wait_until
from test_keepers import _HOLDER, naps


def _hold(db: str, env: dict[str, str]) -> subprocess.Popen[str]:
    holder = subprocess.Popen([PYTHON, "-c", _HOLDER, db], env=env, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def _count_tries(engine: rk.Engine) -> list[int]:
    """Count the engine's tries of a run's lock from now on: ``[n]``."""
    tries = [0]
    try_lock = engine.store.try_lock

    def counted(workflow_id: str, keeper: str | None = None) -> bool:
        tries[0] += 1
        return try_lock(workflow_id, keeper)

    engine.store.try_lock = counted  # type: ignore[method-assign]
    return tries


def _retry_timers(engine: rk.Engine) -> list[threading.Timer]:
    return [t for t in threading.enumerate()
            if isinstance(t, threading.Timer) and t.is_alive() and t.function == engine._post]  # type: ignore[attr-defined]


def test_wake_retries_do_not_multiply_while_the_lock_is_held_elsewhere(tmp_path: Any,
                                                                        child_env: dict[str, str]) -> None:
    """A kept run whose lock is held elsewhere, with a cancel request in its inbox: every poll that sees
    the store changed calls _wake again, and every failed _wake starts a retry chain of its own that
    lives until the lock is free. One retry chain per run (at aa2a1e8: one more per poll)."""
    db = str(tmp_path / "s.db")
    clock = FakeClock(time.time())
    polls = [0]
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.5, clock=clock) as engine:
        poll = engine._poll_store

        def counted() -> None:
            polls[0] += 1
            poll()

        engine._poll_store = counted  # type: ignore[method-assign]
        engine.start(naps, [3600.0], workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        holder = _hold(db, child_env)  # e.g. a prober stalled in try_lock, or an engine that took x
        try:
            rk.cancel(db, "x", "stop")  # as from another process: the poll wakes x for it
            for i in range(6):  # other activity on the store: each write is a poll that sees a change
                seen = polls[0]
                rk.send_signal(db, "x", "noise", i)
                wait_until(lambda seen=seen: polls[0] > seen, "the engine polls the change")  # type: ignore[misc]
            chains = len(_retry_timers(engine))
        finally:
            holder.kill()
            holder.wait(timeout=30)
        # (not handle.result(): a caller waiting on a FakeClock engine lets it skip to x's timer)
        wait_until(lambda: engine.store.info("x").status is rk.Status.CANCELLED,  # type: ignore[union-attr]
                   "x is taken back once the lock is free, and cancelled")
    assert chains <= 1, f"{chains} retry chains for one run"


def test_a_store_error_while_waking_a_kept_run_does_not_strand_it(any_db: str) -> None:
    """_wake pops the run from _evicted and, if _lock raises a StoreError (a PostgreSQL blip, an I/O error
    reading the mark), fails its handle and forgets it. Its row still names this live engine as keeper, so
    every other engine refuses it, and this one never wakes it again: nobody drives it until the engine
    closes (at aa2a1e8). Now the run is tried again."""
    clock = FakeClock(time.time())
    with rk.Engine(any_db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        engine.start(naps, [60.0, 60.0], workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        try_lock = engine.store.try_lock
        failed = []

        def flaky(workflow_id: str, keeper: str | None = None) -> bool:
            if not failed:
                failed.append(workflow_id)
                raise rk.StoreError("transient: connection reset")
            return try_lock(workflow_id, keeper)

        engine.store.try_lock = flaky  # type: ignore[method-assign]
        clock.advance_to(clock.now() + 61)
        timers_fired(engine)
        assert failed == ["x"]
        with rk.Engine(any_db, poll_interval=0.02, clock=clock) as other:
            others = other.recover()
            driver_turn(other)
            clock.advance_to(clock.now() + 61)
            timers_fired(engine)
            timers_fired(other)
            seen: list[bool] = []
            engine._post(lambda: seen.append("x" in engine._runs or "x" in engine._evicted))  # read on its driver
            driver_turn(engine)
            status = engine.store.info("x").status  # type: ignore[union-attr]
            assert seen == [True] or "x" in other._runs or status is rk.Status.COMPLETED, (
                f"x ({status.value}) is driven by nobody (other.recover() gave {[h.workflow_id for h in others]})")


def test_a_failed_start_retried_in_the_same_turn_does_not_leak_the_runs_lock(tmp_path: Any) -> None:
    """A start whose create fails (disk full, I/O error) after its lock was taken leaves the id in
    _releasing; a second start of that id in the same driver turn takes the _releasing shortcut, which
    now writes (store.keep(id, None)) before it says "locked": the run does not exist, so keep raises
    WorkflowNotFoundError (not a StoreError) after the id left _releasing, and the lock is never given
    back (at aa2a1e8; before it, the second start simply succeeded). Now a mark is cleared only for a run
    this engine marked, and the second and third starts run."""
    db = str(tmp_path / "s.db")
    with rk.Engine(db) as engine:
        create = engine.store.create
        calls = []

        def failing_once(*args: Any, **kwargs: Any) -> bool:
            calls.append(args[0])
            if len(calls) == 1:
                raise rk.StoreError("transient: disk I/O error")
            return create(*args, **kwargs)

        engine.store.create = failing_once  # type: ignore[method-assign]
        gate = threading.Event()
        engine._post(lambda: gate.wait(20))  # both starts' jobs are taken in one turn
        outcomes: list[Any] = []

        def start() -> None:
            try:
                outcomes.append(engine.start(naps, [0.0], workflow_id="x").result(timeout=10))
            except Exception as exc:  # noqa: BLE001
                outcomes.append(exc)

        threads = [threading.Thread(target=start) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: engine._inbox.qsize() == 2, "both starts are posted")
        gate.set()
        for t in threads:
            t.join(30)
        assert sum(isinstance(o, rk.StoreError) for o in outcomes) == 1  # the injected failure
        try:
            third = engine.start(naps, [0.0], workflow_id="x").result(timeout=10)
        except rk.ReplayKitError as exc:
            third = exc
    assert [o for o in outcomes if not isinstance(o, rk.StoreError)] + [third] == ["woke", "woke"], outcomes + [third]


@rk.workflow(name="kr_two_then_long")
def two_then_long(ctx: rk.Context) -> Any:
    yield rk.all(rk.sleep(10), rk.sleep(20))
    yield rk.sleep(3600)
    return "woke"


def test_a_kept_run_is_woken_once_per_wake_not_once_per_retry_chain(tmp_path: Any,
                                                                      child_env: dict[str, str]) -> None:
    """Two of an evicted run's timers come due while its lock is held elsewhere: two _wake calls, two retry
    chains. Once the lock is free the first chain wakes the run, which parks on its next timer and is
    evicted again; the second chain, still pending, finds it in _evicted and wakes it again: a replay for
    nothing, and hooks told run_resumed twice for one wake (once more per extra chain)."""
    db = str(tmp_path / "s.db")
    clock = FakeClock(time.time())
    told: list[str] = []
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.4, clock=clock) as engine:
        engine.on("run_resumed", lambda event: told.append(event.workflow_id))
        engine.start(two_then_long, workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        tries = _count_tries(engine)
        holder = _hold(db, child_env)
        try:
            clock.advance_to(clock.now() + 11)
            timers_fired(engine)  # the first timer: _wake, refused, a retry chain
            wait_until(lambda: tries[0] >= 2, "the first chain retried")
            time.sleep(0.2)  # setup, not an assertion: the second chain fires half an interval after the first
            clock.advance_to(clock.now() + 10)
            timers_fired(engine)  # the second timer: _wake again, refused, a second chain
        finally:
            holder.kill()
            holder.wait(timeout=30)
        wait_until(lambda: len(list(engine.store.events("x"))) >= 3 and "x" in engine._evicted,
                   "x is taken back, sleeps its hour, evicted again")
        wait_until(lambda: not _retry_timers(engine), "every retry chain has fired")
        driver_turn(engine)
    assert told == ["x"], told


@rk.workflow(name="kr_fan_out")
def fan_out(ctx: rk.Context, n: int) -> Any:
    return (yield rk.all(*[rk.child_workflow(naps, [3600.0], workflow_id=f"{ctx.workflow_id}-c{i}")
                           for i in range(n)]))


def test_evicted_children_are_not_read_back_at_every_poll(tmp_path: Any) -> None:
    """Now that eviction is on by default (1000), a parent with more children than that in one engine has
    most of them evicted (they wait on timers); _poll_store calls _child_ended for every child not in
    _runs, and each reads the child's row (store.info), at every poll that sees the store changed: with
    max_cached_runs=None none of those reads happened. Shown here at max_cached_runs=2 with 30 children:
    one poll read ~28 rows at aa2a1e8. An evicted child ends here, when it is woken: it is not read at
    every poll."""
    db = str(tmp_path / "s.db")
    clock = FakeClock(time.time())
    n = 30
    with rk.Engine(db, max_cached_runs=2, poll_interval=0.02, clock=clock) as engine:
        engine.start(fan_out, n, workflow_id="p")
        wait_until(lambda: len(engine._evicted) >= n - 2, "the children are evicted")
        info = engine.store.info
        reads: list[str] = []
        poll = engine._poll_store
        polled = threading.Event()

        def counting_info(workflow_id: str) -> Any:
            reads.append(workflow_id)
            return info(workflow_id)

        def one_poll() -> None:
            engine.store.info = counting_info  # type: ignore[method-assign]
            try:
                poll()
            finally:
                engine.store.info = info  # type: ignore[method-assign]
                polled.set()

        engine._poll_store = one_poll  # type: ignore[method-assign]
        rk.send_signal(db, "p", "unrelated")  # a change the next poll sees
        assert polled.wait(20)
        parent_in_memory = "p" in engine._runs
    assert parent_in_memory
    assert len(reads) <= 2, f"one poll read {len(reads)} rows ({len(set(reads))} runs: {sorted(set(reads))[:4]}...)"


def test_a_run_now_kept_by_another_live_engine_is_not_probed_for_ever(tmp_path: Any) -> None:
    """Engine A keeps x evicted, then loses its keeper lock (simulated with let_go: on PostgreSQL, its lock
    session ended; or a batch lost after the mark; or _keep_paused's _set_aside failing). Engine B's
    recover() rightly takes x, drives it, and evicts it under its own mark. When x's timer comes due in A,
    _wake is refused (B is a live keeper) and retries at every poll interval for as long as B keeps x:
    a lock take, a mark read (and on PostgreSQL a stamp UPDATE) and a release per interval, for ever, and
    each try can make B's own wake find the lock busy (at aa2a1e8). A now sees the mark of another live
    keeper and gives the run up (its handle follows the store)."""
    db = str(tmp_path / "s.db")
    clock_a, clock_b = FakeClock(time.time()), FakeClock(time.time())
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock_a) as a:
        a.start(naps, [60.0, 3600.0], workflow_id="x")
        wait_until(lambda: "x" in a._evicted, "x is evicted by A")
        a.store.let_go(a._keeper)  # A's keeper lock is lost
        with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock_b) as b:
            b.recover()
            wait_until(lambda: "x" in b._evicted, "x is taken up and evicted by B")
            tries = _count_tries(a)
            clock_a.advance_to(clock_a.now() + 61)
            timers_fired(a)
            wait_until(lambda: tries[0] >= 1, "A tries to wake x")
            seen: list[bool] = []
            a._post(lambda: seen.append("x" in a._evicted or bool(_retry_timers(a))))  # read on A's driver
            driver_turn(a)
            assert seen == [False], f"A still probes x ({tries[0]} tries so far), which B keeps"


def test_an_engine_whose_store_cannot_let_its_keeper_go_still_closes(tmp_path: Any, caplog: Any) -> None:
    """Engine close lets its keeper go; if the store fails at that (a lost PostgreSQL session answers
    late), close goes on, says so, and closes the store, whose close gives the lock back anyway."""
    engine = rk.Engine(str(tmp_path / "s.db"))
    handle = engine.start(naps, [0.0], workflow_id="x")
    assert handle.result(timeout=10) == "woke"

    def failing(keeper: str) -> None:
        raise rk.StoreError("transient: connection reset")

    engine.store.let_go = failing  # type: ignore[method-assign]
    closed: list[bool] = []
    close = engine.store.close
    engine.store.close = lambda: (closed.append(True), close())[1]  # type: ignore[method-assign]
    engine.close()  # before: raised the StoreError, and the store stayed open
    assert closed == [True]
    assert "could not let go of the runs this engine kept" in caplog.text
