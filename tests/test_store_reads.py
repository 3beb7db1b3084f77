"""No store read outlives its call: an abandoned history read pins nothing."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import replaykit as rk
from replaykit.history import OK, START, Event
from replaykit.store import MemoryStore, SqliteStore, Store

from helpers import add, adder


def test_a_refused_start_leaves_the_engine_able_to_start_others(db: str) -> None:
    with rk.Engine(db) as engine:
        assert engine.start(adder, 1, workflow_id="a").result(timeout=10) == 0
        with pytest.raises(rk.WorkflowConflictError):
            engine.start(adder, 2, workflow_id="a").result(timeout=10)
        assert engine.start(adder, 3, workflow_id="b").result(timeout=10) == 3


@rk.workflow(name="reads.approval")
def approval(ctx: rk.Context):
    total = yield add(1, 2)
    total += yield add(3, 4)
    answer = yield rk.wait_signal("approved")
    return [total, answer]


def test_resume_after_a_refused_start_of_a_paused_run_continues_it(db: str) -> None:
    with rk.Engine(db) as first:
        first.start(approval, workflow_id="p")
        _wait_for(lambda: len(list(first.store.events("p"))) == 3)  # both activities recorded
        first.pause("p")
    with rk.Engine(db) as engine:
        with pytest.raises(rk.WorkflowPausedError):
            engine.start(approval, workflow_id="p").result(timeout=10)
        handle = engine.resume("p")
        engine.signal("p", "approved", "yes")
        assert handle.result(timeout=10) == [10, "yes"]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _history(store: Store, n: int) -> None:
    store.create("h", "h", Event(0, 0, START, "h", 1.0, OK, "json", '{"args":[],"kwargs":{},"seed":1,"rules":2}'))
    for seq in range(1, n):
        store.record("h", Event(seq, seq, "activity", "x", 1.0, OK, "json", str(seq)))


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_an_abandoned_history_read_does_not_hide_later_writes(db: str, kind: str) -> None:
    """A reader that stops half-way (as ``any(...)`` does) must not freeze what its thread sees."""
    store = SqliteStore(db) if kind == "sqlite" else MemoryStore()
    other = SqliteStore(db) if kind == "sqlite" else store  # another connection, as another thread or process
    try:
        _history(store, 2500)  # several pages
        reading = store.events("h")
        assert next(reading).seq == 0 and next(reading).seq == 1  # and abandoned, still referenced
        other.record("h", Event(2500, 2500, "activity", "x", 2.0, OK, "json", "1"))
        assert store.last_event("h").seq == 2500  # type: ignore[union-attr]
        assert [e.seq for e in store.events("h")] == list(range(2501))
        assert next(reading).seq == 2  # the abandoned read can still go on, in order
    finally:
        store.close()
        other.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_histories_read_whole_across_page_boundaries(db: str, kind: str) -> None:
    from replaykit.store.sqlite_history import PAGE as _PAGE

    for n, workflow_id in ((_PAGE - 1, "a"), (_PAGE, "b"), (_PAGE + 1, "c"), (2 * _PAGE, "d")):
        store = SqliteStore(db) if kind == "sqlite" else MemoryStore()
        with store:
            store.create(workflow_id, "h", Event(0, 0, START, "h", 1.0, OK, "json", "{}"))
            for seq in range(1, n):
                store.record(workflow_id, Event(seq, seq, "activity", "x", 1.0, OK, "json", str(seq)))
            assert [e.seq for e in store.events(workflow_id)] == list(range(n))
