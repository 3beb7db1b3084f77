"""Runs as plain data (JSON-ready dicts): what ``replaykit list/describe/history --json`` prints and
the HTTP API of ``replaykit ui`` returns (the schemas are in ``docs/cli.md``).

A value is never unpickled to be shown: a pickle is named by its type, read from its opcodes,
and its size (:func:`value_of`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .converters import TYPED
from .history import ERROR, RESULT, START, Event, WorkflowInfo
from .payloads import Codec, error_record
from .pickling import pickled_type
from .store import Store


def when(ts: float | None) -> str | None:
    """A store time as ISO 8601, UTC, to the millisecond."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def opaque(pickled: bytes) -> str:
    """A pickled value as shown: its type (read from its opcodes, not unpickled) and size."""
    name = pickled_type(pickled)
    return f"<pickle{'' if name is None else ' ' + name}, {len(pickled)} bytes>"


def jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it, for showing (a query's answer): keys as strings (a dict whose keys
    would collide as strings: a list of ``[key, value]`` pairs), tuples and sets as lists, floats JSON
    cannot carry as strings (``"NaN"``, ``"Infinity"``), anything else as its ``repr``. A value decoded
    from JSON comes back the same but for those floats."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else "NaN" if math.isnan(value) else (
            "Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        shown = {k if isinstance(k, str) else json.dumps(jsonable(k)): jsonable(v) for k, v in value.items()}
        if len(shown) < len(value):  # keys that only differ as text (1 and "1"): pairs, so none is lost
            return [[jsonable(k), jsonable(v)] for k, v in value.items()]
        return shown
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return repr(value)


def value_of(encoding: str, payload: str | bytes) -> Any:
    """A recorded value as data: JSON decoded (a typed value's data), a pickle as
    ``{"pickled": "<pickle T, N bytes>"}``; NaN and infinities as strings (JSON has none)."""
    if isinstance(payload, bytes):
        return {"pickled": opaque(payload)}
    try:
        value = Codec.decode_json(payload)
    except Exception:  # a value the codec refuses is shown as the text it is
        return {"unreadable": payload}
    if encoding == TYPED and isinstance(value, dict) and "v" in value:  # {"t": its type, "v": its data}
        value = value["v"]
    return jsonable(value)


def info_json(info: WorkflowInfo) -> dict[str, Any]:
    """One run as ``list --json`` and ``describe --json`` print it."""
    return {"workflow_id": info.workflow_id, "name": info.name, "status": info.status.value,
            "created_at": when(info.created_at), "updated_at": when(info.updated_at),
            "custom_status": jsonable(info.custom_status), "queue": info.queue, "problem": info.problem}


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


def described(store: Store, info: WorkflowInfo, replay: bool) -> dict[str, Any]:
    events = 0
    start: Event | None = None
    last: Event | None = None
    for e in store.events(info.workflow_id):  # read whole and checked, as a replay would
        events += 1
        last = e
        if e.kind == START:
            start = e
    described = info_json(info)
    recorded = value_of(start.encoding, start.payload) if start else {}
    opts = recorded if isinstance(recorded, dict) and "args" in recorded else {}
    parent = opts.get("parent")
    described.update({
        "generation": opts.get("generation", 1),
        "args": opts.get("args", recorded if "pickled" in recorded else None),
        "kwargs": opts.get("kwargs"),
        "parent": None if not parent else {"workflow_id": parent[0], "step": parent[1]},
        "timeout": opts.get("timeout"),
        "start_at": when(opts.get("start_at")),
        "driven_by": store.lock_owner(info.workflow_id),
        "events": events,
        "last_event": None if last is None else event_json(last),
    })
    found: dict[str, Any] = (waits(store, info) if replay else
                             {"waiting_at": None, "waiting_on": None, "note": None, "children": ()})
    named = found.pop("children")
    described.update(found)
    described["children"] = children(store, info.workflow_id, named)
    if info.status.is_terminal and last is not None and last.kind == RESULT:
        described.update(outcome_json(last))
    return described


def waits(store: Store, info: WorkflowInfo) -> dict[str, Any]:
    """Where a run waits, from a replay of its history with its code (no activity runs)."""
    from . import timeline

    drawn = timeline.build(store, info.workflow_id, replay=True, depth=0)
    waiting = [{"step": lane.step, "kind": lane.kind, "name": lane.name or None, "since": when(lane.start)}
               for lane in drawn.lanes if lane.end is None]
    return {"waiting_at": drawn.waiting_at, "waiting_on": None if drawn.note else waiting, "note": drawn.note,
            "children": drawn.children}


def children(store: Store, workflow_id: str, named: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The runs whose start names ``workflow_id`` as their parent, among those with a child's default id
    (``<id>/<step>``, ``<id>#<generation>/<step>``) and ``named`` (ids the code gave, seen by a replay):
    ``[{"workflow_id", "status"}]``."""
    from .retention import parent_of

    found = [*store.find(prefix=f"{workflow_id}/"), *store.find(prefix=f"{workflow_id}#"),
             *(info for info in map(store.info, named) if info is not None)]
    runs = {info.workflow_id: info for info in found}
    return [{"workflow_id": child_id, "status": runs[child_id].status.value} for child_id in sorted(runs)
            if parent_of(store, child_id) == workflow_id]


def listed(store: Store, *, statuses: Sequence[str] = (), workflows: Sequence[str] = (), prefix: str = "",
           since: float | None = None, until: float | None = None, limit: int | None = None) -> list[WorkflowInfo]:
    """The newest generation of each run, newest first, filtered by status, workflow name, id prefix
    and creation time (``since`` included, ``until`` not), at most ``limit`` (see :meth:`Store.find`)."""
    return store.find(statuses=statuses, workflows=workflows, prefix=prefix, since=since, until=until, limit=limit)
