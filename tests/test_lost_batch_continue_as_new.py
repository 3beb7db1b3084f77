"""A run that continues as new in a turn whose batch is lost (SQLite rolled it back: a full disk, an I/O
error): the next generation's start was never recorded, so it must not be opened from memory; the run
goes on from what was committed. The lost commit is injected (it really rolls the batch back)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import replaykit as rk

from helpers import driver_turn, lose_a_commit, turn_ending_after, wait_until


@rk.workflow(name="lbc_rounds")
def rounds(ctx: rk.Context, left: int) -> Any:
    yield rk.wait_signal("go")
    if left == 0:
        return "done"
    yield rk.continue_as_new(left - 1)


def test_a_generation_whose_start_was_lost_is_not_driven(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    with rk.Engine(db, poll_interval=0.02) as engine:
        handle = engine.start(rounds, 1, workflow_id="x")
        wait_until(lambda: "x" in engine._runs, "x waits for its signal")
        driver_turn(engine)
        lost = lose_a_commit(engine, lambda: "x" in engine._continuing)
        turn_ending_after(engine, lambda: engine.signal("x", "go"))  # its next generation opens the turn after
        wait_until(lambda: lost, "the batch that continued x is lost")
        with pytest.raises(rk.StoreError):
            handle.result(timeout=10)
        for _ in range(3):
            driver_turn(engine)
        assert "x" not in engine._runs, "a generation whose start was rolled back is driven from memory"
        assert [e.kind for e in engine.store.events("x")] == ["start"]  # generation 1, as committed (the signal
        # it took is in its inbox again)
    with rk.Engine(db, poll_interval=0.02) as again:  # what was committed goes on: continues as new, then ends
        [resumed] = again.recover()
        wait_until(lambda: _args_of_generation(again.store) == [0], "x continued as new")
        again.signal("x", "go")
        assert resumed.result(timeout=10) == "done"


def _args_of_generation(store: rk.Store) -> Any:
    start = next(iter(store.events("x")))
    return start.value(store.codec)["args"]
