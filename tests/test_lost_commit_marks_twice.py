"""Two commits lost in a row (a full disk stays full a moment): the batch that woke a kept run, then the
commit in which _batch_lost clears the keeper marks the rollback brought back. The run must not be left
unlocked with this live engine's mark on it (every other engine refuses it, and this one no longer drives
it): it stays this engine's until its mark is cleared, then anyone may take it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from conftest import PYTHON
from helpers import RECOVERER, driver_turn, timers_fired, wait_until


@rk.workflow(name="lmt_nap_then_signal")
def nap_then_signal(ctx: rk.Context) -> Any:
    yield rk.sleep(60)
    return (yield rk.wait_signal("go"))


def lose_two_commits(engine: rk.Engine, when: Callable[[], bool]) -> list[bool]:
    """The first commit of the driver for which ``when()`` holds, and the driver's next one, are rolled back."""
    commit = engine.store.commit
    lost: list[bool] = []

    def failing() -> None:
        conn = engine.store._local.conn  # type: ignore[attr-defined]
        if threading.current_thread() is engine._thread and conn.in_transaction and len(lost) < 2 and (
                lost or when()):
            lost.append(True)
            conn.execute("ROLLBACK")
        commit()

    engine.store.commit = failing  # type: ignore[method-assign]
    return lost


def test_a_kept_run_woken_in_a_lost_batch_is_not_stranded_when_the_next_commit_is_lost_too(
        tmp_path: Any, child_env: dict[str, str]) -> None:
    db = str(tmp_path / "s.db")
    clock = FakeClock(time.time())
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        engine.start(nap_then_signal, workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        lost = lose_two_commits(engine, lambda: "x" in engine._runs)
        clock.advance_to(clock.now() + 61)
        timers_fired(engine)
        wait_until(lambda: len(lost) == 2, "the batch that woke x, and the next commit, are lost")
        time.sleep(0.2)  # a few polls: the engine may clear its mark again
        claims: list[bool] = []
        engine._post(lambda: claims.append("x" in engine._runs or "x" in engine._evicted))
        driver_turn(engine)
        other = subprocess.run([PYTHON, "-c", RECOVERER, db, "test_lost_commit_marks_twice", "5"], env=child_env,
                               text=True, capture_output=True, timeout=60)
        assert other.returncode == 0, other.stderr
        elsewhere = other.stdout.strip()
    assert not (claims[0] and elsewhere == "took"), "another process drove x, which this live engine keeps"
    assert claims[0] or elsewhere == "took", "x is driven by nobody: its mark names this live engine"


@rk.workflow(name="lmt_waits")
def waits(ctx: rk.Context) -> Any:
    return (yield rk.wait_signal("go"))


def test_a_run_created_in_a_lost_batch_starts_again_after_the_next_commit_is_lost_too(tmp_path: Any) -> None:
    """x's start is in a lost batch beside y, which waits in memory; the commit clearing their marks is lost
    too, so both stay locked to be unmarked later. x has no row (its creation was rolled back): starting
    it again raised WorkflowNotFoundError from the mark clearing (found by the controls campaign)."""
    with rk.Engine(str(tmp_path / "s.db"), poll_interval=0.02) as engine:
        y = engine.start(waits, workflow_id="y")
        wait_until(lambda: "y" in engine._runs, "y waits in memory")
        driver_turn(engine)
        lost = lose_two_commits(engine, lambda: "x" in engine._runs)
        with pytest.raises(rk.StoreError):
            engine.start(waits, workflow_id="x")
        wait_until(lambda: len(lost) == 2, "x's batch, and the commit clearing the marks, are lost")
        with pytest.raises(rk.StoreError):
            y.result(timeout=10)
        x = engine.start(waits, workflow_id="x")
        engine.signal("x", "go", 1)
        assert x.result(timeout=10) == 1
