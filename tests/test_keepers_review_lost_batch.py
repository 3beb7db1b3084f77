"""A turn's batch lost (SQLite rolled it back: a full disk, an I/O error) takes the keeper marks written or
cleared in it along: _batch_lost must not leave a run this engine believes it keeps unmarked and unlocked
(another process takes it silently), nor a run it gave up marked as its own (nobody drives it). The lost
commit is injected (it really rolls the batch back); the other engine is a real process."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from conftest import PYTHON
from helpers import RECOVERER, driver_turn, lose_a_commit, timers_fired, wait_until


@rk.workflow(name="krl_signal_then_nap")
def signal_then_nap(ctx: rk.Context) -> Any:
    yield rk.wait_signal("go")
    yield rk.sleep(3600)
    return "woke"


@rk.workflow(name="krl_nap_then_signal")
def nap_then_signal(ctx: rk.Context) -> Any:
    yield rk.sleep(60)
    return (yield rk.wait_signal("go"))


def _claims_and_elsewhere(engine: rk.Engine, db: str, env: dict[str, str]) -> tuple[bool, str]:
    claims: list[bool] = []
    engine._post(lambda: claims.append("x" in engine._runs or "x" in engine._evicted))  # read on its driver
    driver_turn(engine)
    other = subprocess.run([PYTHON, "-c", RECOVERER, db, "test_keepers_review_lost_batch", "10"], env=env, text=True,
                           capture_output=True, timeout=60)
    assert other.returncode == 0, other.stderr
    return claims[0], other.stdout.strip()


def test_a_run_evicted_in_a_lost_batch_is_not_left_unmarked_while_kept(tmp_path: Any,
                                                                       child_env: dict[str, str]) -> None:
    """x, in memory, gets its signal and parks on a timer: evicted in that turn, its mark written in the
    batch, its lock given up after the commit. The batch is lost: the mark is gone with it, yet the lost
    commit's callbacks gave up the lock while x stayed in _evicted: unmarked, unlocked, another process's
    recover() took it while this live engine still kept it."""
    db = str(tmp_path / "s.db")
    clock = FakeClock(time.time())
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        engine.start(signal_then_nap, workflow_id="x")
        wait_until(lambda: "x" in engine._runs, "x waits for its signal, in memory")
        driver_turn(engine)
        lost = lose_a_commit(engine, lambda: "x" in engine._evicted and "x" in engine._releasing)
        engine.signal("x", "go")
        wait_until(lambda: lost, "the batch that evicted x is lost")
        claims, elsewhere = _claims_and_elsewhere(engine, db, child_env)
    assert not (claims and elsewhere == "took"), "another process drove x, which this live engine keeps"
    assert claims or elsewhere == "took", "x is driven by nobody"


def test_a_kept_run_woken_in_a_lost_batch_is_not_stranded(tmp_path: Any, child_env: dict[str, str]) -> None:
    """x, kept evicted, is woken by its timer: try_lock clears its mark in the batch, and it then waits for
    a signal, in memory. The batch is lost: _batch_lost stops x (its handle fails) and gives its lock up,
    but the rollback brought its mark back: it names this live engine, which no longer drives x, and every
    other engine refuses x until this one closes."""
    db = str(tmp_path / "s.db")
    clock = FakeClock(time.time())
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        engine.start(nap_then_signal, workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        lost = lose_a_commit(engine, lambda: "x" in engine._runs)
        clock.advance_to(clock.now() + 61)
        timers_fired(engine)
        wait_until(lambda: lost, "the batch that woke x is lost")
        claims, elsewhere = _claims_and_elsewhere(engine, db, child_env)
    assert not (claims and elsewhere == "took"), "another process drove x, which this live engine keeps"
    assert claims or elsewhere == "took", "x is driven by nobody: its mark names this live engine"
