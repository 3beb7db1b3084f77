"""Defects found by a crash campaign (engine close/kill vs control calls, cancellation, timers, workers, retention)."""

from __future__ import annotations

import json

import pytest

import replaykit as rk
from replaykit.cli import main


@rk.activity
def note(tag: str) -> str:
    return tag


@rk.workflow
def waits_for_go(ctx: rk.Context) -> rk.Flow[str]:
    yield note("before")
    yield rk.wait_signal("go")
    return "went"


def _check(db: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = main(["check", db, "-m", __name__, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_check_accepts_a_terminated_run(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rk.terminate` is documented (docs/cancellation.md) to end a run without its code; `replaykit check`
    then replays the history and reports the run as not deterministic ("history recorded: the workflow
    ended / code now yields: wait_signal('go')"), exit 1, though the code did not change."""
    with rk.Engine(db, workflows=[waits_for_go]) as engine:
        handle = engine.start(waits_for_go, workflow_id="w")
        for _ in range(200):
            if len(list(engine.store.events("w"))) >= 2:
                break
            import time
            time.sleep(0.01)
    rk.terminate(db, "w", "not needed")   # nobody holds it: ended by the call itself
    assert rk.Client(db).store.info("w").status is rk.Status.CANCELLED
    code, runs = _check(db, capsys)
    assert [r["ok"] for r in runs] == [True], runs
    assert code == 0


def test_check_accepts_a_pending_run_cancelled_before_it_started(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rk.cancel` of a `pending` run ends it at once without running it (docs/cancellation.md); its history
    (start, result) is then reported by `replaykit check` as a divergence ("history recorded: the workflow
    ended / code now yields: activity note('before')"), exit 1."""
    with rk.Engine(db, workflows=[waits_for_go]) as engine:
        engine.start(waits_for_go, workflow_id="p", start_delay=600)
    rk.cancel(db, "p", "not wanted")
    assert rk.Client(db).store.info("p").status is rk.Status.CANCELLED
    code, runs = _check(db, capsys)
    assert [r["ok"] for r in runs] == [True], runs
    assert code == 0
