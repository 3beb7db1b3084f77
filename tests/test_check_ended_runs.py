"""``replaykit check`` (and ``replaykit.testing.replay_all``) on runs ended without their code: a terminate,
a pending run cancelled. Found by a crash campaign; both tests failed before the fix."""

from __future__ import annotations

import json

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.store import open_store

from helpers import wait_until


@rk.activity(name="check_ended.note")
def note(tag: str) -> str:
    return tag


@rk.workflow(name="check_ended.waits_for_go")  # a name of its own: `check -m` finds workflows by name
def waits_for_go(ctx: rk.Context) -> rk.Flow[str]:
    yield note("before")
    yield rk.wait_signal("go")
    return "went"


def _status(db: str, workflow_id: str) -> rk.Status | None:
    with open_store(db, create=False) as store:
        info = store.info(workflow_id)
    return None if info is None else info.status


def _check(db: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]]]:
    capsys.readouterr()
    code = main(["check", db, "-m", __name__, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_check_accepts_a_terminated_run(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rk.terminate` is documented (docs/cancellation.md) to end a run without its code; `replaykit check`
    then replays the history and reports the run as not deterministic ("history recorded: the workflow
    ended / code now yields: wait_signal('go')"), exit 1, though the code did not change."""
    with rk.Engine(db, workflows=[waits_for_go]) as engine:
        engine.start(waits_for_go, workflow_id="w")
        wait_until(lambda: len(list(engine.store.events("w"))) >= 2, "the activity recorded")
    rk.terminate(db, "w", "not needed")  # nobody holds it: ended by the call itself
    assert _status(db, "w") is rk.Status.CANCELLED
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
    assert _status(db, "p") is rk.Status.CANCELLED
    code, runs = _check(db, capsys)
    assert [r["ok"] for r in runs] == [True], runs
    assert code == 0
