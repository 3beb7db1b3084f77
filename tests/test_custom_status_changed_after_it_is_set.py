"""``ctx.set_status`` takes a copy of its value, as the store reads it back. The run's row is written
later (at the next step's commit): a status the workflow changed after setting it was written as
changed, and one changed into something that is not JSON data broke the engine with a bare
``TypeError`` and left the run running (found by a docs check). In a TestEnv an enum member read
back as the member, elsewhere as its value; it is its value everywhere now."""

from __future__ import annotations

import enum
from typing import Any

import replaykit as rk
from replaykit.testing import TestEnv


@rk.workflow(name="status.changed_after")
def changed_after(ctx: rk.Context) -> rk.Flow[int]:
    status: dict[str, Any] = {"rows": 1}
    ctx.set_status(status)  # plain JSON here: accepted
    status["seen"] = {1, 2}  # no longer JSON data when the engine writes it
    yield rk.sleep(0.01)
    return 1


def test_a_status_changed_after_set_status_is_the_status_as_it_was_set(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(changed_after, workflow_id="s")
        assert handle.result(timeout=10) == 1
        assert handle.custom_status() == {"rows": 1}


class Stage(str, enum.Enum):
    LOADING = "loading"


@rk.workflow(name="status.enum_in_tests")
def enum_status(ctx: rk.Context) -> rk.Flow[None]:
    ctx.set_status({"stage": Stage.LOADING})
    yield rk.sleep(0.01)


def test_an_enum_member_reads_back_as_its_value_in_a_test_env_too() -> None:
    with TestEnv() as env:
        handle = env.start(enum_status, workflow_id="e")
        handle.result(timeout=10)
        status = handle.custom_status()
    assert status == {"stage": "loading"} and type(status["stage"]) is str
