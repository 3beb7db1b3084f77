"""A declared class is recorded as typed JSON only if the JSON text recorded gives it back exactly:
the check structured the unstructured Python data instead, so data that JSON changes (bool or int
dict keys, tuple keys, None keys, an enum whose value is a tuple) passed it and then read back
changed, or not at all (found by a fuzz campaign). Such values are now pickled (signed), or refused
where pickles are off."""
from __future__ import annotations

import dataclasses
import enum
import typing

import pytest

import replaykit as rk

from helpers import same_exactly


@rk.json_type
@dataclasses.dataclass
class Flags:
    on: dict[bool, int]


@rk.json_type
@dataclasses.dataclass
class Loose:
    item: typing.Any


@rk.json_type
@dataclasses.dataclass
class Grid:
    cells: dict[tuple[int, int], int]


@rk.json_type
@dataclasses.dataclass
class Sparse:
    by_slot: dict[int | None, int]


@rk.json_type
class Point(enum.Enum):
    ORIGIN = (0, 0)


@rk.workflow(name="typed_fields.echo")
def echo(ctx: rk.Context, value: object) -> rk.Flow[object]:
    yield rk.sleep(0)
    return value


VALUES = {
    "bool-key": Flags({False: 1}),           # reads back {True: 1}: bool("false") is True
    "any-int-key": Loose({1: "a"}),          # reads back {'1': 'a'}
    "tuple-key": Grid({(0, 1): 5}),          # bare TypeError: keys must be str, int, float, bool or None
    "none-key": Sparse({None: 1}),           # recorded, then CorruptStoreError on every read
    "tuple-enum": Point.ORIGIN,              # recorded, then CorruptStoreError on every read
}


@pytest.mark.parametrize("which", list(VALUES))
def test_declared_class_reads_back_exactly_or_is_refused(any_db: str, which: str) -> None:
    value = VALUES[which]
    try:
        got = rk.run(echo, value, workflow_id=which, db=any_db)
    except rk.SerializationError:
        return  # refused before anything is recorded: acceptable
    assert same_exactly(got, value), f"{got!r} != {value!r}"


@pytest.mark.parametrize("which", list(VALUES))
def test_declared_class_pickle_off_reads_back_exactly_or_is_refused(tmp_path, which: str) -> None:
    value = VALUES[which]
    with rk.SqliteStore(str(tmp_path / "off.db"), pickle="off") as store:
        try:
            got = rk.run(echo, value, workflow_id=which, db=store)
        except rk.SerializationError:
            return
    assert same_exactly(got, value), f"{got!r} != {value!r}"
