"""How recorded values are encoded: JSON where exact, cloudpickle otherwise.

JSON is used only when decoding gives back an equal value of the same types
(str, int, float, bool, None, and lists and str-keyed dicts of them), so a
value reads the same live and on replay, and histories stay readable with any
SQLite tool. Typed values (tuples, datetimes, dataclasses...) are recorded as
JSON with their type (:mod:`replaykit.converters`) where that gives them back
exactly; what remains is pickled, and signed: a store's :class:`Codec` unpickles
only what its keys signed.
"""

from __future__ import annotations

import base64
import json
import re
import reprlib
import sys
from collections.abc import Callable
from typing import Any

from . import converters, error_records, pickling
from .errors import CorruptStoreError, PayloadAuthenticationError, SerializationError
from .keys import Keyring
from .pickling import holds_an_exception, pickled_back, pickler

FORMAT_VERSION = 1
JSON = "json"
PICKLE = "pickle"
PICKLE_MODES = ("signed", "off")

_loads = json.loads
_dumps_utf8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(value: Any) -> str:
    """JSON text, non-ASCII characters as themselves; but a lone surrogate (as in a file name decoded
    with ``surrogateescape``) is escaped (``"\\udcff"``): UTF-8 cannot hold it, and the escape reads
    back as the same text."""
    text = _dumps_utf8(value)
    if text.isascii():
        return text
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        escaped = _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
    if _dumps_utf8(_loads(escaped)) != text:  # a high then a low surrogate: it would read back as one character
        raise SerializationError(
            "cannot record text holding a surrogate pair as two characters (such as '\\ud83d\\ude00'): JSON "
            "reads it back as the one character they stand for. Record the text itself (text.encode('utf-16', "
            "'surrogatepass').decode('utf-16')), or its bytes. Nothing was recorded.")
    return escaped


to_json = _dumps  # JSON text of plain data, as recorded (no pickle, no key needed)


def _json_data(value: Any, depth: int = 0) -> bool:
    """Is ``value`` JSON data: text, numbers (their subclasses too, enums among them: recorded as their JSON
    value), bool, None, and lists and str-keyed dicts of them, at most 100 levels deep?"""
    if value is None or isinstance(value, (str, int, float)):
        return True
    if depth > 100:
        return False
    if type(value) is list:
        return all(_json_data(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _json_data(v, depth + 1) for k, v in value.items())
    return False


def plain_json(value: Any, what: str) -> Any:
    """``value`` as JSON reads it back (a copy: changing ``value`` later changes nothing; an enum member is
    its value); refused (``what`` names it) unless it is JSON data (see :func:`_json_data`)."""
    try:
        if _json_data(value):
            return _loads(_dumps(value))
    except (ValueError, RecursionError) as exc:  # an int of too many digits; nesting too deep
        raise SerializationError(f"{what} cannot be recorded: {exc}. Nothing was recorded.") from exc
    raise SerializationError(
        f"{what} must be JSON data (text, numbers, bool, None, lists and str-keyed dicts of them); "
        f"{reprlib.repr(value)} is not (a {type(value).__name__} or something inside it). "
        "Convert it (a datetime with .isoformat(), a tuple to a list, a key to str). Nothing was recorded.")


_SCALARS = (str, int, float, bool, type(None))


def _json_exact(value: Any, depth: int = 0) -> bool:
    """Is ``value`` plain JSON data (at most 100 levels deep) that reads back as itself?"""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 100:
        return False
    if kind is list:
        return all(_json_exact(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and _json_exact(v, depth + 1) for k, v in value.items())
    return False


Where = str | Callable[[], str] | None  # names a value in an error: text, or a function making it


def _named(where: Where, default: str = "value") -> str:
    return (where() if callable(where) else where) or default


class Codec:
    """Encodes and decodes the values of one store: JSON where exact, otherwise a pickle signed
    with the store's keys (``pickle="signed"``), or never pickled (``pickle="off"``). A pickle
    read back is unpickled only once its signature checks out (:mod:`replaykit.keys`)."""

    def __init__(self, keys: Keyring, pickle: str = "signed") -> None:
        if pickle not in PICKLE_MODES:
            raise ValueError(f"pickle= must be one of {', '.join(map(repr, PICKLE_MODES))}; got {pickle!r}")
        self.keys = keys
        self.pickle = pickle

    def encode(self, value: Any, where: Where) -> tuple[str, str | bytes]:
        """Encode ``value``; ``where`` (or what it returns) names it in the error."""
        try:
            return self._encode(value, where)
        except SerializationError:
            raise
        except RecursionError as exc:
            raise SerializationError(
                f"cannot record the {_named(where)}: it is nested too deeply for Python to encode (more than "
                f"{sys.getrecursionlimit()} levels). Record it flatter. Nothing was recorded.") from exc
        except ValueError as exc:  # such as an int of more digits than Python turns into text
            advice = ("Record such a number as bytes (n.to_bytes(...)), or raise the limit in every process of the "
                      "store." if "digits" in str(exc) else "Record plain data, or a value that encodes.")
            raise SerializationError(
                f"cannot record the {_named(where)}: {exc} {advice} Nothing was recorded.") from exc

    def _encode(self, value: Any, where: Where) -> tuple[str, str | bytes]:
        kind = type(value)
        if kind is int:
            return JSON, str(value)
        if value is None:
            return JSON, "null"
        if _json_exact(value):
            return JSON, _dumps(value)
        try:
            descriptor, data = converters.encode(value, declared_only=self.pickle != "off")
            return converters.TYPED, _dumps({"t": descriptor, "v": data})
        except converters.Unconvertible as exc:
            culprit = exc
        if self.pickle == "off":
            raise SerializationError(
                f"cannot record the {_named(where)}: {culprit} cannot be recorded as JSON exactly, and this store "
                "records no pickles (pickle='off'). Record plain data, dataclasses, attrs classes, enums, msgspec "
                "structs or pydantic models (with exact field annotations), datetimes, UUIDs, Decimals, bytes, "
                "tuples and sets of them; or allow signed pickles (pickle='signed'). Nothing was recorded.")
        try:
            data = pickler().dumps(value)
        except RecursionError:
            raise
        except Exception as exc:
            path, culprit = pickling.culprit(value, "")
            what = f"{path} is a value of type" if path else "a value of type"
            raise SerializationError(
                f"cannot record the {_named(where)}: {what} {type(culprit).__qualname__}, which can be neither "
                f"JSON-encoded nor pickled ({type(exc).__name__}: {exc}). Use plain data "
                "(str, numbers, lists, dicts) or a picklable object. Nothing was recorded."
            ) from exc
        try:  # an exception pickles its args alone: one whose __init__ takes others would fail every read. (Other
            # values are not loaded here: loading runs their reconstructors, side effects and all.)
            if holds_an_exception(value):
                pickler().loads(data)
        except Exception as exc:
            raise SerializationError(
                f"cannot record the {_named(where)}: a value of type {kind.__qualname__} pickles but does not unpickle "
                f"({type(exc).__name__}: {exc}), so it could never be read back. Give the class a __reduce__ (or "
                "call super().__init__ with all its arguments, for an exception), or record plain data. Nothing was "
                "recorded.") from exc
        return PICKLE, self.keys.sign(data, _named(where))

    @staticmethod
    def decode_json(data: str | bytes, where: Where = None) -> Any:
        """A JSON payload's value (no key needed)."""
        if type(data) is str:
            # Fast paths for the commonest payloads (replay decodes one per step), for exactly the
            # texts json.loads reads the same way (ASCII digits without a leading zero; a string
            # with no escape, quote or control character inside).
            if data.isdigit() and data.isascii() and (data[0] != "0" or len(data) == 1):
                return int(data)
            if (len(data) > 1 and data[0] == '"' == data[-1] and "\\" not in data and '"' not in data[1:-1]
                    and data.isprintable()):
                return data[1:-1]
            if data == "null":
                return None
        try:
            return _loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to be ours
            raise CorruptStoreError(f"the {_named(where)} is not valid JSON ({exc}): the store is damaged") from exc

    def decode(self, encoding: str, data: str | bytes, where: Where = None) -> Any:
        """The value recorded as ``data``; a pickle only if its signature checks out."""
        if encoding == JSON and type(data) is str:
            return self.decode_json(data, where)
        if encoding == converters.TYPED and type(data) is str:
            return converters.decode(self.decode_json(data, where), _named(where))
        if encoding == PICKLE and isinstance(data, (bytes, bytearray, memoryview)):
            if self.pickle == "off":
                raise PayloadAuthenticationError(
                    f"the {_named(where)} is a pickled value, and this store was opened with pickle='off': it was "
                    "not unpickled. Open it with pickle='signed' (and its secret) to read it.")
            verified = self.keys.verify(bytes(data), _named(where))
            try:
                return pickler().loads(verified)
            except Exception as exc:  # signed by this store, but its class is gone or changed in this code
                raise SerializationError(
                    f"cannot read the {_named(where)}: its pickle does not load in this code ({type(exc).__name__}: "
                    f"{exc}). The class it holds was removed, renamed or changed since it was recorded: put it "
                    "back as it was to read this run. Nothing was changed.") from exc
        raise CorruptStoreError(f"the {_named(where)} has an unknown encoding {encoding!r} (or a payload of the "
                                f"wrong kind, {type(data).__name__}): the store is damaged")

    def encode_error(self, exc: BaseException) -> tuple[str, str]:
        """Record an exception as readable JSON, with a signed pickled copy when it pickles, and its
        cause and context (which its own pickle leaves out) when they do (:mod:`replaykit.error_records`)."""
        return JSON, _dumps(error_records.record_of(exc, None if self.pickle == "off" else self._signed_copy))

    def _signed_copy(self, value: Any) -> str | None:
        """``value`` pickled, signed and in base64, if it pickles and loads back (else ``None``)."""
        raw = pickled_back(value)
        return None if raw is None else base64.b64encode(self.keys.sign(raw, "exception")).decode()

    def _loaded(self, text: Any, where: Where) -> Any:
        """A signed copy read back; ``None`` if it no longer loads (damage and forgery are raised)."""
        try:
            blob = base64.b64decode(text, validate=True)
        except (ValueError, TypeError) as exc:
            raise CorruptStoreError(f"the {_named(where, 'error')} has a damaged pickled copy ({exc})") from exc
        raw = self.keys.verify(blob, _named(where, "error"))
        try:
            return pickler().loads(raw)
        except Exception:
            return None

    def decode_error(self, encoding: str, data: str | bytes, where: Where = None) -> BaseException:
        """The recorded exception, rebuilt from its pickle if signed (with its cause and context, and its
        recorded traceback as a note); :class:`ActivityFailed` if it did not pickle. The workflow gets
        this copy live as on replay: the same exception either way."""
        record = error_record(encoding, data, where)
        return error_records.rebuilt(record, None if self.pickle == "off" else lambda text: self._loaded(text, where))


def error_record(encoding: str, data: str | bytes, where: Where = None) -> dict[str, Any]:
    """A recorded exception's readable part (type, message, traceback); never unpickles anything."""
    try:
        record = _loads(data) if encoding == JSON else None
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict) or not {"type", "message", "traceback"} <= record.keys():
        raise CorruptStoreError(f"the {_named(where, 'error')} is not a recorded exception: the store is damaged")
    return record
