"""``engine.recover()`` decides which runs to resume on the calling thread, and the driver opens them
later: a run that came into memory meanwhile (its next generation opened after a continue-as-new, an
evicted run woken) is driven by this very engine, and the handle recover() gave must follow it.
It raised ``WorkflowLockedError: ... already driven by this engine`` instead (found by the lost-commit
campaign on PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import replaykit as rk

from helpers import driver_turn, turn_ending_after, wait_until


@rk.workflow(name="rbr_rounds")
def rounds(ctx: rk.Context, left: int) -> Any:
    yield rk.wait_signal("go")
    if left == 0:
        return "done"
    yield rk.continue_as_new(left - 1)


def test_a_run_that_came_into_memory_after_recover_looked_is_followed(tmp_path: Path) -> None:
    with rk.Engine(str(tmp_path / "s.db"), poll_interval=0.02) as engine:
        first = engine.start(rounds, 1, workflow_id="x")
        wait_until(lambda: "x" in engine._runs, "x waits for its signal")
        driver_turn(engine)
        recovered: list[list[Any]] = []

        def signal_then_recover() -> None:  # x continues as new; its next generation opens the turn after, and
            engine.signal("x", "go")  # recover() looks first, while x is between generations
            engine._post(lambda: recovered.append(engine.recover()))

        turn_ending_after(engine, signal_then_recover)
        wait_until(lambda: recovered, "recover() looked")
        [handle] = recovered[0]
        driver_turn(engine)
        assert "x" in engine._runs
        engine.signal("x", "go")
        assert handle.result(timeout=10) == "done"
        assert first.result(timeout=10) == "done"
