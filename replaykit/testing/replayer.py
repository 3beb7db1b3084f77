"""The replay checker: run recorded histories through the current code before it ships.

    >>> from replaykit.testing import replay, replay_all, export_history, History

``export_history(db, id).save("order-1.json")`` keeps a production history as a
test fixture; ``replay(order, "order-1.json")`` checks the current code still
walks it; ``replay_all(db, workflows=[...])`` checks every history in a store.
"""

from __future__ import annotations

import base64
import json
import os
import reprlib
from collections.abc import Iterable
from typing import Any

import attrs

from .. import converters, payloads
from ..control import opened
from ..errors import ReplayKitError, UnknownWorkflowError, WorkflowConflictError, WorkflowNotFoundError
from ..history import CONTINUED, ERROR, RESULT, START, Event, Status
from ..keys import Keyring
from ..payloads import Codec
from ..replaycheck import check_history
from ..starting import started_by
from ..store import Store
from ..store.base import Secrets
from ..store.locks import stores_open
from ..workflow import Workflow, as_workflow, lookup

FORMAT = "replaykit-history"
VERSION = 1


@attrs.frozen
class History:
    """One run's recorded events, detached from any store; JSON-exportable."""

    workflow_id: str
    workflow: str
    events: tuple[Event, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "workflow_id": self.workflow_id, "workflow": self.workflow,
            "events": [_event_to_json(e) for e in self.events],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a replaykit history export (format is {data.get('format')!r})")
        if data.get("version", 0) > VERSION:
            raise ValueError(f"history export version {data['version']} is newer than this replaykit reads")
        workflow_id, workflow, events = data["workflow_id"], data["workflow"], data["events"]
        if type(workflow_id) is not str or type(workflow) is not str or type(events) is not list:
            raise ValueError("a damaged history export: its workflow_id and workflow are text, and its events a list")
        return cls(workflow_id, workflow, tuple(_event_from_json(n, e) for n, e in enumerate(events)))

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        if stores_open(os.fspath(path)):  # never open() a live database: closing it drops SQLite's locks
            raise ValueError(f"{os.fspath(path)} is a replaykit store, not a history export; "
                             "export a run's history with export_history(db, workflow_id)")
        with open(path) as f:
            return cls.from_json(json.load(f))


def _event_to_json(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": e.seq, "step": e.step, "kind": e.kind, "name": e.name, "at": e.at,
                           "outcome": e.outcome}
    if e.encoding == payloads.JSON:
        out["value"] = json.loads(e.payload)
    elif e.encoding == converters.TYPED:  # {"t": its type, "v": its data}: readable, and no code runs
        out["typed"] = json.loads(e.payload)
    else:
        assert isinstance(e.payload, bytes)
        out["pickle"] = base64.b64encode(e.payload).decode()
    return out


_INT64 = range(-2 ** 63, 2 ** 63)
_LATEST = 1e15  # seconds since 1970: no event is recorded 30 million years from now
# A recorded value nests at most 100 levels (payloads); a typed one's record of types adds two a level.
_DEEPEST = 320


def _nested_within(value: Any, levels: int) -> bool:
    if type(value) is list:
        return levels > 0 and all(_nested_within(v, levels - 1) for v in value)
    if type(value) is dict:
        return levels > 0 and all(_nested_within(v, levels - 1) for v in value.values())
    return True


def _event_from_json(n: int, d: dict[str, Any]) -> Event:
    """Event ``n`` of an export, every field checked: the file may come from anywhere."""
    def wrong(field: str, what: str) -> ValueError:
        return ValueError(f"a damaged history export: event {n} has {field} {reprlib.repr(d.get(field))}, "
                          f"not {what}")

    if type(d) is not dict:
        raise ValueError(f"a damaged history export: event {n} is not an object")
    for field in ("seq", "step"):
        if type(d[field]) is not int or d[field] not in _INT64:
            raise wrong(field, "a whole number")
    if type(d["at"]) not in (int, float) or not abs(d["at"]) <= _LATEST:  # NaN compares false
        raise wrong("at", "a time in seconds")
    for field in ("kind", "name", "outcome"):
        if type(d[field]) is not str:
            raise wrong(field, "text")
    payload: str | bytes
    if "pickle" in d:
        if type(d["pickle"]) is not str:
            raise wrong("pickle", "base64 text")
        try:
            encoding, payload = payloads.PICKLE, base64.b64decode(d["pickle"], validate=True)
        except ValueError:
            raise wrong("pickle", "base64 text") from None
    else:  # JSON read it, so it is JSON data: only how deep it nests is left to check
        field = "typed" if "typed" in d else "value"
        if not _nested_within(d[field], _DEEPEST):
            raise wrong(field, f"JSON data at most {_DEEPEST} levels deep")
        encoding, payload = (converters.TYPED if field == "typed" else payloads.JSON), payloads.to_json(d[field])
    return Event(d["seq"], d["step"], d["kind"], d["name"], float(d["at"]), d["outcome"], encoding, payload)


def export_history(db: str | os.PathLike[str] | Store, workflow_id: str) -> History:
    """Read one run's history out of a store (a path or a :class:`Store`)."""
    with opened(db, reading=True) as store:
        info = store.info(workflow_id)
        if info is None:
            where = getattr(store, "path", type(store).__name__)
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {where}")
        return History(workflow_id, info.name, tuple(store.events(workflow_id)))


def import_history(db: str | os.PathLike[str] | Store, history: History) -> Status:
    """Record an exported history as a run of ``db`` (an existing store), under its id: a run that had
    ended is recorded ended (its result read back as it was), one that had not is recorded running,
    for an engine to resume. Refused if the id is taken, or if the events do not make a history
    (a start first, ``seq`` without a gap, a continued-as-new generation that is not the newest).
    Pickled values read back only with the secret of the store they were exported from."""
    events = history.events
    if not events or events[0].kind != START or events[0].seq != 0 or events[0].name != history.workflow:
        raise ValueError(f"the history of {history.workflow_id!r} does not begin with the start of "
                         f"{history.workflow!r}")
    if [e.seq for e in events] != list(range(len(events))):
        raise ValueError(f"the history of {history.workflow_id!r} has a gap or repeats an event (seq not 0, 1, 2...)")
    status = _ended_as(history)
    with opened(db) as store:
        if not store.create(history.workflow_id, history.workflow, events[0], status, events[1:]):
            raise WorkflowConflictError(f"workflow id {history.workflow_id!r} is taken in {store}; "
                                        "delete that run first or import under another id")
    return status


def _ended_as(history: History) -> Status:
    last = history.events[-1]
    if last.kind != RESULT:
        return Status.RUNNING
    if last.outcome == CONTINUED:
        raise ValueError(f"the history of {history.workflow_id!r} is a generation that continued as new; "
                         "export the newest one")
    if last.outcome != ERROR:
        return Status.COMPLETED
    kind = payloads.error_record(last.encoding, last.payload)["type"].rsplit(".", 1)[-1]
    return {"TimedOut": Status.TIMED_OUT, "WorkflowTimedOut": Status.TIMED_OUT, "Cancelled": Status.CANCELLED,
            "WorkflowCancelled": Status.CANCELLED, "Terminated": Status.CANCELLED,
            "WorkflowTerminated": Status.CANCELLED}.get(kind, Status.FAILED)


@attrs.frozen
class ReplayReport:
    """The outcome of replaying one history: ``ok``, or the ``error`` that stopped it."""

    workflow_id: str
    workflow: str
    steps: int
    error: ReplayKitError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def replay(workflow: Any, history: History | str | os.PathLike[str], *, secret: Secrets = None) -> ReplayReport:
    """Replay ``history`` (or a JSON export's path) through ``workflow``'s current code.

    Its pickled values are unpickled only if signed with ``secret`` (default: ``REPLAYKIT_SECRET``);
    for a history exported from an SQLite store with a key file, pass that file's key.

    Returns a report on success; raises :class:`~replaykit.NonDeterminismError`,
    with a side-by-side table of recorded events and new commands, on divergence.
    """
    wf = as_workflow(workflow)
    if not isinstance(history, History):
        history = History.load(history)
    if history.workflow != wf.name:
        raise WorkflowConflictError(
            f"history {history.workflow_id!r} was recorded by workflow {history.workflow!r}, not {wf.name!r}"
        )
    steps = check_history(wf, history.workflow_id, history.events, Codec(Keyring.configured(secret)))
    return ReplayReport(history.workflow_id, wf.name, steps)


def replay_all(db: str | os.PathLike[str] | Store, workflows: Iterable[Any] = ()) -> list[ReplayReport]:
    """Replay every history in a store; a report per run, failures included (nothing raised).

    Use it in CI before deploying new workflow code, against a copy of production's store.
    """
    known: dict[str, Workflow[Any]] = {w.name: w for w in map(as_workflow, workflows)}
    reports = []
    with opened(db, reading=True) as store:
        for info in store.list():
            try:
                history = list(store.events(info.workflow_id))
                wf = lookup(started_by(info.workflow_id, info.name, history[0] if history else None).name, known)
                steps = check_history(wf, info.workflow_id, history, store.codec)
                reports.append(ReplayReport(info.workflow_id, info.name, steps))
            except (ReplayKitError, UnknownWorkflowError) as exc:
                reports.append(ReplayReport(info.workflow_id, info.name, 0, exc))
    return reports
