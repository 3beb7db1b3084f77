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


def test_signals_sent_right_after_start_in_the_test_environment_replay_the_same_after_a_crash() -> None:
    # The crash harness holds the driver until the start and the signals sent right after it are in
    # the store, so the run finds them all when it opens, new or resumed: the two histories match.
    # (Without the hold, the run's first step raced those signals: one run in about fifteen failed.)
    from replaykit.testing import strategies as rks
    from replaykit.testing.crashes import assert_survives_crashes

    program = [["all", [["act", 0], ["signal", 1], ["act", 0]]]]
    for _ in range(5):
        assert_survives_crashes(rks.run_program, program, signals=rks.signals_for(program), crash_points=[1, 2, 3, 4])


@rk.workflow
def busy(ctx: rk.Context, n: int) -> rk.Flow[int]:
    for i in range(n):
        yield rk.all(add(i, 0), add(i, 0), add(i, 0))
    return n


def test_runs_started_due_at_once_beside_a_busy_run_all_finish_in_power_mode(any_db: str) -> None:
    # On PostgreSQL a run's lock is stamped on its row from another connection: a start recorded in the
    # driver's open batch was not stamped yet when the run was locked, and its first step was refused
    # as "no longer driven by this process" (28 of 30 in a review). Starts join the batch only where
    # that cannot happen (SQLite).
    with open_store(any_db, durability="power") as store, rk.Engine(store, activity_threads=4) as engine:
        running = engine.start(busy, 100, workflow_id="busy")
        handles = [engine.start(one, i, workflow_id=f"due{i}", start_delay=0) for i in range(30)]
        assert [h.result(timeout=60) for h in handles] == [i + 1 for i in range(30)]
        assert running.result(timeout=60) == 100


def test_a_lock_that_fails_with_an_os_error_is_raised_by_start_not_waited_on(db: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # fcntl raises ENOLCK on some network filesystems: start() used to wait for ever on the driver
    import errno

    store = rk.SqliteStore(db)

    def no_locks(key: str) -> bool:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(store._locks, "try_acquire", no_locks)  # where fcntl raises it
    with rk.Engine(store, activity_threads=2) as engine, pytest.raises(OSError, match="No locks available"):
        engine.start(one, 1, workflow_id="nfs")
    store.close()


@rk.workflow
def parent_of_one(ctx: rk.Context, i: int) -> rk.Flow[int]:
    yield add(i, 0)
    return (yield rk.child_workflow(one, i))


def test_child_workflows_finish_in_power_mode(any_db: str) -> None:
    # A child is created in its parent's open batch. On PostgreSQL its lock was stamped on its row from
    # another connection, which could not see that uncommitted row: the child's first step was refused as
    # "no longer driven by this process" and its parent waited for ever. Children are locked before they
    # are created, and recorded as the lock holder's from their first row.
    with open_store(any_db, durability="power") as store, rk.Engine(store, activity_threads=4) as engine:
        handles = [engine.start(parent_of_one, i, workflow_id=f"parent{i}") for i in range(4)]
        assert [h.result(timeout=30) for h in handles] == [i + 1 for i in range(4)]


def test_a_start_with_arguments_the_workflow_cannot_take_records_nothing(db: str) -> None:
    @rk.workflow(name="start.takes_two")
    def takes_two(ctx: rk.Context, a: int, b: int = 2) -> rk.Flow[int]:
        return a + b
        yield

    with rk.Engine(db) as engine:
        with pytest.raises(TypeError, match=r"'start.takes_two' cannot be started with these arguments \(too many "
                                            r"positional arguments\): it takes \(ctx: .*, a: .*int.*, b: .*= 2\)"):
            engine.start(takes_two, 1, 2, 3, workflow_id="t")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
            engine.start(takes_two, 1, c=3, workflow_id="t")  # type: ignore[call-overload]
        assert engine.store.info("t") is None
        assert engine.start(takes_two, 1, workflow_id="t").result(timeout=10) == 3
    with rk.Client(db) as client, pytest.raises(TypeError, match="cannot be started"):
        client.start(takes_two, workflow_id="queued")

