"""Crash-anywhere checking: cut a run's history at every point, resume, compare.

A crash leaves a prefix of the history in the store (and, at most, one
activity that ran but was not recorded). ``assert_survives_crashes`` runs a
workflow once without interruption, then for each crash point starts a fresh
engine on that prefix alone and checks the resumed run ends the same way, with
the same history, having run only the activities not yet recorded.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .. import payloads
from ..commands import utc
from ..errors import IllegalTransitionError, WorkflowCancelled, WorkflowFailed
from ..history import ERROR, START, Event
from ..store import MemoryStore
from ..workflow import as_workflow
from .env import TestEnv


@attrs.frozen
class Outcome:
    """How a run ended: ``("ok", value)``, ``("failed", "Type: message")`` or ``("cancelled", reason)``."""

    status: str
    value: Any


def shape(events: Iterable[Event]) -> list[tuple[Any, ...]]:
    """A history without what legitimately differs between runs: times, the random seed, tracebacks."""
    return [(e.seq, e.kind, e.name, e.outcome, _comparable(e)) for e in events]


def _attempts(events: list[Event]) -> list[tuple[int, tuple[int, int]]]:
    """(position, (step, attempt)) of each activity outcome in a history."""
    attempts: dict[int, int] = {}
    found = []
    for i, e in enumerate(events):
        if e.kind == "activity":
            attempts[e.step] = attempts.get(e.step, 0) + 1
            found.append((i, (e.step, attempts[e.step])))
    return found


def _comparable(e: Event) -> Any:
    if e.kind == START:
        return None
    if e.outcome == ERROR:
        record = payloads.error_record(e.encoding, e.payload)
        return record["type"], record["message"]
    return e.payload


def _run(env: TestEnv, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any], workflow_id: str,
         signals: Mapping[str, Any]) -> Outcome:
    # The driver is held until the start and the signals are in the store: the run then finds them
    # all when it opens, new or resumed, instead of racing the caller that sends them.
    gate = threading.Event()

    def hold() -> None:
        gate.wait(timeout=30)

    env.engine._post(hold)
    try:
        handle = env.start(workflow, *args, workflow_id=workflow_id, **kwargs)
        recorded = {e.name for e in env.history(workflow_id) if e.kind == "signal"}
        for name, payload in signals.items():
            if name not in recorded:  # the inbox of a real store would still hold it
                try:
                    env.signal(workflow_id, name, payload)
                except IllegalTransitionError:  # it ended already (failed before its first wait): nothing to send
                    break
    finally:
        gate.set()
    try:
        return Outcome("ok", handle.result(timeout=60))
    except WorkflowFailed as exc:
        return Outcome("failed", f"{exc.error_type}: {exc.message}")
    except WorkflowCancelled as exc:
        return Outcome("cancelled", exc.reason)


def assert_survives_crashes(
    workflow: Any,
    *args: Any,
    crash_points: Iterable[int] | None = None,
    signals: Mapping[str, Any] | None = None,
    activities: Mapping[Any, Callable[..., Any]] | None = None,
    workflow_id: str = "crash-check",
    **kwargs: Any,
) -> Outcome:
    """Check crash-anywhere resumption of one workflow run; return its outcome.

    ``crash_points`` are numbers of events kept by the crash (default: every
    point, 1 .. len(history) - 1). ``signals`` (name -> payload) are sent at the
    start of each run. Raises ``AssertionError`` describing the first difference.
    """
    wf = as_workflow(workflow)
    signals = dict(signals or {})
    secret = secrets.token_hex(16)  # the copies below read what the first run signed
    with TestEnv(activities=activities, warn_nondeterminism=False, concurrent_activities=False,
                 db=MemoryStore(secret=secret)) as env:
        expected = _run(env, wf, args, kwargs, workflow_id, signals)
        history = env.history(workflow_id)
    points = range(1, len(history)) if crash_points is None else crash_points
    for kept in points:
        if not 1 <= kept < len(history):
            raise ValueError(f"crash point {kept} is outside 1..{len(history) - 1} for a history of {len(history)}")
        store = MemoryStore(secret=secret)
        store.create(workflow_id, wf.name, history[0])
        for event in history[1:kept]:
            store.record(workflow_id, event)
        resume_at = utc(history[kept - 1].at)
        with TestEnv(db=store, start=resume_at, activities=activities, warn_nondeterminism=False,
                     concurrent_activities=False) as env:
            got = _run(env, wf, args, kwargs, workflow_id, signals)
            resumed = env.history(workflow_id)
            ran = set(env.activity_runs)
        where = f"after a crash that kept {kept} of {len(history)} events"
        assert got == expected, f"{where}: the run ended {got}, uninterrupted it ended {expected}"
        assert shape(resumed) == shape(history), f"{where}: the history differs from the uninterrupted one"
        numbered = _attempts(history)
        done_before = {a for i, a in numbered if i < kept}
        owed = {a for i, a in numbered if i >= kept}
        assert not ran & done_before, f"{where}: recorded activities ran again: {sorted(ran & done_before)}"
        assert owed <= ran, f"{where}: activities recorded after the crash point did not run: {sorted(owed - ran)}"
    return expected

