"""rk.run's promise: rerun the same script, with the same arguments, after a crash, and it resumes.
The rerun compared the recorded arguments with ==, so a NaN argument (float or Decimal, also inside a
list or a dataclass) made the rerun a WorkflowConflictError, and a signalling NaN raised a bare
decimal.InvalidOperation (found by a fuzz campaign). Arguments recorded alike are the same arguments."""

from __future__ import annotations

import dataclasses
import decimal
from typing import Any

import pytest

import replaykit as rk


@dataclasses.dataclass(frozen=True)
class Reading:
    value: float


@rk.workflow(name="nan.measure")
def measure(ctx: rk.Context, x: Any) -> rk.Flow[str]:
    yield rk.sleep(0)
    return "ok"


@pytest.mark.parametrize("value", [float("nan"), [float("nan")], decimal.Decimal("NaN"), decimal.Decimal("sNaN"),
                                   Reading(float("nan"))], ids=["nan", "list-nan", "dec-nan", "dec-snan", "class"])
def test_a_rerun_with_a_nan_argument_returns_the_recorded_result(any_db: str, value: object) -> None:
    assert rk.run(measure, value, workflow_id="nan", db=any_db) == "ok"
    assert rk.run(measure, value, workflow_id="nan", db=any_db) == "ok"


def test_other_arguments_are_still_a_conflict(any_db: str) -> None:
    assert rk.run(measure, float("nan"), workflow_id="nan", db=any_db) == "ok"
    with pytest.raises(rk.WorkflowConflictError, match="same arguments"):
        rk.run(measure, 1.0, workflow_id="nan", db=any_db)
    with pytest.raises(rk.WorkflowConflictError, match="same arguments"):
        rk.run(measure, decimal.Decimal("sNaN"), workflow_id="nan", db=any_db)
