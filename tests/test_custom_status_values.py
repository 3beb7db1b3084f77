"""``ctx.set_status`` takes plain JSON data, which reads back as itself: anything else is refused where
the workflow sets it, with a SerializationError naming it. Before, the store's ``json.dumps`` raised a
bare TypeError in the engine for a date or a set (the run left running), and a tuple or an int key
was silently changed (found by a fuzz campaign)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

import replaykit as rk


@rk.activity(name="status.step")
def step() -> int:
    return 1


@rk.workflow(name="status.reports")
def reports(ctx: rk.Context, which: str) -> rk.Flow[str]:
    yield step()
    try:
        ctx.set_status(STATUSES[which])
    except rk.SerializationError as exc:
        ctx.set_status({"refused": str(exc)})
        return "refused"
    yield step()
    return "set"


STATUSES: dict[str, Any] = {"date": datetime.date(2030, 1, 31), "tuple": (1, 2), "int-key": {1: "a"},
                            "set": {1}, "nested-tuple": {"at": [1, (2, 3)]}, "huge": [10**5000],
                            "plain": {"rows": 300, "stage": "load", "ok": [True, None, 1.5]}}


@pytest.mark.parametrize("which", [k for k in STATUSES if k != "plain"])
def test_a_status_that_is_not_plain_json_is_refused_where_it_is_set(any_db: str, which: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(reports, which, workflow_id="s")
        assert handle.result(timeout=20) == "refused"
        status = handle.custom_status()
    assert "ctx.set_status" in status["refused"] and "Nothing was recorded" in status["refused"]


def test_a_plain_json_status_reads_back_as_itself(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(reports, "plain", workflow_id="s")
        assert handle.result(timeout=20) == "set"
        assert handle.custom_status() == STATUSES["plain"]
