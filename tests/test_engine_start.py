"""Engine.start: the run's start joins the driver's group commit, and start() returns once it is
recorded, from any thread, on any store; a closed engine says so instead of handing out a handle
that never finishes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import replaykit as rk
from replaykit.store import open_store

from helpers import add


@rk.workflow
def one(ctx: rk.Context, i: int) -> rk.Flow[int]:
    return (yield add(i, 1))


def test_start_returns_once_another_connection_sees_the_run_from_many_threads(any_db: str) -> None:
    seen_at_return: list[bool] = []
    lock = threading.Lock()
    with rk.Engine(any_db, activity_threads=4) as engine, open_store(any_db) as other:
        def start(i: int) -> rk.WorkflowHandle[int]:
            handle = engine.start(one, i, workflow_id=f"w{i}")
            visible = other.info(f"w{i}") is not None  # another connection: only what was committed
            with lock:
                seen_at_return.append(visible)
            return handle

        with ThreadPoolExecutor(8) as pool:
            handles = list(pool.map(start, range(120)))
        assert [h.result(timeout=30) for h in handles] == [i + 1 for i in range(120)]
    assert seen_at_return == [True] * 120


def test_a_rerun_of_an_existing_id_still_checks_its_arguments(db: str) -> None:
    with rk.Engine(db) as engine:
        assert engine.start(one, 1, workflow_id="same").result(timeout=10) == 2
        assert engine.start(one, 1, workflow_id="same").result(timeout=10) == 2  # the recorded result
        with pytest.raises(rk.WorkflowConflictError):
            engine.start(one, 5, workflow_id="same").result(timeout=10)


def test_a_closed_engine_refuses_to_start_instead_of_handing_out_a_handle_that_never_ends(db: str) -> None:
    store = rk.SqliteStore(db)
    engine = rk.Engine(store)
    engine.close()
    with pytest.raises(rk.EngineClosedError, match="'late'"):
        engine.start(one, 1, workflow_id="late")
    assert store.info("late") is None  # nothing recorded
    store.close()


@rk.workflow
def starts_another(ctx: rk.Context) -> rk.Flow[str]:
    return (yield start_from_an_activity("inner"))


ENGINES: list[rk.Engine] = []


@rk.activity
def start_from_an_activity(workflow_id: str) -> str:
    # runs on the driver thread (activity_threads=0): start() must not wait on the driver itself
    ENGINES[0].start(one, 41, workflow_id=workflow_id)
    return workflow_id


def test_start_from_code_the_driver_runs_does_not_wait_on_itself(db: str) -> None:
    with rk.Engine(db, activity_threads=0) as engine:
        ENGINES[:] = [engine]
        assert engine.start(starts_another, workflow_id="outer").result(timeout=10) == "inner"
        assert engine.handle("inner").result(timeout=10) == 42
    ENGINES.clear()
