"""How recorded values are encoded: JSON where exact, cloudpickle otherwise.

JSON is used only when decoding gives back an equal value of the same types
(str, int, float, bool, None, and lists and str-keyed dicts of them), so a
value reads the same live and on replay, and histories stay readable with any
SQLite tool. Everything else (tuples, dataclasses, datetimes...) is pickled.
"""

from __future__ import annotations

import base64
import json
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from .errors import ActivityFailed, SerializationError

FORMAT_VERSION = 1
JSON = "json"
PICKLE = "pickle"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
_loads = json.loads
_SCALARS = (str, int, float, bool, type(None))


def _json_exact(value: Any, depth: int = 0) -> bool:
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


def encode(value: Any, where: str | Callable[[], str] | None) -> tuple[str, str | bytes]:
    """Encode ``value``; ``where`` (or what it returns) names it in the error."""
    kind = type(value)
    if kind is int:
        return JSON, str(value)
    if value is None:
        return JSON, "null"
    if _json_exact(value):
        return JSON, _dumps(value)
    try:
        return PICKLE, cloudpickle.dumps(value)
    except Exception as exc:
        if callable(where):
            where = where()
        where = where or "value"
        path, culprit = _culprit(value, "")
        what = f"{path} is a value of type" if path else "a value of type"
        raise SerializationError(
            f"cannot record the {where}: {what} {type(culprit).__qualname__}, which can be neither "
            f"JSON-encoded nor pickled ({type(exc).__name__}: {exc}). Use plain data "
            "(str, numbers, lists, dicts) or a picklable object. Nothing was recorded."
        ) from exc


def _picklable(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
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


def decode(encoding: str, data: str | bytes) -> Any:
    if encoding == JSON:
        # Fast paths for the commonest payloads (replay decodes one per step).
        if type(data) is str:
            if data.isdigit():
                return int(data)
            if data[0] == '"' and "\\" not in data:
                return data[1:-1]
            if data == "null":
                return None
        return _loads(data)
    if encoding == PICKLE:
        return cloudpickle.loads(data)
    raise ValueError(f"unknown payload encoding {encoding!r}")


def encode_error(exc: BaseException) -> tuple[str, str]:
    """Record an exception as readable JSON, with a pickled copy when it pickles."""
    try:
        raw = cloudpickle.dumps(exc)
        cloudpickle.loads(raw)
        pickled: str | None = base64.b64encode(raw).decode()
    except Exception:
        pickled = None
    record = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "pickle": pickled,
    }
    return JSON, _dumps(record)


def error_record(encoding: str, data: str | bytes) -> dict[str, Any]:
    record = decode(encoding, data)
    assert isinstance(record, dict)
    return record


def decode_error(encoding: str, data: str | bytes) -> BaseException:
    """The recorded exception, rebuilt; :class:`ActivityFailed` if it did not pickle."""
    record = error_record(encoding, data)
    pickled = record.get("pickle")
    if pickled:
        try:
            exc = cloudpickle.loads(base64.b64decode(pickled))
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    return ActivityFailed(record["type"], record["message"], record["traceback"])
