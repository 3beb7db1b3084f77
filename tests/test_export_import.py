"""``replaykit export`` / ``import``: a run's history as JSON, and back into a store (another kind of
store too), ended runs read back as they ended and a run that had not ended resumed there."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.store import open_store

calls: list[str] = []


@rk.activity
def shout(text: str) -> str:
    calls.append(text)
    return text.upper()


@rk.workflow(name="transfer.greeting")
def greeting(ctx: rk.Context, name: str) -> rk.Flow[str]:
    first = yield shout(f"hello {name}")
    answer: str = yield rk.wait_signal("reply")
    return f"{first} / {answer}"


@rk.workflow(name="transfer.failing")
def failing(ctx: rk.Context) -> rk.Flow[None]:
    yield shout("x")
    raise ValueError("nope")


def test_a_run_moves_between_stores_and_goes_on_there(db: str, pg_url: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "shared secret of both stores, at least 32 bytes long"
    monkeypatch.setenv("REPLAYKIT_SECRET", secret)  # what the command line reads the stores with
    with rk.Engine(db) as engine:
        engine.start(greeting, "ann", workflow_id="g")
        with pytest.raises(rk.WorkflowFailed):
            engine.start(failing, workflow_id="f").result(timeout=20)
        with open_store(db, create=False) as store:
            while len(list(store.events("g"))) < 2:  # the first step recorded; then it waits for "reply"
                time.sleep(0.01)
    exported = tmp_path / "g.json"
    assert main(["export", db, "g", "-o", str(exported)]) == 0
    assert json.loads(exported.read_text())["workflow_id"] == "g"
    assert main(["export", db, "f"]) == 0
    failed_export = tmp_path / "f.json"
    failed_export.write_text(capsys.readouterr().out)
    with rk.Engine(pg_url):
        pass  # the destination store exists
    assert main(["import", pg_url, str(exported)]) == 0 and "running" in capsys.readouterr().out
    assert main(["import", pg_url, str(failed_export)]) == 0 and "failed" in capsys.readouterr().out
    assert main(["import", pg_url, str(exported)]) == 1 and "is taken" in capsys.readouterr().err
    with rk.Engine(pg_url) as engine:  # recovers the imported run, replays it, goes on
        assert [h.workflow_id for h in engine.recover()] == ["g"]
        rk.send_signal(pg_url, "g", "reply", "hi")
        assert engine.handle("g").result(timeout=30) == "HELLO ANN / hi"
        with pytest.raises(rk.WorkflowFailed, match="nope"):
            engine.handle("f").result(timeout=10)
    assert calls.count("hello ann") == 1  # the imported step was replayed, not run again


def test_an_import_that_is_not_a_history_changes_nothing(db: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(db):
        pass
    bad = tmp_path / "bad.json"
    for text, says in (("{}", "not a replaykit history export"), ("not json", "not JSON"),
                       (json.dumps({"format": "replaykit-history", "version": 1, "workflow_id": "w", "workflow": "x",
                                    "events": []}), "does not begin with the start")):
        bad.write_text(text)
        assert main(["import", db, str(bad)]) == 1
        assert says in capsys.readouterr().err
    with open_store(db, create=False) as store:
        assert store.list() == []
    assert main(["import", str(tmp_path / "missing.db"), str(bad)]) == 1
    assert not (tmp_path / "missing.db").exists()
