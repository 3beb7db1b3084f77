"""Datetimes and times read back exactly (type, fold, zone and its name), or are refused: ISO text
dropped fold=1 (the second of two equal local times, another instant), a named ``timezone``'s name,
and, inside a declared dataclass, a zoneinfo zone (a fixed offset came back), since the exactness
check compared with ==, which ignores both (found by a fuzz campaign). Such values are now pickled
(signed), or refused where pickles are off."""
from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

import pytest

import replaykit as rk

from helpers import same_exactly

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


@rk.json_type
@dataclasses.dataclass
class Meeting:
    when: dt.datetime


@rk.json_type
@dataclasses.dataclass
class Alarm:
    at: dt.time


@rk.workflow(name="times.echo")
def echo(ctx: rk.Context, value: object) -> rk.Flow[object]:
    yield rk.sleep(0)
    return value


VALUES = {
    "fold": dt.datetime(2021, 10, 31, 2, 30, fold=1),  # the second 02:30 of a DST change (naive, local)
    "time-fold": dt.time(2, 30, fold=1),
    "named-zone": dt.datetime(2030, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
    "zoneinfo-in-dataclass": Meeting(dt.datetime(2030, 6, 1, 9, 0, tzinfo=PARIS)),
    "zoneinfo-time-in-dataclass": Alarm(dt.time(9, 0, tzinfo=PARIS)),
}


@pytest.mark.parametrize("which", list(VALUES))
def test_datetime_reads_backsame_exactly(any_db: str, which: str) -> None:
    value = VALUES[which]
    got = rk.run(echo, value, workflow_id=which, db=any_db)
    assert same_exactly(got, value), f"{got!r} != {value!r}"


def test_fold_survives_pickle_off(tmp_path) -> None:
    value = dt.datetime(2021, 10, 31, 2, 30, fold=1)
    with rk.SqliteStore(str(tmp_path / "off.db"), pickle="off") as store:
        try:
            got = rk.run(echo, value, workflow_id="fold-off", db=store)
        except rk.SerializationError:
            return  # refused: acceptable
    assert got.fold == 1 and got.timestamp() == value.timestamp()  # fails: fold 0, another instant
