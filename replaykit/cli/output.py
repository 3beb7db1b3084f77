"""How the command line prints: tables for people, one JSON document for scripts.

Everything printed from a store goes through :func:`shown` (control characters escaped, so a value
in the store cannot move the cursor or hide what is printed around it) or through ``json.dumps``;
a pickled value is never unpickled to be shown: :func:`value_of` names its type and size instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import click

from ..history import ERROR, RESULT, Event, WorkflowInfo
from ..payloads import Codec, error_record, pickled_type


def when(ts: float | None) -> str | None:
    """A store time as ISO 8601, UTC, to the millisecond."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def shown(text: str) -> str:
    """Store data as printed: control characters escaped (tabs kept)."""
    if text.replace("\t", "").isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode() for c in text)


def opaque(pickled: bytes) -> str:
    """A pickled value as shown: its type (read from its opcodes, not unpickled) and size."""
    name = pickled_type(pickled)
    return f"<pickle{'' if name is None else ' ' + name}, {len(pickled)} bytes>"


def value_of(encoding: str, payload: str | bytes) -> Any:
    """A recorded value as data: JSON decoded, a pickle as ``{"pickled": "<pickle T, N bytes>"}``."""
    if isinstance(payload, bytes):
        return {"pickled": opaque(payload)}
    try:
        return Codec.decode_json(payload)
    except Exception:  # a value the codec refuses is shown as the text it is
        return {"unreadable": payload}


def info_json(info: WorkflowInfo) -> dict[str, Any]:
    """One run as ``list --json`` and ``describe --json`` print it."""
    return {"workflow_id": info.workflow_id, "name": info.name, "status": info.status.value,
            "created_at": when(info.created_at), "updated_at": when(info.updated_at),
            "custom_status": info.custom_status, "queue": info.queue, "problem": info.problem}


def event_json(e: Event) -> dict[str, Any]:
    """One event as ``history --json`` prints it."""
    return {"seq": e.seq, "step": e.step, "kind": e.kind, "name": e.name or None, "at": when(e.at),
            "outcome": e.outcome, "value": value_of(e.encoding, e.payload)}


def outcome_json(last: Event) -> dict[str, Any]:
    """How a run ended, from its result event: ``{"result": value}`` or ``{"error": {type, message, traceback}}``."""
    assert last.kind == RESULT
    if last.outcome == ERROR:
        return {"error": error_record(last.encoding, last.payload)}
    return {"result": value_of(last.encoding, last.payload)}


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; cells are escaped (:func:`shown`) and tabs made spaces."""
    cells = [[shown("" if c is None else str(c)).replace("\t", " ") for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in (list(headers), *cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def compact(value: Any, limit: int = 60) -> str:
    """A value on one line for a table cell, cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"
