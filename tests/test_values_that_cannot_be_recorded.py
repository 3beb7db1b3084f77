"""Values replaykit cannot record are refused with a SerializationError naming them, before anything is
recorded, never with a bare ValueError, RecursionError or TypeError (found by a fuzz campaign): an int
of more digits than Python turns into text, a value nested deeper than Python can encode, a value
that pickles but does not unpickle. A recorded pickle that no longer loads in the current code is a
SerializationError saying so, not the loader's own error. A run whose activity returned such a value
keeps its history as it was, and goes on once the activity returns something recordable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.store import open_store

HUGE = 10**5000  # CPython turns at most 4300 digits into text (sys.get_int_max_str_digits)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    inner = value
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return value


class Rejected(Exception):
    """Pickles, but its pickle calls __init__ with ``args`` alone: it does not load."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@rk.workflow(name="unrecordable.echo")
def echo(ctx: rk.Context, value: Any) -> rk.Flow[str]:
    yield rk.sleep(0)
    return "seen"


@pytest.mark.parametrize(("value", "said"), [(HUGE, "digits"), ([1, [HUGE]], "digits"),
                                             (Rejected("no", 7), "does not unpickle")],
                         ids=["huge-int", "huge-int-inside", "does-not-unpickle"])
def test_an_argument_that_cannot_be_recorded_is_refused_and_nothing_recorded(any_db: str, value: Any,
                                                                             said: str) -> None:
    with pytest.raises(rk.SerializationError, match=said):
        rk.run(echo, value, workflow_id="r", db=any_db)
    with open_store(any_db) as store:
        assert store.info("r") is None


@pytest.mark.parametrize(("value", "said"), [(HUGE, "digits")], ids=["huge-int"])
def test_a_signal_payload_that_cannot_be_recorded_is_refused(any_db: str, value: Any, said: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(echo, 1, workflow_id="s").result(timeout=20)
        with pytest.raises(rk.SerializationError, match=said):
            rk.send_signal(any_db, "s", "go", value)
        assert engine.store.next_signal("s", "go") is None


RETURNS: dict[str, Any] = {}


@rk.activity(name="unrecordable.compute")
def compute() -> Any:
    return RETURNS["value"]


@rk.workflow(name="unrecordable.computes")
def computes(ctx: rk.Context) -> rk.Flow[str]:
    value = yield compute()
    return type(value).__name__


@pytest.mark.parametrize(("value", "said"), [(HUGE, "digits"), (Rejected("no", 7), "does not unpickle")],
                         ids=["huge-int", "does-not-unpickle"])
def test_an_activity_result_that_cannot_be_recorded_leaves_the_run_to_go_on(any_db: str, value: Any,
                                                                           said: str) -> None:
    RETURNS["value"] = value
    with pytest.raises(rk.SerializationError, match=f"(?s)compute.*{said}"):
        rk.run(computes, workflow_id="a", db=any_db)
    with open_store(any_db) as store:
        assert [e.kind for e in store.events("a")] == ["start"]  # the result was not recorded
    RETURNS["value"] = 7  # the activity fixed
    assert rk.run(computes, workflow_id="a", db=any_db) == "int"


DEEP = nested(1500)  # past Python 3.11's recursion limit; 3.13 pickles it (its pickle is not recursive Python)


def test_a_value_too_deep_for_python_is_refused_or_recorded_never_a_bare_recursion_error(any_db: str) -> None:
    try:
        assert rk.run(echo, DEEP, workflow_id="deep", db=any_db) == "seen"
    except rk.SerializationError as refused:
        assert "nested too deeply" in str(refused)
        with open_store(any_db) as store:
            assert store.info("deep") is None
    RETURNS["value"] = DEEP
    try:
        assert rk.run(computes, workflow_id="deep-result", db=any_db) == "list"
    except rk.SerializationError as refused:
        assert "nested too deeply" in str(refused)


class Receipt(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


@rk.workflow(name="unrecordable.receipt")
def receipt(ctx: rk.Context) -> rk.Flow[Receipt]:
    yield rk.sleep(0)
    return Receipt("r-1")


def test_a_recorded_pickle_that_no_longer_loads_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "s.db")
    assert str(rk.run(receipt, workflow_id="p", db=db)) == "r-1"

    def changed(self: Receipt, message: str, code: int) -> None:  # the class changed since: a new argument
        Exception.__init__(self, message)

    monkeypatch.setattr(Receipt, "__init__", changed)
    with pytest.raises(rk.SerializationError, match="does not load in this code"):
        rk.run(receipt, workflow_id="p", db=db)
