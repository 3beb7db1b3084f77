"""An activity's exception is recorded as JSON (type, message, traceback) with a pickled copy. One
whose message holds a surrogate pair, or whose __str__ raises, is recorded too, and the workflow
catches it as it was raised. Before, its failure escaped as an error of the engine and the run was
left running (found by a fuzz campaign)."""
from __future__ import annotations

import pytest

import replaykit as rk
from replaykit.store import open_store


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this error")


ERRORS = {"surrogate-pair": lambda: ValueError("bad name \ud83d\ude00"), "str-raises": lambda: Unprintable()}


@rk.activity(name="hard_errors.fails")
def fails(which: str) -> None:
    raise ERRORS[which]()


@rk.workflow(name="hard_errors.catches")
def catches(ctx: rk.Context, which: str) -> rk.Flow[str]:
    try:
        yield fails(which)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__
    return "no error"


@pytest.mark.parametrize("which", list(ERRORS))
def test_activity_error_is_recorded_and_caught(any_db: str, which: str) -> None:
    expected = type(ERRORS[which]()).__name__
    assert rk.run(catches, which, workflow_id=which, db=any_db) == expected  # caught as raised
    assert rk.run(catches, which, workflow_id=which, db=any_db) == expected  # and so on replay
    with open_store(any_db) as store:
        info = store.info(which)
        assert info is not None and info.status is rk.Status.COMPLETED
