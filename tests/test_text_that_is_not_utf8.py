"""Text that UTF-8 cannot encode: a lone surrogate, as Python decodes an undecodable file name
(``os.listdir``, ``sys.argv``, ``os.environ`` use ``surrogateescape``). A value holding one is
recorded, reads back as the same text, and shows in the CLI; an id or a name holding one is
refused with a clear error, before anything is recorded. Before, the first such value broke the
engine with a bare ``UnicodeEncodeError`` and left its run running for ever."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk

from conftest import ROOT
from ui_server import UiServer

NAME = b"report-\xff.csv".decode("utf-8", "surrogateescape")  # a file name that is not UTF-8


@rk.activity
def listed() -> list[str]:
    return [NAME, "café"]


@rk.activity
def opened(name: str) -> str:
    with open(name, encoding="utf-8") as f:  # FileNotFoundError, its message holding the name
        return f.read()


@rk.workflow(name="surrogates.files")
def files(ctx: rk.Context, folder: str) -> rk.Flow[dict[str, object]]:
    names = yield listed()
    ctx.set_status({"first": names[0]})
    try:
        yield opened(os.path.join(folder, names[0]))
    except FileNotFoundError as exc:
        return {"names": names, "folder": folder, "error": exc.filename}
    return {}


def test_a_value_holding_a_lone_surrogate_is_recorded_and_reads_back_the_same(any_db: str, tmp_path: Path) -> None:
    folder = str(tmp_path) + NAME  # an argument holding one too
    expected = {"names": [NAME, "café"], "folder": folder, "error": os.path.join(folder, NAME)}
    assert rk.run(files, folder, workflow_id="f", db=any_db) == expected
    assert rk.run(files, folder, workflow_id="f", db=any_db) == expected  # read back from the history
    with rk.Engine(any_db) as engine:
        assert engine.handle("f").custom_status() == {"first": NAME}
    report = rk.testing.replay_all(any_db, [files])[0]
    assert report.ok, report.error


def test_text_that_utf8_encodes_is_recorded_as_utf8_as_before(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    rk.run(files, str(tmp_path), workflow_id="f", db=db)
    with sqlite3.connect(db) as conn:
        payloads = [row[0] for row in conn.execute("SELECT payload FROM events WHERE kind = 'activity'")]
    assert '"café"' in payloads[0] and "\\udcff" in payloads[0]  # only the surrogate is escaped


@pytest.mark.parametrize("verb", [["list"], ["history", "f"], ["history", "f", "--json"], ["describe", "f"],
                                  ["describe", "f", "--json"], ["result", "f"], ["export", "f"]],
                         ids=" ".join)
def test_the_cli_shows_such_values(tmp_path: Path, verb: list[str]) -> None:
    db = str(tmp_path / "s.db")
    rk.run(files, str(tmp_path), workflow_id="f", db=db)
    shown = subprocess.run([sys.executable, "-m", "replaykit", verb[0], db, *verb[1:]], capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}, timeout=60)
    assert shown.returncode == 0 and b"Traceback" not in shown.stderr, shown.stderr.decode(errors="replace")
    if verb[-1] == "--json" or verb[0] == "export":
        json.loads(shown.stdout)  # still one JSON document


def test_an_id_or_a_signal_name_holding_a_lone_surrogate_is_refused_by_name(any_db: str) -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        rk.run(files, "x", workflow_id="run-" + NAME, db=any_db)
    with rk.Engine(any_db) as engine:
        engine.start(files, "/nonexistent", workflow_id="g").result(timeout=30)
    with pytest.raises(ValueError, match="UTF-8"):
        rk.send_signal(any_db, "g", "go-" + NAME)
    with rk.Engine(any_db) as engine:
        assert engine.handle("g").status() is rk.Status.COMPLETED  # nothing was recorded for the refused id


@rk.workflow(name="surrogates.kid")
def kid(ctx: rk.Context) -> rk.Flow[int]:
    return (yield listed()).index("café")


@rk.workflow(name="surrogates.parent")
def parent(ctx: rk.Context, suffix: str) -> rk.Flow[str]:
    try:
        return str((yield rk.child_workflow(kid, workflow_id="kid-" + suffix)))
    except ValueError as exc:
        return str(exc)


def test_a_child_id_holding_a_lone_surrogate_is_refused_in_the_workflow_by_name(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    assert "UTF-8 cannot encode" in rk.run(parent, NAME, workflow_id="p", db=db)
    assert rk.run(parent, "ok", workflow_id="q", db=db) == "1"


@rk.activity
def paired() -> str:
    return "\ud83d\ude00"  # two characters that JSON would read back as the one they stand for


@rk.workflow(name="surrogates.paired")
def records_a_pair(ctx: rk.Context) -> rk.Flow[str]:
    return (yield paired())


def test_a_surrogate_pair_held_as_two_characters_is_refused_not_changed(tmp_path: Path) -> None:
    with pytest.raises(rk.SerializationError, match="surrogate pair"):
        rk.run(records_a_pair, workflow_id="p", db=str(tmp_path / "s.db"))


REFUSED = "UTF-8 cannot encode"  # replaykit.text's message


@rk.workflow(name="review.waits_for_a_named_signal")
def waits_for(ctx: rk.Context, name: str) -> rk.Flow[str]:
    try:
        got = yield rk.wait_signal(name, timeout=0.5)
    except ValueError as exc:
        return f"refused: {exc}"
    return f"waited: {got}"


@rk.workflow(name="review.patched")
def patched_by(ctx: rk.Context, change_id: str) -> rk.Flow[str]:
    try:
        new = ctx.patched(change_id)
    except ValueError as exc:
        return f"refused: {exc}"
    yield rk.sleep(0.01)
    return f"patched: {new}"


@pytest.mark.parametrize("workflow", [waits_for, patched_by], ids=["wait_signal", "patched"])
def test_a_signal_waited_for_or_a_patch_id_holding_a_lone_surrogate_is_refused_by_name(
        any_db: str, workflow: Any) -> None:
    """`send_signal` refuses such a signal name, but the receiving side does not: `rk.wait_signal(name)`
    (a name made from a file name: "uploaded:" + name) and `ctx.patched(change_id)` record the name as
    an event's `name` column, which SQLite (and psycopg) must encode as UTF-8. The engine raises a bare
    UnicodeEncodeError out of `rk.run` / `handle.result()`, and the run stays `running` for ever (every
    recover() fails the same way): the very failure the commit fixed for values."""
    with rk.Engine(any_db) as engine:
        handle = engine.start(workflow, "x-" + NAME, workflow_id="r")
        try:
            answer = handle.result(timeout=20)
        except UnicodeEncodeError as exc:
            answer = f"engine broke: {exc!r}"
        status = handle.status()
    assert answer.startswith("refused: ") and REFUSED in answer, answer
    assert status is rk.Status.COMPLETED  # not left running


@pytest.mark.parametrize("where", ["queue", "key"])
def test_a_queue_or_key_holding_a_lone_surrogate_is_refused_by_name(tmp_path: Path, where: str) -> None:
    """`Client.start(queue=..., key=...)`: text the store keeps as UTF-8, like the ids and signal names
    the commit checks; refused with a bare UnicodeEncodeError from the SQLite driver instead."""
    with rk.Client(str(tmp_path / "s.db")) as client:
        with pytest.raises(ValueError, match=REFUSED):
            client.start(files, "/x", workflow_id="q", **{where: "part-" + NAME})


def test_the_ui_json_api_serves_runs_holding_such_values(tmp_path: Path, child_env: dict[str, str]) -> None:
    """The commit records such values so that they read back and show in the CLI; `replaykit ui`'s JSON
    API (the same data, through pydantic's UTF-8 serializer) answers 500 for them, and for the whole run
    list as soon as one run's custom status or arguments hold one: every run becomes unlistable."""
    db = str(tmp_path / "s.db")
    rk.run(files, str(tmp_path), workflow_id="f", db=db)
    server = UiServer(db, child_env)
    try:
        for path in ("/api/runs", "/api/runs/f", "/api/runs/f/history", "/api/runs/f/result"):
            status, body = server.request("GET", path)
            assert status == 200, (path, status, body)
            json.loads(body)
    finally:
        server.stop()
