"""The pickles a store records: cloudpickle loaded only when a value needs it, the checks made
before a pickle is recorded, and what a recorded pickle holds, read without loading it."""

from __future__ import annotations

from typing import Any

from .keys import signed_body


def pickler() -> Any:
    """cloudpickle, loaded with the first value that needs it: most runs never pickle."""
    import cloudpickle  # type: ignore[import-untyped]

    return cloudpickle


def pickled_back(value: Any) -> bytes | None:
    """``value``'s pickle, if it loads back (else ``None``)."""
    try:
        raw: bytes = pickler().dumps(value)
        pickler().loads(raw)
    except Exception:
        return None
    return raw


def holds_an_exception(value: Any, depth: int = 0) -> bool:
    """Is ``value`` an exception, or does a list, tuple, set or dict of it (a few levels down) hold one?"""
    if isinstance(value, BaseException):
        return True
    if depth > 8 or type(value) not in (list, tuple, set, frozenset, dict):
        return False
    items = value.values() if type(value) is dict else value
    return any(holds_an_exception(item, depth + 1) for item in items)


def _picklable(value: Any) -> bool:
    try:
        pickler().dumps(value)
        return True
    except Exception:
        return False


def culprit(value: Any, path: str) -> tuple[str, Any]:
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
            return culprit(item, path + step)
    return path, value


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
