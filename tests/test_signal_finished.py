"""A signal to a run that has ended is refused, not kept as mail nobody will read."""

from __future__ import annotations

import subprocess

import pytest

import replaykit as rk
from replaykit.store import Store, open_store

from conftest import PYTHON
from helpers import adder, waits_for_approval


def test_a_signal_to_a_finished_run_is_refused_by_the_store(store: Store) -> None:
    with store:  # on each kind of store (the conftest ``store`` fixture)
        assert rk.run(adder, 2, workflow_id="done", db=store) == 1
        with pytest.raises(rk.IllegalTransitionError,
                           match="workflow 'done' is completed; it can no longer take signals"):
            rk.send_signal(store, "done", "approved", True)
        with pytest.raises(rk.IllegalTransitionError, match="already completed; nothing to cancel"):
            rk.cancel(store, "done")
        assert store.inbox() == set()


def test_cli_refuses_a_signal_to_a_finished_run(any_db: str, child_env: dict[str, str]) -> None:
    rk.run(adder, 2, workflow_id="done", db=any_db)
    out = subprocess.run([PYTHON, "-m", "replaykit", "signal", any_db, "done", "approved", "true"],
                         capture_output=True, text=True, env=child_env, timeout=30)
    assert out.returncode == 1
    assert out.stderr == "replaykit: workflow 'done' is completed; it can no longer take signals\n"
    with open_store(any_db) as store:
        assert store.inbox() == set()


def test_signals_and_cancels_to_running_runs_still_arrive(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(waits_for_approval, workflow_id="w")
        rk.send_signal(any_db, "w", "approved", "yes")
        assert handle.result(timeout=10) == {"answer": "yes"}
        engine.start(waits_for_approval, workflow_id="c")
        rk.cancel(any_db, "c")
        with pytest.raises((rk.Cancelled, rk.WorkflowFailed)):  # WorkflowCancelled once issue 8's item 11 lands
            engine.handle("c").result(timeout=10)
        assert engine.handle("c").status() is rk.Status.CANCELLED


@rk.workflow(name="finished.parent")
def parent(ctx: rk.Context):
    yield rk.any(rk.child_workflow(waits_for_approval, workflow_id="kid"), rk.sleep(0.2))
    return "parent done"


def test_a_child_that_lost_is_cancelled_through_its_inbox(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        assert engine.start(parent, workflow_id="par").result(timeout=10) == "parent done"
        with pytest.raises((rk.Cancelled, rk.WorkflowFailed)):
            engine.handle("kid").result(timeout=10)
        assert engine.handle("kid").status() is rk.Status.CANCELLED
        with pytest.raises(rk.IllegalTransitionError, match="'kid' is cancelled; it can no longer take signals"):
            engine.signal("kid", "approved")
        assert engine.store.inbox() == set()
