"""End to end through rk.run and rk.Engine on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import replaykit as rk
from replaykit.store import open_store

from helpers import adder, journal, read_journal

calls: list[str] = []


@rk.activity
def record_call(tag: str) -> str:
    calls.append(tag)
    return tag


@rk.activity
def fail(message: str) -> None:
    raise KeyError(message)


@rk.activity
async def async_double(x: int) -> int:
    return 2 * x


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def test_generator_workflow_runs_and_rerun_returns_recorded_result(any_db: str) -> None:
    assert rk.run(adder, 5, workflow_id="a", db=any_db) == 0 + 1 + 2 + 3 + 4
    with open_store(any_db) as store:
        events = list(store.events("a"))
        assert [e.seq for e in events] == list(range(7))
        assert [e.kind for e in events] == ["start"] + ["activity"] * 5 + ["result"]
        assert store.info("a").status is rk.Status.COMPLETED  # type: ignore[union-attr]
    assert rk.run(adder, 5, workflow_id="a", db=any_db) == 10
    with open_store(any_db) as store:
        assert len(list(store.events("a"))) == 7  # nothing re-recorded


def test_completed_activities_are_not_rerun(any_db: str) -> None:
    @rk.workflow
    def flow(ctx: rk.Context):
        yield record_call("one")
        yield record_call("two")
        return "done"

    assert rk.run(flow, workflow_id="f", db=any_db) == "done"
    assert rk.run(flow, workflow_id="f", db=any_db) == "done"
    assert calls == ["one", "two"]


def test_coroutine_workflow_with_sync_and_async_activities(any_db: str) -> None:
    @rk.workflow
    async def flow(ctx: rk.Context, x: int) -> list[Any]:
        a = await async_double(x)
        b = await record_call(f"saw {a}")
        return [a, b]

    assert rk.run(flow, 21, workflow_id="c", db=any_db) == [42, "saw 42"]
    with rk.Engine(any_db) as engine:  # thread-pool executor too
        assert engine.start(flow, 2, workflow_id="c2").result(timeout=10) == [4, "saw 4"]


def test_activity_exception_is_thrown_into_workflow_and_replayed(any_db: str, tmp_path: Any) -> None:
    log = str(tmp_path / "journal")

    @rk.workflow
    def flow(ctx: rk.Context):
        try:
            yield fail("no such key")
        except KeyError as exc:
            journal(log, f"caught {exc.args[0]} replaying={ctx.is_replaying}")
            caught = exc.args[0]
        finally:
            journal(log, "finally")
        yield rk.sleep(0)
        return caught

    assert rk.run(flow, workflow_id="e", db=any_db) == "no such key"
    assert read_journal(log) == ["caught no such key replaying=False", "finally"]
    with open_store(any_db) as store:
        error = list(store.events("e"))[1]
        assert error.outcome == "error"
        record = error.value()
        assert record["type"] == "builtins.KeyError" and "no such key" in record["message"]
        assert "Traceback" in record["traceback"] and "raise KeyError" in record["traceback"]


def test_unhandled_exception_fails_the_workflow_and_is_recorded(any_db: str) -> None:
    @rk.workflow
    def flow(ctx: rk.Context):
        yield record_call("before")
        raise ValueError("the order is invalid")

    for _ in range(2):  # the second time comes from the history
        with pytest.raises(rk.WorkflowFailed) as err:
            rk.run(flow, workflow_id="x", db=any_db)
        assert err.value.error_type == "builtins.ValueError"
        assert err.value.message == "the order is invalid"
        assert 'raise ValueError("the order is invalid")' in err.value.traceback
        assert isinstance(err.value.__cause__, ValueError)
    assert calls == ["before"]
    with open_store(any_db) as store:
        assert store.info("x").status is rk.Status.FAILED  # type: ignore[union-attr]


def test_unpicklable_activity_exception_becomes_activity_failed(any_db: str) -> None:
    class Unpicklable(Exception):
        def __reduce__(self) -> Any:
            raise TypeError("no pickling")

    @rk.activity
    def explode() -> None:
        raise Unpicklable("kaboom")

    @rk.workflow
    def flow(ctx: rk.Context):
        try:
            yield explode()
        except rk.ActivityFailed as exc:
            return [exc.error_type.endswith("Unpicklable"), exc.message]

    assert rk.run(flow, workflow_id="u", db=any_db) == [True, "kaboom"]


def test_ctx_now_random_uuid_are_stable_across_replay(any_db: str) -> None:
    seen: list[Any] = []

    @rk.workflow
    def flow(ctx: rk.Context):
        seen.append((ctx.now(), ctx.random().random(), ctx.uuid4()))
        yield record_call("x")
        seen.append((ctx.now(), ctx.random().random(), ctx.uuid4()))
        yield rk.wait_signal("go")
        return str(ctx.uuid4())

    with rk.Engine(any_db) as engine:
        engine.start(flow, workflow_id="d")
        _wait_for(lambda: len(seen) == 2)
    live = list(seen)
    seen.clear()
    rk.send_signal(any_db, "d", "go")
    rk.run(flow, workflow_id="d", db=any_db)
    assert seen[:2] == live
    assert live[0][0] < live[1][0] or live[0][0] == live[1][0]
    assert live[0][1] != live[1][1]


def test_is_replaying_and_logger_silence(any_db: str, caplog: pytest.LogCaptureFixture) -> None:
    flags: list[bool] = []

    @rk.workflow
    def flow(ctx: rk.Context):
        flags.append(ctx.is_replaying)
        ctx.logger.info("starting")
        yield record_call("a")
        flags.append(ctx.is_replaying)
        ctx.logger.info("middle")
        yield record_call("b")
        flags.append(ctx.is_replaying)
        ctx.logger.info("waiting")
        yield rk.wait_signal("go")
        flags.append(ctx.is_replaying)
        ctx.logger.info("finishing")

    caplog.set_level(logging.INFO, logger="replaykit.workflow")
    with rk.Engine(any_db) as engine:
        engine.start(flow, workflow_id="l")
        _wait_for(lambda: len(flags) == 3)
    rk.send_signal(any_db, "l", "go")
    rk.run(flow, workflow_id="l", db=any_db)
    # Replayed code (up to the last recorded event) is silent; what follows it runs live again.
    assert flags == [False, False, False, True, True, False, False]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["[l] starting", "[l] middle", "[l] waiting", "[l] waiting", "[l] finishing"]


def test_side_effect_runs_once(any_db: str) -> None:
    counter = iter(range(100))

    @rk.workflow
    def flow(ctx: rk.Context):
        value = yield rk.side_effect(lambda: next(counter))
        yield rk.wait_signal("go")
        return value

    with rk.Engine(any_db) as engine:
        engine.start(flow, workflow_id="s")
        _wait_for(lambda: _last_seq(any_db, "s") == 1)
    rk.send_signal(any_db, "s", "go")
    assert rk.run(flow, workflow_id="s", db=any_db) == 0
    assert next(counter) == 1  # the side effect ran exactly once


def test_idempotency_key_is_reachable_and_stable(any_db: str) -> None:
    @rk.activity
    def keyed() -> str:
        info = rk.activity_info()
        return f"{info.idempotency_key}|{info.activity}"

    @rk.workflow
    def flow(ctx: rk.Context):
        a = yield keyed()
        b = yield keyed()
        return [a, b]

    assert rk.run(flow, workflow_id="k", db=any_db) == [f"k:1:1|{keyed.name}", f"k:2:1|{keyed.name}"]


def test_engine_runs_activities_of_different_workflows_concurrently(any_db: str) -> None:
    barrier = threading.Barrier(3, timeout=10)

    @rk.activity
    def meet() -> str:
        barrier.wait()  # breaks (and fails) unless all three run at the same time
        return "met"

    @rk.workflow
    def flow(ctx: rk.Context):
        return (yield meet())

    with rk.Engine(any_db, activity_threads=4) as engine:
        handles = [engine.start(flow, workflow_id=f"w{i}") for i in range(3)]
        assert [h.result(timeout=20) for h in handles] == ["met"] * 3
        assert all(h.status() is rk.Status.COMPLETED for h in handles)


def test_result_timeout_and_handle_of_unknown_id(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(waits_forever, workflow_id="t")
        with pytest.raises(rk.ResultTimeoutError, match="has not finished"):
            handle.result(timeout=0.2)
        assert handle.status() is rk.Status.RUNNING
        with pytest.raises(rk.WorkflowNotFoundError):
            engine.handle("nope").status()


def test_a_handle_answers_after_its_engine_closed(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        done = engine.start(adder, 3, workflow_id="done")
        assert done.result(timeout=10) == 3
        parked = engine.start(waits_forever, workflow_id="parked")
    assert done.status() is rk.Status.COMPLETED and done.result(timeout=1) == 3
    assert parked.status() is rk.Status.RUNNING  # left for a later engine, still readable


@rk.workflow
def waits_forever(ctx: rk.Context):
    yield rk.wait_signal("never")


def test_memory_store_has_the_same_semantics() -> None:
    with rk.Engine(rk.MemoryStore()) as engine:
        assert engine.start(adder, 4, workflow_id="m").result(timeout=5) == 6
        assert engine.start(adder, 4, workflow_id="m").result(timeout=5) == 6
        assert [e.kind for e in engine.store.events("m")][-1] == "result"


def _last_seq(db: str, workflow_id: str) -> int:
    with open_store(db) as store:
        if store.info(workflow_id) is None:
            return -1
        last = store.last_event(workflow_id)
        return -1 if last is None else last.seq


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
