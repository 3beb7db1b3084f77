"""A child run kept out of memory by a live engine (``max_cached_runs``) stays that engine's when its
parent is replayed in another engine: the parent waits for the child's end instead of driving it.
Found by tests/test_keepers_chaos.py (``s2r3/15 moved from pid 775 (alive) to pid 839``). Real
processes: the keeper is a child process; the parent's engine is this one. SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from conftest import PYTHON
from helpers import driver_turn, timers_fired, wait_until


@rk.workflow(name="kch_child")
def nap(ctx: rk.Context, seconds: float) -> Any:
    yield rk.sleep(seconds)
    return "woke"


@rk.workflow(name="kch_parent")
def parent(ctx: rk.Context) -> Any:
    woke = yield rk.child_workflow(nap, 3600.0, workflow_id="kch-c")
    return f"child {woke}"


# Takes up every running run (the child alone: its parent is paused), keeps the child evicted, says so,
# and lives until killed.
_KEEPER = """
import sys, time
import replaykit as rk
import test_kept_children
engine = rk.Engine(sys.argv[1], max_cached_runs=0, poll_interval=0.02)
engine.recover()
while "kch-c" not in engine._evicted:
    time.sleep(0.01)
print("kept", flush=True)
sys.stdin.readline()
"""


def test_a_parent_replayed_elsewhere_leaves_its_child_to_the_live_engine_that_keeps_it(
        any_db: str, child_env: dict[str, str]) -> None:
    with rk.Engine(any_db, poll_interval=0.02) as first:  # records the parent and its child, then lets both go
        first.start(parent, workflow_id="kch-p")
        wait_until(lambda: first.store.info("kch-c") is not None, "the child is created")
        first.pause("kch-p")
    keeper = subprocess.Popen([PYTHON, "-c", _KEEPER, any_db], env=child_env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert keeper.stdout is not None and keeper.stdout.readline() == "kept\n"
        clock = FakeClock(time.time())
        with rk.Engine(any_db, poll_interval=0.02, clock=clock) as engine:
            handle = engine.resume("kch-p")  # replayed here: it yields its child again
            wait_until(lambda: "kch-p" in engine._runs, "the parent is driven here")
            for _ in range(3):
                driver_turn(engine)
            assert "kch-c" not in engine._runs, "the child was taken from the live engine that keeps it"
            owner = engine.store.lock_owner("kch-c")
            assert owner is not None and f"pid {keeper.pid} " in owner and "keeps it out of memory" in owner
            keeper.kill()  # the keeper's runs are anyone's at once
            keeper.wait(timeout=30)
            engine.recover()
            wait_until(lambda: "kch-c" in engine._runs, "the child is taken up here once its keeper is gone")
            clock.advance_to(clock.now() + 3601)
            timers_fired(engine)
            assert handle.result(timeout=20) == "child woke"
    finally:
        keeper.kill()
        keeper.wait(timeout=30)
