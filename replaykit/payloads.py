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
import traceback
from collections.abc import Callable
from typing import Any

from . import converters
from .errors import ActivityFailed, CorruptStoreError, PayloadAuthenticationError, ReplayKitError, SerializationError
from .keys import Keyring, signed_body

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


def _chain_of(exc: BaseException) -> list[tuple[BaseException, bool, bool]]:
    """What an exception's own pickle leaves out: the exceptions it was raised from (``__cause__``, else
    ``__context__``), each as ``(copy, is_cause, suppress_context)``; a copy that does not pickle and
    load back is an :class:`ActivityFailed` standing in for it."""
    chain: list[tuple[BaseException, bool, bool]] = []
    seen, link = {id(exc)}, exc
    while len(chain) < 32:
        nxt, is_cause = (link.__cause__, True) if link.__cause__ is not None else (link.__context__, False)
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        copy = nxt if _pickled_back(nxt) is not None else ActivityFailed(*_readable_parts(nxt))
        chain.append((copy, is_cause, link.__suppress_context__))
        link = nxt
    return chain


def _link(error: BaseException, chain: list[Any]) -> None:
    """Hang the recorded chain (:func:`_chain_of`) back on ``error``."""
    link = error
    for copy, is_cause, suppress in chain:
        if is_cause:
            link.__cause__ = copy
        else:
            link.__context__ = copy
        link.__suppress_context__ = bool(suppress)
        link = copy


def _readable_parts(exc: BaseException) -> tuple[str, str, str]:
    """An exception's type name, message and traceback, as recorded for reading."""
    try:
        message = str(exc)
    except Exception:  # its __str__ raises: the traceback says so too
        message = f"<{type(exc).__qualname__}: str() failed>"
    return (f"{type(exc).__module__}.{type(exc).__qualname__}", _readable(message),
            _readable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))


def _pickled_back(value: Any) -> bytes | None:
    """``value``'s pickle, if it loads back (else ``None``)."""
    try:
        raw: bytes = _pickler().dumps(value)
        _pickler().loads(raw)
    except Exception:
        return None
    return raw


def _holds_an_exception(value: Any, depth: int = 0) -> bool:
    """Is ``value`` an exception, or does a list, tuple, set or dict of it (a few levels down) hold one?"""
    if isinstance(value, BaseException):
        return True
    if depth > 8 or type(value) not in (list, tuple, set, frozenset, dict):
        return False
    items = value.values() if type(value) is dict else value
    return any(_holds_an_exception(item, depth + 1) for item in items)


def _readable(text: str) -> str:
    """An error's text as it can be recorded: a surrogate pair held as two characters joined into the one
    they stand for (the text is for reading; an exact copy rides in the pickle)."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


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
            data = _pickler().dumps(value)
        except RecursionError:
            raise
        except Exception as exc:
            path, culprit = _culprit(value, "")
            what = f"{path} is a value of type" if path else "a value of type"
            raise SerializationError(
                f"cannot record the {_named(where)}: {what} {type(culprit).__qualname__}, which can be neither "
                f"JSON-encoded nor pickled ({type(exc).__name__}: {exc}). Use plain data "
                "(str, numbers, lists, dicts) or a picklable object. Nothing was recorded."
            ) from exc
        try:  # an exception pickles its args alone: one whose __init__ takes others would fail every read. (Other
            # values are not loaded here: loading runs their reconstructors, side effects and all.)
            if _holds_an_exception(value):
                _pickler().loads(data)
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
                return _pickler().loads(verified)
            except Exception as exc:  # signed by this store, but its class is gone or changed in this code
                raise SerializationError(
                    f"cannot read the {_named(where)}: its pickle does not load in this code ({type(exc).__name__}: "
                    f"{exc}). The class it holds was removed, renamed or changed since it was recorded: put it "
                    "back as it was to read this run. Nothing was changed.") from exc
        raise CorruptStoreError(f"the {_named(where)} has an unknown encoding {encoding!r} (or a payload of the "
                                f"wrong kind, {type(data).__name__}): the store is damaged")

    def encode_error(self, exc: BaseException) -> tuple[str, str]:
        """Record an exception as readable JSON, with a signed pickled copy when it pickles, and its
        cause and context (which its own pickle leaves out) when they do."""
        pickled = links = None
        if self.pickle != "off":
            pickled = self._signed_copy(exc)
            chain = _chain_of(exc)
            if pickled is not None and chain:
                links = self._signed_copy(chain)
        kind, message, trace = _readable_parts(exc)
        record = {"type": kind, "message": message, "traceback": trace, "pickle": pickled}
        if links is not None:  # a key of its own: a reader of 0.1 finds the exception where it always was
            record["links"] = links
        return JSON, _dumps(record)

    def _signed_copy(self, value: Any) -> str | None:
        """``value`` pickled, signed and in base64, if it pickles and loads back (else ``None``)."""
        raw = _pickled_back(value)
        return None if raw is None else base64.b64encode(self.keys.sign(raw, "exception")).decode()

    def _loaded(self, text: Any, where: Where) -> Any:
        """A signed copy read back; ``None`` if it no longer loads (damage and forgery are raised)."""
        try:
            blob = base64.b64decode(text, validate=True)
        except (ValueError, TypeError) as exc:
            raise CorruptStoreError(f"the {_named(where, 'error')} has a damaged pickled copy ({exc})") from exc
        raw = self.keys.verify(blob, _named(where, "error"))
        try:
            return _pickler().loads(raw)
        except Exception:
            return None

    def decode_error(self, encoding: str, data: str | bytes, where: Where = None) -> BaseException:
        """The recorded exception, rebuilt from its pickle if signed (with its cause and context, and its
        recorded traceback as a note); :class:`ActivityFailed` if it did not pickle. The workflow gets
        this copy live as on replay: the same exception either way."""
        record = error_record(encoding, data, where)
        if record.get("pickle") and self.pickle != "off":
            rebuilt = self._loaded(record["pickle"], where)  # None: its class is gone from the code now
            if isinstance(rebuilt, BaseException):
                links = self._loaded(record["links"], where) if record.get("links") else None
                _link(rebuilt, links if isinstance(links, list) else [])
                # replaykit's own errors say what they need in their message; notes are Python 3.11's
                if not isinstance(rebuilt, ReplayKitError) and hasattr(rebuilt, "add_note"):
                    rebuilt.add_note(f"(where it was raised, as recorded)\n{record['traceback']}".rstrip())
                return rebuilt
        return ActivityFailed(str(record["type"]), str(record["message"]), str(record["traceback"]))


def _pickler() -> Any:
    """cloudpickle, loaded with the first value that needs it: most runs never pickle."""
    import cloudpickle  # type: ignore[import-untyped]

    return cloudpickle


def _picklable(value: Any) -> bool:
    try:
        _pickler().dumps(value)
        return True
    except Exception:
        return False


def _culprit(value: Any, path: str) -> tuple[str, Any]:
    """Descend into containers to the innermost value that does not pickle, and its path."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    else:
        return path, value
    for key, item in items:
        if not _picklable(item):
            step = key if not path and isinstance(key, str) and key.isidentifier() else f"[{key!r}]"
            return _culprit(item, path + step)
    return path, value


def error_record(encoding: str, data: str | bytes, where: Where = None) -> dict[str, Any]:
    """A recorded exception's readable part (type, message, traceback); never unpickles anything."""
    try:
        record = _loads(data) if encoding == JSON else None
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict) or not {"type", "message", "traceback"} <= record.keys():
        raise CorruptStoreError(f"the {_named(where, 'error')} is not a recorded exception: the store is damaged")
    return record


_CONTAINERS = {"EMPTY_LIST": "list", "EMPTY_DICT": "dict", "EMPTY_SET": "set", "EMPTY_TUPLE": "tuple"}


def pickled_type(blob: bytes) -> str | None:
    """The type a (signed) pickle holds, read from its first opcodes and never unpickled, for showing
    it (``None``: it does not say plainly). A hint only: whoever wrote the store chose those bytes."""
    import pickletools

    strings: list[str] = []
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(signed_body(blob))):
            if count > 64:
                return None
            if op.name in _CONTAINERS and not strings:
                return _CONTAINERS[op.name]
            if op.name in ("GLOBAL", "STACK_GLOBAL"):
                name = str(arg).replace(" ", ".") if op.name == "GLOBAL" else ".".join(strings[-2:])
                return None if name.startswith("cloudpickle.") or "." not in name else name  # by value: no name
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not a pickle (damage): nothing to say
        return None
    return None
