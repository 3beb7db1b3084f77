"""Payload encoding: exact round trips, JSON where it is exact, typed JSON where that is, pickle otherwise
(tests/test_converters.py tries the typed values)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replaykit import payloads
from replaykit.errors import CorruptStoreError
from replaykit.keys import Keyring

codec = payloads.Codec(Keyring.ephemeral())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_json_values_round_trip_exactly_and_stay_readable(value: Any) -> None:
    encoding, data = codec.encode(value, "test value")
    assert encoding == payloads.JSON and isinstance(data, str)
    decoded = codec.decode(encoding, data)
    assert decoded == value and type(decoded) is type(value)


@given(st.one_of(st.dictionaries(st.integers(), st.text(), min_size=1), st.complex_numbers(allow_nan=False),
                 st.lists(st.complex_numbers(allow_nan=False), min_size=1)))
def test_values_neither_json_nor_typed_json_gives_back_are_pickled(value: Any) -> None:
    encoding, data = codec.encode(value, "test value")
    assert encoding == payloads.PICKLE
    assert codec.decode(encoding, data) == value


def test_errors_are_recorded_readably() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        encoding, data = codec.encode_error(exc)
    record = payloads.error_record(encoding, data)
    assert record["type"] == "builtins.KeyError" and record["message"] == "'missing'"
    rebuilt = codec.decode_error(encoding, data)
    assert isinstance(rebuilt, KeyError) and rebuilt.args == ("missing",)
    assert codec.encode(dt.date(2030, 1, 1), "x")[0] == "typed"
    assert codec.encode(complex(1, 2), "x")[0] == payloads.PICKLE


def test_replaykit_errors_survive_recording_with_their_type_and_details() -> None:
    import replaykit as rk

    errors = [rk.WorkflowFailed("child-1", "builtins.ValueError", "boom", "Traceback ..."),
              rk.ActivityFailed("x.Error", "broken", "Traceback ..."),
              rk.ActivityTimeoutError("heartbeat", "fetch", 1.5),
              rk.NonDeterminismError("w", 3, "timer", "activity a()", "flow.py:9"),
              rk.Cancelled("stop"), rk.TimedOut("late")]
    for error in errors:
        rebuilt = codec.decode_error(*codec.encode_error(error))
        assert type(rebuilt) is type(error) and str(rebuilt) == str(error)
        assert vars(rebuilt) == vars(error)


@given(st.one_of(st.text(max_size=12), st.from_regex(r'\A"[^"\\]{0,8}"?\Z'), st.from_regex(r"\A[0-9٠-٩²]{1,6}\Z")))
def test_a_json_payload_reads_as_json_reads_it_or_is_refused(text: str) -> None:
    """The fast paths of decode_json (digits, a plain string) read exactly what json.loads reads; before,
    '١٢' read as 12, '"open' as 'ope', and '²' raised a raw ValueError."""
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(CorruptStoreError):
            payloads.Codec.decode_json(text)
    else:  # compared by repr: NaN (which json.loads reads) is not equal to itself
        assert repr(payloads.Codec.decode_json(text)) == repr(expected)


def test_json_nested_too_deep_to_be_ours_is_refused() -> None:
    with pytest.raises(CorruptStoreError, match="not valid JSON"):
        payloads.Codec.decode_json("[" * 100_000)
