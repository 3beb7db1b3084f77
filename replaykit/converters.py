"""Typed values as readable JSON: dataclasses, attrs classes, enums, msgspec structs and pydantic
models, datetimes, UUIDs, Decimals, bytes, tuples and sets, recorded with their type and read back
exactly (an equal value of the same types, all the way down), without pickle.

A recorded value is ``{"t": <descriptor>, "v": <JSON>}``. A descriptor is ``"j"`` (plain JSON as
it is), the name of a standard type (``"datetime"``, ``"date"``, ``"time"``, ``"timedelta"``,
``"uuid"``, ``"decimal"``, ``"bytes"``), ``["class", "module:QualName"]``, or a container with its
items' descriptors: ``["tuple" | "list" | "set" | "frozenset", [d, ...]]`` and ``["dict", {key: d}]``,
or, when every item has the same one, ``["tuple*" | "list*" | "set*" | "frozenset*" | "dict*", d]``.
cattrs converts the leaves and the classes (by their annotations); pydantic models and msgspec
structs convert themselves.

Reading never imports anything: a class name decodes only to a class this process knows, one
decorated with :func:`json_type`, one it has recorded, or one named in the annotations of a
registered workflow or an activity. cattrs is imported on the first typed value.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import sys
import typing
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import CorruptStoreError, SerializationError

TYPED = "typed"  # the encoding of a typed value (beside "json" and "pickle")
T = TypeVar("T", bound=type)

_LEAVES: dict[type, str] = {dt.datetime: "datetime", dt.date: "date", dt.time: "time", dt.timedelta: "timedelta",
                            uuid.UUID: "uuid", decimal.Decimal: "decimal", bytes: "bytes"}
_LEAF_TYPES = {name: kind for kind, name in _LEAVES.items()}
_CONTAINERS: dict[str, Callable[[Any], Any]] = {"tuple": tuple, "list": list, "set": set, "frozenset": frozenset}
_PLAIN = (str, int, float, bool, type(None))
_declared: dict[str, type] = {}  # "module:QualName" -> a class declared (json_type) or named in annotations
_known: dict[str, type] = {}  # and the classes this process recorded
_annotated: list[Callable[..., Any]] = []  # workflow and activity functions: their annotations name classes


class UnknownTypeError(SerializationError):
    """A recorded value names a class this process does not know; nothing was imported for it."""


class Unconvertible(Exception):
    """A value (at ``path``) that typed JSON cannot give back exactly: it needs pickle."""

    def __init__(self, path: str, value: Any, why: str = "") -> None:
        super().__init__(f"{path or 'the value'} ({type(value).__qualname__}{': ' + why if why else ''})")
        self.path, self.value = path, value


def json_type(cls: T) -> T:
    """Let values of ``cls`` (a dataclass, attrs class, enum, msgspec struct or pydantic model) be
    read back from typed JSON in this process. Use it as a class decorator. Classes named in the
    annotations of workflows and activities, and classes this process records, need not be."""
    if _kind(cls) is None:
        raise TypeError(f"rk.json_type: {cls!r} is not a dataclass, attrs class, enum, msgspec struct or "
                        "pydantic model")
    _learn(cls, set())  # and the classes its fields name
    return cls


def note_annotations(fn: Callable[..., Any]) -> None:
    """Remember a workflow's or an activity's function: its annotations may name recorded classes."""
    _annotated.append(fn)


def encode(value: Any, declared_only: bool) -> tuple[Any, Any]:
    """``(descriptor, JSON data)`` of ``value``, exact; :class:`Unconvertible` if it cannot be (or,
    if ``declared_only``, if it holds a class neither declared nor named in an annotation: a process
    reading it later might not know it, where a pickle would do)."""
    if not _typable(value, declared_only, 0):  # a cheap look first: failing late would convert for nothing
        raise Unconvertible("", value)
    return _encode(value, "", declared_only)


def _typable(v: Any, declared_only: bool, depth: int) -> bool:
    """Could ``v`` be typed JSON, by the types it holds (exactness is checked when it is converted)?"""
    kind = type(v)
    if kind in _PLAIN or _real_class(kind) in _LEAVES:
        return True
    if depth > 100:
        return False
    if kind in (list, tuple, set, frozenset):
        return all(_typable(x, declared_only, depth + 1) for x in v)
    if kind is dict:
        return all(type(k) is str and _typable(x, declared_only, depth + 1) for k, x in v.items())
    return _kind(kind) is not None and (not declared_only or _is_declared(kind))


def decode(record: Any, where: str) -> Any:
    """The value of a typed record ``{"t": descriptor, "v": data}`` (``where`` names it in errors)."""
    if not isinstance(record, dict) or record.keys() != {"t", "v"}:
        raise CorruptStoreError(f"the {where} is not a typed value record: the store is damaged")
    try:
        return _decode(record["t"], record["v"], where)
    except (UnknownTypeError, CorruptStoreError):
        raise
    except Exception as exc:  # a descriptor or data that does not fit: damage
        raise CorruptStoreError(f"the {where} does not read back as its recorded type ({exc}): the store is "
                                "damaged") from exc


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _kind(cls: type) -> str | None:
    """Which kind of convertible class ``cls`` is, if any."""
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return "enum"
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        return "dataclass"
    if hasattr(cls, "__attrs_attrs__"):
        return "attrs"
    for module, base, kind in (("msgspec", "Struct", "struct"), ("pydantic", "BaseModel", "pydantic")):
        parent = getattr(sys.modules.get(module), base, None)
        if parent is not None and isinstance(cls, type) and issubclass(cls, parent):
            return kind
    return None


_converter: Any = None


def _cattrs() -> Any:
    """The converter (made on the first typed value: import replaykit stays light). It keeps its
    caches to itself: nothing is stored on the user's classes, which still pickle."""
    global _converter
    if _converter is None:
        from cattrs.preconf.json import make_converter

        conv = make_converter()
        for kind, out, back in (
                (decimal.Decimal, str, decimal.Decimal), (uuid.UUID, str, uuid.UUID),
                (bytes, lambda b: base64.b64encode(b).decode(), base64.b64decode),  # base64: C, not base85's Python
                (dt.time, dt.time.isoformat, dt.time.fromisoformat),
                (dt.timedelta, lambda d: [d.days, d.seconds, d.microseconds], lambda x: dt.timedelta(*x))):
            conv.register_unstructure_hook(kind, out)
            conv.register_structure_hook(kind, lambda x, _, back=back: back(x))
        _converter = conv
    return _converter


def _to_json(value: Any) -> Any:
    kind = _kind(type(value))
    if kind == "pydantic":
        return value.model_dump(mode="json")
    if kind == "struct":
        return sys.modules["msgspec"].to_builtins(value)
    return _cattrs().unstructure(value)


def _from_json(data: Any, cls: type) -> Any:
    kind = _kind(cls)
    if kind == "pydantic":
        return cls.model_validate(data)  # type: ignore[attr-defined]
    if kind == "struct":
        return sys.modules["msgspec"].convert(data, cls)
    return _cattrs().structure(data, cls)


def _encode(v: Any, path: str, declared_only: bool) -> tuple[Any, Any]:
    kind = type(v)
    if kind in _PLAIN:
        if kind is float and v != v:  # NaN is not equal to itself: it could not be checked exact
            raise Unconvertible(path, v)
        return "j", v
    if kind in (list, tuple, set, frozenset):
        ordered = sorted(v, key=repr) if kind in (set, frozenset) else v
        items = [_encode(x, f"{path}[{i}]", declared_only) for i, x in enumerate(ordered)]
        return _container(kind.__name__, [d for d, _ in items]), [x for _, x in items]
    if kind is dict:
        if not all(type(k) is str for k in v):
            raise Unconvertible(path, v)
        pairs = {k: _encode(x, f"{path}[{k!r}]", declared_only) for k, x in v.items()}
        descriptors = {k: d for k, (d, _) in pairs.items()}
        data = {k: x for k, (_, x) in pairs.items()}
        same = {repr(d) for d in descriptors.values()}
        if same == {"'j'"}:
            return "j", data
        return (["dict*", next(iter(descriptors.values()))] if len(same) == 1 else ["dict", descriptors]), data
    leaf = _LEAVES.get(_real_class(kind))
    if leaf is not None:
        changed = _what_iso_text_changes(v) if leaf in ("datetime", "time") else None
        if changed is not None:
            raise Unconvertible(path, v, changed)
        return leaf, _to_json(v)
    if _kind(kind) is None or (declared_only and not _is_declared(kind)):
        raise Unconvertible(path, v)
    try:
        data = _to_json(v)
        exact = _exact(_from_json(json.loads(json.dumps(data)), kind), v)  # as the recorded text reads back
    except Exception:  # a field the converter cannot type (annotated object, Any...)
        exact = False
    if not exact:  # or one annotated loosely (list for a tuple, float for an int...)
        raise Unconvertible(path, v)
    _known.setdefault(_name(kind), kind)
    return ["class", _name(kind)], data


def _what_iso_text_changes(v: dt.datetime | dt.time) -> str | None:
    """What ISO text would not give back in ``v``, and what to record instead (``None``: nothing). It holds
    no ``fold`` (the second of two equal local times), and no zone but a fixed offset without a name of
    its own (a zoneinfo zone would come back as a bare offset, a named ``timezone`` without its name)."""
    if v.fold:
        return "fold=1, the second of two equal local times, which ISO text cannot say: record it in UTC"
    tz, offset = v.tzinfo, v.utcoffset()
    if tz is None or (type(tz) is dt.timezone and offset is not None and repr(tz) == repr(dt.timezone(offset))):
        return None
    return (f"its zone {v.tzname()!r} ({type(tz).__name__}) would read back as a bare offset: record it with an "
            "unnamed timezone(offset), or in UTC")


def _real_class(kind: type) -> type:
    """``kind``, or the class freezegun's ``FakeDatetime`` or ``FakeDate`` stands in for (what ``datetime.now()``
    and ``ctx.now()`` return in a ``TestEnv``): recorded as that class."""
    return kind.__bases__[0] if kind.__module__ == "freezegun.api" and kind.__bases__ else kind


def _container(kind: str, descriptors: list[Any]) -> Any:
    if all(d == "j" for d in descriptors) and kind == "list":
        return "j"
    if descriptors and all(d == descriptors[0] for d in descriptors):
        return [kind + "*", descriptors[0]]
    return [kind, descriptors]


def _decode(d: Any, data: Any, where: str) -> Any:
    if d == "j":
        return data
    if isinstance(d, str):
        return _from_json(data, _LEAF_TYPES[d])
    kind, arg = d
    if kind == "class":
        return _from_json(data, _class(arg, where))
    if kind == "dict":
        return {k: _decode(arg[k], x, where) for k, x in data.items()}
    if kind == "dict*":
        return {k: _decode(arg, x, where) for k, x in data.items()}
    build = _CONTAINERS[kind.rstrip("*")]
    if kind.endswith("*"):
        return build(_decode(arg, x, where) for x in data)
    if len(arg) != len(data):
        raise ValueError(f"{len(data)} items for {len(arg)} types")
    return build(_decode(a, x, where) for a, x in zip(arg, data, strict=True))


def _is_declared(cls: type) -> bool:
    if _declared.get(_name(cls)) is not cls:
        _learn_annotations()
    return _declared.get(_name(cls)) is cls


def _class(name: str, where: str) -> type:
    cls = _declared.get(name) or _known.get(name)
    if cls is None:
        _learn_annotations()
        cls = _declared.get(name)
    if cls is None:
        raise UnknownTypeError(
            f"the {where} is a value of class {name.replace(':', '.')}, which this process does not know: nothing "
            f"is imported to read it. Import its module and decorate the class with @rk.json_type, or name it in "
            "the annotations of the workflow or activity that records it.")
    return cls


def _learn_annotations() -> None:
    """Register the convertible classes named in the annotations of workflows and activities."""
    seen: set[int] = set()
    while _annotated:
        fn = _annotated.pop()
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # an annotation that does not resolve names nothing usable
            continue
        for hint in hints.values():
            _learn(hint, seen)


def _learn(hint: Any, seen: set[int]) -> None:
    if id(hint) in seen:
        return
    seen.add(id(hint))
    for arg in typing.get_args(hint):
        _learn(arg, seen)
    if isinstance(hint, type) and _kind(hint) is not None:
        _declared.setdefault(_name(hint), hint)
        try:  # the classes its own fields name
            for field_hint in typing.get_type_hints(hint).values():
                _learn(field_hint, seen)
        except Exception:
            pass


def _exact(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (``1 == 1.0`` and ``[1] == (1,)`` are not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_exact(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_exact(a[k], b[k]) for k in a)
    if type(a) in (dt.datetime, dt.time):  # == ignores fold, and compares instants across zones
        return repr(a) == repr(b)
    if isinstance(a, (set, frozenset, enum.Enum)) or type(a) in _LEAVES or type(a) in _PLAIN:
        return bool(a == b)
    fields = _fields(a)
    if fields is None:
        return bool(a == b)
    return all(_exact(getattr(a, f), getattr(b, f)) for f in fields)


def _fields(value: Any) -> list[str] | None:
    cls = type(value)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    if hasattr(cls, "__attrs_attrs__"):
        return [a.name for a in cls.__attrs_attrs__]
    if hasattr(cls, "__struct_fields__"):
        return list(cls.__struct_fields__)
    if hasattr(cls, "model_fields"):
        return list(cls.model_fields)
    return None
