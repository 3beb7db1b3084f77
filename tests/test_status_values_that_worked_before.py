"""ctx.set_status takes JSON data: numbers and text of subclasses too (a str or int enum member, a str
subclass), read back as their JSON value, as they were before set_status checked its value (found by
a review: the first check took only the exact types, and failed runs that completed before)."""

from __future__ import annotations

import enum
from typing import Any

import pytest

import replaykit as rk


class Stage(str, enum.Enum):
    LOADING = "loading"


class Percent(enum.IntEnum):
    HALF = 50


class Label(str):
    pass


@rk.activity(name="status_before.step")
def step() -> int:
    return 1


STATUSES: dict[str, Any] = {"str-enum": Stage.LOADING, "int-enum": Percent.HALF, "str-subclass": Label("loading"),
                            "in-a-dict": {"stage": Stage.LOADING, "done": Percent.HALF}}
EXPECTED: dict[str, Any] = {"str-enum": "loading", "int-enum": 50, "str-subclass": "loading",
                            "in-a-dict": {"stage": "loading", "done": 50}}


@rk.workflow(name="status_before.reports")
def reports(ctx: rk.Context, which: str) -> rk.Flow[str]:
    yield step()
    ctx.set_status(STATUSES[which])
    yield step()
    return "set"


@pytest.mark.parametrize("which", list(STATUSES))
def test_a_status_that_json_records_as_itself_is_still_taken(any_db: str, which: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(reports, which, workflow_id="s")
        assert handle.result(timeout=20) == "set"
        assert handle.custom_status() == EXPECTED[which]
