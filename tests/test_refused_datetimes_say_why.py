"""With pickle="off", a datetime that typed JSON would change (fold=1, or a named timezone such as
`datetime.now().astimezone()` gives) is refused with a message naming what is wrong and what to
record instead. Before, it said only "(datetime) cannot be recorded as JSON exactly" (found by a
review)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import replaykit as rk


@rk.workflow(name="refused_times.at")
def at(ctx: rk.Context, when: dt.datetime) -> rk.Flow[str]:
    yield rk.sleep(0)
    return when.isoformat()


NAMED = dt.datetime(2030, 1, 31, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET"))  # as .astimezone() gives
FOLDED = dt.datetime(2030, 11, 3, 1, 30, fold=1)


@pytest.mark.parametrize(("when", "reason"), [(NAMED, "CET"), (FOLDED, "fold")], ids=["named-zone", "fold"])
def test_a_refused_datetime_says_what_to_change(tmp_path: Path, when: dt.datetime, reason: str) -> None:
    with rk.Engine(str(tmp_path / "s.db"), pickle="off") as engine:
        with pytest.raises(rk.SerializationError) as refused:
            engine.start(at, when, workflow_id="t")
    text = str(refused.value)
    assert reason in text, text
