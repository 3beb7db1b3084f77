"""A run as a timeline: one lane per step (its attempts, retry waits and outcome on a time axis),
the run's own events as marks, children as nested lanes, and where the run waits now.

Built from the stored history alone, a step's bar starts when the step before it in the history
answered (exact for steps yielded one at a time; for the branches of ``rk.all``/``rk.any`` a
guess). Given the workflow's code (``replaykit show -m MODULE``), the history is replayed as
``replaykit check`` does, without running any activity: each bar then starts when the workflow
yielded the step, and the steps it waits on now and the line it waits at are known.
``replaykit/timeline_html.py`` draws it. Nothing here unpickles a value to show it.
"""

from __future__ import annotations

from typing import Any

import attrs

from .errors import ReplayKitError
from .history import ERROR, RESULT, START, Event, WorkflowInfo
from .payloads import error_record
from .store import Store
from .workflow import Workflow, lookup

_PREVIEW = 200  # characters of a value shown on a bar


@attrs.frozen
class Segment:
    """One attempt of a step (``kind`` ``attempt``) or one wait between attempts (``retry``)."""

    kind: str
    start: float
    end: float
    outcome: str


@attrs.frozen
class Lane:
    """One step of the run."""

    step: int
    kind: str  # activity, timer, signal, side_effect, child
    name: str
    start: float
    end: float | None  # None: not answered yet (it waits on it now)
    outcome: str  # ok, error, timeout, or "waiting"
    segments: tuple[Segment, ...] = ()
    value: str = ""  # the result, shortened
    error: dict[str, str] | None = None  # type, message, traceback
    child: Timeline | None = None  # a child run's own timeline


@attrs.frozen
class Mark:
    """An event of the run itself: its start, a cancellation, a patch marker, its result."""

    kind: str
    name: str
    at: float
    outcome: str


@attrs.frozen
class Timeline:
    info: WorkflowInfo
    lanes: tuple[Lane, ...]
    marks: tuple[Mark, ...]
    start: float
    end: float
    exact: bool  # bars start when the code yielded them (replayed), not guessed from the history
    waiting_at: str | None = None  # file:line of the yield it is suspended at (replayed, not ended)
    note: str | None = None  # why the history could not be replayed, if it could not
    error: dict[str, str] | None = None  # how the run failed, if it did
    result: str | None = None
    children: tuple[str, ...] = ()  # ids the code gave its children, seen by the replay


def build(store: Store, workflow_id: str, *, replay: bool = False, depth: int = 2) -> Timeline:
    """The timeline of ``workflow_id``'s newest run; ``replay``: with its workflow's code, which must be
    registered (imported); ``depth``: how many levels of children are nested."""
    info = store.info(workflow_id)
    if info is None:
        from .errors import WorkflowNotFoundError

        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {store}")
    events = list(store.events(workflow_id))
    issued, waits, children, where, note = _replayed(store, info, events) if replay else ({}, {}, {}, None, None)
    by_step: dict[int, list[Event]] = {}
    marks = []
    for e in events:
        if e.step == 0:
            marks.append(Mark(e.kind, e.name, e.at, e.outcome))
        else:
            by_step.setdefault(e.step, []).append(e)
    lanes = [_lane(store, workflow_id, step, steps, issued.get(step, _guessed_start(events, steps[0])), depth,
                   children.get(step, f"{workflow_id}/{step}")) for step, steps in sorted(by_step.items())]
    last = events[-1].at if events else info.updated_at
    lanes += [Lane(step, kind, name, at, None, "waiting") for step, (kind, name, at) in sorted(waits.items())
              if step not in by_step]
    ended = events[-1] if events and events[-1].kind == RESULT else None
    return Timeline(info, tuple(lanes), tuple(marks), events[0].at if events else info.created_at,
                    max(last, info.updated_at), exact=replay and note is None, waiting_at=where, note=note,
                    error=error_record(ended.encoding, ended.payload) if ended and ended.outcome == ERROR else None,
                    result=_preview(ended) if ended and ended.outcome != ERROR else None,
                    children=tuple(children.values()))


def _lane(store: Store, workflow_id: str, step: int, events: list[Event], start: float, depth: int,
          child_id: str) -> Lane:
    segments = []
    begun = start
    for e in events:
        segments.append(Segment("retry" if e.kind == "timer" and e.name == "retry" else "attempt", begun, e.at,
                                e.outcome))
        begun = e.at
    last = events[-1]
    child = _child(store, workflow_id, child_id, depth) if last.kind == "child" and depth > 0 else None
    return Lane(step, last.kind, last.name, start, last.at, last.outcome, tuple(segments),
                "" if last.outcome == ERROR else _preview(last),
                error_record(last.encoding, last.payload) if last.outcome == ERROR else None, child)


def _guessed_start(events: list[Event], first: Event) -> float:
    """When a step was yielded, from the history alone: when the last event before its first one,
    of an earlier step, was recorded (the workflow went on from there)."""
    for seq in range(first.seq - 1, 0, -1):  # by index: no copy of the history per lane
        if events[seq].step < first.step:
            return events[seq].at
    return events[0].at


def _child(store: Store, parent: str, child_id: str, depth: int) -> Timeline | None:
    """The timeline of ``child_id`` if it is there and its start names ``parent`` as its parent (an id
    is known from a replay, else guessed as the default ``<parent>/<step>``)."""
    from .retention import parent_of

    try:
        return build(store, child_id, depth=depth - 1) if parent_of(store, child_id) == parent else None
    except ReplayKitError:
        return None


Waits = dict[int, tuple[str, str, float]]  # step -> (kind, name, yielded at) of what a run waits on now


def _replayed(store: Store, info: WorkflowInfo,
              events: list[Event]) -> tuple[dict[int, float], Waits, dict[int, str], str | None, str | None]:
    """Replay the history with the workflow's code: when each step was yielded, the steps it waits on
    now (``(kind, name, yielded at)``), the ids of children started with one, the line it waits at;
    or a note saying why it could not."""
    from .interpreter import Returned, new_machine

    try:
        workflow: Workflow[Any] = lookup(info.name)
        if not events or events[0].kind != START:
            return {}, {}, {}, None, "the history has no start event"
        machine = new_machine(workflow, info.workflow_id, events[0], codec=store.codec)
        machine.ctx.is_replaying = True
        issued: dict[int, float] = {}
        children: dict[int, str] = {}
        step = machine.start()
        for e in [*events[1:], None]:  # None: what it waits on after the last event
            for leaf in machine.outstanding.values():
                issued.setdefault(leaf.step, leaf.scheduled)
                if isinstance(getattr(leaf.command, "workflow_id", None), str):
                    children[leaf.step] = leaf.command.workflow_id  # type: ignore[attr-defined]
            if e is None or e.kind == RESULT or isinstance(step, Returned):
                break
            step = machine.replay(e)
        waits: Waits = {leaf.step: (leaf.command.kind, getattr(leaf.command, "name", ""), leaf.scheduled)
                 for leaf in machine.outstanding.values()}
        where = None if info.status.is_terminal else machine.where()
        machine.discard()
        return issued, waits, children, where, None
    except Exception as exc:  # the code moved on, or is not this run's: the bars are guessed instead
        return {}, {}, {}, None, f"could not replay the history with the current code: {type(exc).__name__}: {exc}"


def _preview(e: Event) -> str:
    from .views import value_of

    value = value_of(e.encoding, e.payload)
    text = "" if value is None else value["pickled"] if isinstance(value, dict) and "pickled" in value else str(value)
    return text if len(text) <= _PREVIEW else text[:_PREVIEW - 1] + "…"
