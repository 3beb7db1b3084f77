"""How an exception is recorded: its readable part (type, message, traceback), a signed pickled copy
when it pickles, and the chain it was raised from, which its own pickle leaves out; and how the
copy is rebuilt, so that a workflow gets the same exception live and on replay."""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from typing import Any

from .errors import ActivityFailed, ReplayKitError
from .pickling import pickled_back

_SURROGATE = re.compile("[\ud800-\udfff]")


def record_of(exc: BaseException, signed_copy: Callable[[Any], str | None] | None) -> dict[str, Any]:
    """``exc`` as recorded (``signed_copy``: a value pickled and signed, ``None`` if it does not pickle;
    no ``signed_copy``: a store that records no pickles)."""
    pickled = links = None
    if signed_copy is not None:
        pickled = signed_copy(exc)
        chain = chain_of(exc)
        if pickled is not None and chain:
            links = signed_copy(chain)
    kind, message, trace = readable_parts(exc)
    record = {"type": kind, "message": message, "traceback": trace, "pickle": pickled}
    if links is not None:  # a key of its own: a reader of 0.1 finds the exception where it always was
        record["links"] = links
    return record


def rebuilt(record: dict[str, Any], loaded: Callable[[Any], Any] | None) -> BaseException:
    """The recorded exception, rebuilt from its pickle (``loaded``: a signed copy read back, ``None`` if it
    no longer loads; no ``loaded``: pickles are off) with its chain and its recorded traceback as a note;
    :class:`ActivityFailed` if it did not pickle."""
    if record.get("pickle") and loaded is not None:
        copy = loaded(record["pickle"])  # None: its class is gone from the code now
        if isinstance(copy, BaseException):
            links = loaded(record["links"]) if record.get("links") else None
            link(copy, links if isinstance(links, list) else [])
            # replaykit's own errors say what they need in their message; notes are Python 3.11's
            if not isinstance(copy, ReplayKitError) and hasattr(copy, "add_note"):
                copy.add_note(f"(where it was raised, as recorded)\n{record['traceback']}".rstrip())
            return copy
    return ActivityFailed(str(record["type"]), str(record["message"]), str(record["traceback"]))


def chain_of(exc: BaseException) -> list[tuple[BaseException, bool, bool]]:
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
        copy = nxt if pickled_back(nxt) is not None else ActivityFailed(*readable_parts(nxt))
        chain.append((copy, is_cause, link.__suppress_context__))
        link = nxt
    return chain


def link(error: BaseException, chain: list[Any]) -> None:
    """Hang the recorded chain (:func:`chain_of`) back on ``error``."""
    link = error
    for copy, is_cause, suppress in chain:
        if is_cause:
            link.__cause__ = copy
        else:
            link.__context__ = copy
        link.__suppress_context__ = bool(suppress)
        link = copy


def readable_parts(exc: BaseException) -> tuple[str, str, str]:
    """An exception's type name, message and traceback, as recorded for reading."""
    try:
        message = str(exc)
    except Exception:  # its __str__ raises: the traceback says so too
        message = f"<{type(exc).__qualname__}: str() failed>"
    return (f"{type(exc).__module__}.{type(exc).__qualname__}", readable(message),
            readable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))



def readable(text: str) -> str:
    """An error's text as it can be recorded: a surrogate pair held as two characters joined into the one
    they stand for (the text is for reading; an exact copy rides in the pickle)."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")



