"""``rk.cancel`` of a run created to start later (``pending``) ends it on the spot, as nobody drives it.
It looked at the status without the run's lock: when the run came due and an engine was starting it
(status ``running`` written, not committed yet), the cancel recorded its result as event 1 beside the
engine's own event 1, and one of them failed with ``WorkflowLockedError`` ("already recorded by another
driver"). Found by the lost-commit campaign (tests/test_lost_commits_controls.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import replaykit as rk
from replaykit.testing.timeskip import FakeClock

from helpers import timers_fired, wait_until


@rk.activity(name="car_echo")
def echo(text: str) -> str:
    return text


@rk.workflow(name="car_later")
def later(ctx: rk.Context) -> Any:
    said = yield echo("ran")
    yield rk.sleep(3600)  # still running when the cancel is asked of its driver
    return said


def test_a_cancel_of_a_run_that_is_starting_is_asked_of_its_driver(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    with rk.Engine(str(tmp_path / "s.db"), poll_interval=0.02, clock=clock) as engine:
        handle = engine.start(later, workflow_id="x", start_delay=60)
        assert engine.store.info("x").status is rk.Status.PENDING  # type: ignore[union-attr]
        commit, at_commit, go_on = engine.store.commit, threading.Event(), threading.Event()

        def held() -> None:  # the turn that starts x waits at its commit: x running, not yet committed
            if "x" in engine._runs and not at_commit.is_set():
                at_commit.set()
                go_on.wait(10)
            commit()

        engine.store.commit = held  # type: ignore[method-assign]
        clock.advance_to(clock.now() + 61)
        engine._call_at(clock.now(), lambda: None)  # wake the driver for its due timers
        wait_until(at_commit.is_set, "the engine is starting x")
        errors: list[BaseException] = []

        def cancel() -> None:
            try:
                rk.cancel(engine.store, "x", "no longer wanted")
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        canceller = threading.Thread(target=cancel)
        canceller.start()
        time.sleep(0.2)  # the cancel reads x as pending and waits for the write lock (not a timing assertion)
        go_on.set()
        canceller.join(20)
        timers_fired(engine)
        assert errors == []
        try:
            outcome: object = handle.result(timeout=20)
        except rk.WorkflowCancelled as exc:
            outcome = exc
        assert isinstance(outcome, rk.WorkflowCancelled) and "no longer wanted" in str(outcome)
        assert [e.seq for e in engine.store.events("x")] == list(range(len(list(engine.store.events("x")))))
