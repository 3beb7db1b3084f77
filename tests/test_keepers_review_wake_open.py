"""A kept run whose wake takes its lock (clearing its keeper mark) and then fails to read its history
(a PostgreSQL blip, an I/O error) is not given up: _opened unlocked it and failed its handle, so the run,
no longer in _evicted, unmarked and unlocked, was driven by nobody (its timers find it gone) while its
``result()`` raised, although the run goes on. Now it stays kept, marked again, and is tried again."""

from __future__ import annotations

import time
from typing import Any

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from helpers import driver_turn, timers_fired, wait_until
from test_keepers import naps


def test_a_store_error_reading_a_woken_kept_run_does_not_drop_it(any_db: str) -> None:
    clock = FakeClock(time.time())
    with rk.Engine(any_db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        handle = engine.start(naps, [60.0, 60.0], workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        opening = engine.store.opening
        failed: list[str] = []

        def flaky(workflow_id: str, *args: Any) -> Any:
            if not failed:
                failed.append(workflow_id)
                raise rk.StoreError("transient: connection reset")
            return opening(workflow_id, *args)

        engine.store.opening = flaky  # type: ignore[method-assign]
        clock.advance_to(clock.now() + 61)
        timers_fired(engine)  # woken: locked, then its history cannot be read
        assert failed == ["x"]
        seen: list[bool] = []
        engine._post(lambda: seen.append("x" in engine._runs or "x" in engine._evicted))  # read on its driver
        driver_turn(engine)
        assert seen == [True], "the engine dropped x, which it kept: nobody drives it"
        wait_until(lambda: len(list(engine.store.events("x"))) >= 2, "x is taken back and its first nap ends")
        clock.advance_to(clock.now() + 61)
        timers_fired(engine)
        assert handle.result(timeout=20) == "woke"  # before: the StoreError, while the run was still running
