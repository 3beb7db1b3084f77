"""7b95678 gives the UI's JSON answers `_Json` (ASCII, a lone surrogate escaped) so that runs holding
text UTF-8 cannot encode (an undecodable file name a run recorded) are served; error answers still go
through FastAPI's and replaykit's plain `JSONResponse` (UTF-8), which cannot encode such text. A query
whose handler refuses its arguments with a message naming a recorded file is answered 400 with the
message elsewhere; here the server fails to encode the answer and sends 500 Internal Server Error,
with a UnicodeEncodeError traceback in its log."""

from __future__ import annotations

import json
from pathlib import Path

import replaykit as rk

from helpers import wait_until
from surrogate_query_flows import NAME, queried
from ui_server import UiServer


def _answers(db: str) -> bool:
    try:
        return bool(rk.query(db, "q", "size", NAME) == 1)
    except ValueError:  # the activity has not listed the folder yet
        return False


def test_a_query_refused_with_a_message_holding_recorded_text_is_answered_400(
        tmp_path: Path, child_env: dict[str, str]) -> None:
    db = str(tmp_path / "s.db")
    with rk.Engine(db) as engine:
        engine.start(queried, workflow_id="q")
        wait_until(lambda: _answers(db), "the run has listed the folder")
    server = UiServer(db, child_env, "-m", "surrogate_query_flows")
    try:
        status, body = server.request("POST", "/api/runs/q/query",
                                      json.dumps({"name": "size", "args": ["other.csv"]}).encode(),
                                      {"content-type": "application/json"})
    finally:
        server.stop()
    assert status == 400, (status, body)
    assert NAME in json.loads(body)["detail"]
