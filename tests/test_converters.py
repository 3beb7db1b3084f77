"""Typed values as readable JSON (replaykit/converters.py): exact round trips, readable rows, no
pickle and no import when reading, and a run recorded with pickle="off" resumed in a fresh process
after SIGKILL from the annotations alone."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import replaykit as rk
from replaykit import converters
from replaykit.keys import Keyring
from replaykit.payloads import Codec

from conftest import PYTHON

signed, off = Codec(Keyring.ephemeral()), Codec(Keyring.ephemeral(), pickle="off")


class Size(enum.IntEnum):
    S = 1
    L = 3


@rk.json_type
@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    size: Size
    price: decimal.Decimal


@rk.json_type
@attrs.frozen
class Order:
    id: uuid.UUID
    lines: tuple[Line, ...]
    placed: dt.datetime
    notes: dict[str, dt.date]
    blob: bytes


def exact(a: Any, b: Any) -> bool:
    return converters._exact(a, b)


def _first_fold(moment: Any) -> Any:
    """The first of two equal local times: ISO text holds no fold (the second is pickled, or refused)."""
    return moment.replace(fold=0)


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False),
    st.datetimes(timezones=st.none() | st.just(dt.timezone.utc) | st.builds(
        dt.timezone, st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timedelta(minutes=m)))).map(_first_fold),
    st.dates(), st.times().map(_first_fold), st.timedeltas(), st.uuids(), st.binary(max_size=16),
    st.decimals(allow_nan=False, allow_infinity=False), st.sampled_from(Size))
lines = st.builds(Line, st.text(max_size=5), st.sampled_from(Size), st.decimals(allow_nan=False, allow_infinity=False))
orders = st.builds(Order, st.uuids(), st.lists(lines, max_size=3).map(tuple), st.datetimes().map(_first_fold),
                   st.dictionaries(st.text(max_size=4), st.dates(), max_size=2), st.binary(max_size=8))
typed_values = st.recursive(
    leaves | lines | orders,
    lambda inner: (st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
                   | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                   | st.frozensets(st.integers(), max_size=3)),
    max_leaves=10)


@given(typed_values)
def test_typed_values_come_back_exactly_with_either_mode(value: Any) -> None:
    for codec in (signed, off):
        encoding, data = codec.encode(value, "value")
        assert encoding in ("json", converters.TYPED), encoding  # never a pickle: all of it is declared
        assert isinstance(data, str)
        json.loads(data)  # readable JSON
        assert exact(codec.decode(encoding, data), value)


def test_a_value_json_cannot_give_back_is_pickled_or_refused_by_its_path() -> None:
    @attrs.frozen
    class Loose:
        anything: object  # an annotation that says nothing: read back, it could not be exact

    value = {"ok": Line("a", Size.S, decimal.Decimal("1")), "bad": [1, Loose(2j)]}
    assert signed.encode(value, "value")[0] == "pickle"
    refused = r"result of activity 'x': \['bad'\]\[1\] \(.*Loose\).*pickle='off'"
    with pytest.raises(rk.SerializationError, match=refused):
        off.encode(value, "result of activity 'x'")


def test_an_undeclared_class_is_pickled_when_pickles_are_allowed_and_typed_when_not() -> None:
    class Mood(enum.Enum):  # named by no annotation and no rk.json_type
        GOOD = "good"

    assert signed.encode(Mood.GOOD, "v")[0] == "pickle"  # a later process might not know it: a pickle does
    encoding, data = off.encode(Mood.GOOD, "v")
    assert encoding == converters.TYPED and off.decode(encoding, data) is Mood.GOOD


def test_reading_a_class_this_process_does_not_know_imports_nothing() -> None:
    record = json.dumps({"t": ["class", "replaykit_test_never_imported:Evil"], "v": {}})
    before = set(sys.modules)
    with pytest.raises(rk.UnknownTypeError, match="replaykit_test_never_imported.Evil.*rk.json_type"):
        off.decode(converters.TYPED, record, "the result of activity 'x'")
    assert set(sys.modules) == before


@pytest.mark.parametrize("record", ['{"t": ["tuple", ["j"]], "v": [1, 2]}', '{"t": "nonsense", "v": 1}',
                                    '{"t": ["class"], "v": 1}', '{"v": 1}', '[1]'])
def test_a_damaged_typed_record_is_a_corrupt_store(record: str) -> None:
    with pytest.raises(rk.CorruptStoreError):
        off.decode(converters.TYPED, record, "value")


def test_the_classes_a_value_holds_still_pickle_after_it_is_converted() -> None:
    """The converter keeps its caches to itself: a class it converted still pickles by value."""
    import cloudpickle  # type: ignore[import-untyped]

    order = Order(uuid.uuid4(), (Line("a", Size.L, decimal.Decimal("2.50")),), dt.datetime(2030, 1, 1), {}, b"")
    off.decode(*off.encode(order, "v"))
    assert cloudpickle.loads(cloudpickle.dumps(order)) == order


APP = '''
import dataclasses, datetime as dt, decimal, enum, os, signal, sys
import replaykit as rk


class Tier(enum.Enum):
    GOLD = "gold"


@dataclasses.dataclass(frozen=True)
class Quote:  # named only by the annotation below: no rk.json_type
    tier: Tier
    at: dt.datetime
    amount: decimal.Decimal
    route: tuple[str, ...]
    token: bytes


@rk.activity
def quote(n: int) -> Quote:
    if n == 3 and sys.argv[3] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # quotes 1 and 2 are recorded; 3 has not run
    with open(sys.argv[2], "a") as ledger:
        ledger.write(f"quote {n}\\n")
    return Quote(Tier.GOLD, dt.datetime(2030, 1, n), decimal.Decimal("10.50") * n, ("a", "b"), b"\\x00" * n)


@rk.workflow(name="quotes")
def quotes(ctx, n):
    got = []
    for i in range(1, n + 1):
        got.append((yield quote(i)))
    return [q.amount for q in got] == [decimal.Decimal("10.50") * i for i in range(1, n + 1)] and \\
        all(type(q) is Quote and type(q.tier) is Tier for q in got)


with rk.Engine(sys.argv[1], pickle="off", activity_threads=0) as engine:
    print(engine.start(quotes, 3, workflow_id="q").result(timeout=60))
'''


def test_a_run_recorded_without_pickles_resumes_after_sigkill_from_annotations(tmp_path: Path) -> None:
    app, db, ledger = tmp_path / "app.py", str(tmp_path / "s.db"), str(tmp_path / "ledger")
    app.write_text(APP)
    killed = subprocess.run([PYTHON, str(app), db, ledger, "die"], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = subprocess.run([PYTHON, str(app), db, ledger, "live"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert Path(ledger).read_text().split("\n")[:-1] == ["quote 1", "quote 2", "quote 3"]  # none ran again
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT encoding, payload FROM events WHERE kind = 'activity' ORDER BY seq").fetchall()
    conn.close()
    assert {encoding for encoding, _ in rows} == {converters.TYPED}
    first = json.loads(rows[0][1])  # readable with any SQLite tool
    assert first["t"] == ["class", "__main__:Quote"]
    assert first["v"] == {"tier": "gold", "at": "2030-01-01T00:00:00", "amount": "10.50", "route": ["a", "b"],
                          "token": first["v"]["token"]}
    assert os.path.exists(db)
