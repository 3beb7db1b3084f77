"""What the docs promise about errors and the CLI, checked (issue: false statements in the docs)."""

from __future__ import annotations

import json
import re
import traceback
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.cli import main

from helpers import rechain, wait_until


@rk.activity
def note(x: int) -> int:
    return x


def _version(which: int) -> rk.Workflow[Any, Any]:
    def flow(ctx: rk.Context) -> Any:
        yield note(1)
        if which == 1:
            yield note(2)
        else:
            yield rk.sleep(1)
        yield rk.wait_signal("never")

    return rk.Workflow(flow, "changing")


def test_a_non_determinism_error_is_shown_once_with_its_table_and_the_patched_advice(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with rk.Engine(db) as engine:
        engine.start(_version(1), workflow_id="x")
        wait_until(lambda: [e.kind for e in engine.store.events("x")] == ["start", "activity", "activity"],
                   "both activities are recorded", timeout=30)  # then it waits for its signal
    with pytest.raises(rk.NonDeterminismError) as err:
        rk.run(_version(2), workflow_id="x", db=db)
    shown = "".join(traceback.format_exception(err.value))
    assert shown.count("is not deterministic") == 1  # no second, chained copy of the error
    assert "history recorded  code now" in shown  # the side-by-side table
    assert "ctx.patched" in shown


def test_replaykit_list_shows_the_custom_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    @rk.workflow(name="with_status")
    def with_status(ctx: rk.Context) -> Any:
        ctx.set_status({"rows": 300})
        yield rk.sleep(0)
        return None

    db = tmp_path / "s.db"
    rk.run(with_status, workflow_id="s", db=db)
    assert main(["list", str(db)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert row[header.index("CUSTOM STATUS"):].rstrip() == '{"rows": 300}'
    assert main(["list", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["custom_status"] == {"rows": 300}


class _Marker:
    """A pickle that, when loaded, writes a file: what a hostile writer of the store could plant."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def test_replaykit_history_shows_pickles_opaque_and_runs_no_code(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import pickle
    import sqlite3

    @rk.workflow(name="keeps_an_object")
    def keeps_an_object(ctx: rk.Context) -> Any:
        yield rk.side_effect(lambda: complex(1, 2))  # a complex number: recorded as a pickle
        return None

    db = tmp_path / "s.db"
    rk.run(keeps_an_object, workflow_id="k", db=db)
    assert main(["history", str(db), "k"]) == 0
    assert re.search(r"<pickle builtins\.complex, \d+ bytes>", capsys.readouterr().out)  # its type, from its opcodes
    marker = tmp_path / "ran"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE events SET payload = ? WHERE encoding = 'pickle'", (pickle.dumps(_Marker(str(marker))),))
    conn.commit()
    conn.close()
    rechain(db)  # checksums recomputed, as a forger would: the row is shown, and its pickle not loaded
    assert main(["history", str(db), "k"]) == 0
    # shown, never loaded: the type shown is what the crafted pickle would call
    assert re.search(r"<pickle (builtins|_?io)\.open, \d+ bytes>", capsys.readouterr().out)
    assert not marker.exists()
