"""A cancelled run's result raises ``WorkflowCancelled``, a timed-out one's ``WorkflowTimedOut``;
neither is a ``WorkflowFailed`` (issue 8, item 11). Parents see the same of their children."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

import replaykit as rk
from replaykit.context import Context
from replaykit.history import ERROR, OK, START, Event
from replaykit.store import open_store
from replaykit.testing import TestEnv


@rk.workflow(name="waits-forever")
def waits(ctx: Context):
    yield rk.wait_signal("never")


def test_the_result_of_a_cancelled_run_is_workflow_cancelled_with_its_reason(any_db: str) -> None:
    with rk.Engine(any_db, poll_interval=0.02) as engine:
        handle = engine.start(waits, workflow_id="w")
        engine.cancel("w", "customer asked")
        with pytest.raises(rk.WorkflowCancelled) as err:
            handle.result(timeout=10)
        assert handle.status() is rk.Status.CANCELLED
    cancelled = err.value
    assert cancelled.workflow_id == "w" and cancelled.reason == "customer asked"
    assert isinstance(cancelled, rk.Cancelled) and not isinstance(cancelled, rk.WorkflowFailed)
    assert not isinstance(cancelled, rk.WorkflowTimedOut)
    assert "customer asked" in str(cancelled)
    with pytest.raises(rk.WorkflowCancelled, match="customer asked"):  # a rerun reads the recorded end
        rk.run(waits, workflow_id="w", db=any_db)


def test_cancelling_a_pending_run_ends_it_cancelled(any_db: str) -> None:
    # Right after start() returns: the engine must not hold the pending run's lock then (on PostgreSQL a
    # cancel from another store object was refused as "driven by another process" when it did).
    with rk.Engine(any_db) as engine:
        for i in range(20):
            engine.start(waits, workflow_id=f"later-{i}", start_delay=timedelta(days=1))
            rk.cancel(any_db, f"later-{i}", "not needed")
        for i in range(20):
            handle = engine.handle(f"later-{i}")
            with pytest.raises(rk.WorkflowCancelled, match="not needed"):
                handle.result(timeout=10)
            assert handle.status() is rk.Status.CANCELLED


def test_the_result_of_a_timed_out_run_is_workflow_timed_out(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        handle = env.start(waits, workflow_id="slow", timeout=timedelta(hours=1))
        with pytest.raises(rk.WorkflowTimedOut) as err:
            handle.result(timeout=10)
        assert handle.status() is rk.Status.TIMED_OUT
    assert isinstance(err.value, rk.WorkflowCancelled) and isinstance(err.value, rk.TimedOut)
    assert not isinstance(err.value, rk.WorkflowFailed)
    assert err.value.workflow_id == "slow" and "ran past its timeout" in err.value.reason
    assert str(err.value).startswith("workflow 'slow' timed out:")


def test_a_run_that_catches_cancellation_and_fails_is_still_failed(any_db: str) -> None:
    @rk.workflow(name="fails-when-cancelled")
    def flow(ctx: Context):
        try:
            yield rk.sleep(timedelta(days=1))
        except rk.Cancelled as exc:
            raise ValueError("could not undo") from exc

    with TestEnv(db=any_db) as env:
        handle = env.start(flow, workflow_id="f")
        env.sleep(60)
        env.engine.cancel("f")
        with pytest.raises(rk.WorkflowFailed, match="could not undo"):
            handle.result(timeout=10)
        assert handle.status() is rk.Status.FAILED


@rk.workflow(name="sleepy-stage")
def sleepy_stage(ctx: Context):
    yield rk.sleep(timedelta(days=1))
    return "slept"


def test_a_parent_sees_its_cancelled_child_as_workflow_cancelled(any_db: str) -> None:
    @rk.workflow(name="tolerant-of-cancel")
    def parent(ctx: Context):
        try:
            return (yield rk.child_workflow(sleepy_stage))
        except rk.WorkflowCancelled as exc:
            return f"child {exc.workflow_id} cancelled: {exc.reason}"

    with TestEnv(db=any_db) as env:
        handle = env.start(parent, workflow_id="par")
        env.sleep(60)
        env.engine.cancel("par/1", "operator")
        assert handle.result(timeout=10) == "child par/1 cancelled: operator"
        assert env.store.info("par/1").status is rk.Status.CANCELLED
        assert handle.status() is rk.Status.COMPLETED


def test_a_parent_that_lets_its_childs_cancellation_escape_ends_cancelled(any_db: str) -> None:
    @rk.workflow(name="lets-it-escape")
    def parent(ctx: Context):
        return (yield rk.child_workflow(sleepy_stage))

    with TestEnv(db=any_db) as env:
        handle = env.start(parent, workflow_id="esc")
        env.sleep(60)
        env.engine.cancel("esc/1", "operator")
        with pytest.raises(rk.WorkflowCancelled, match="operator") as err:
            handle.result(timeout=10)
        assert handle.status() is rk.Status.CANCELLED
    assert err.value.workflow_id == "esc"


def test_a_parent_history_recorded_before_the_change_replays_as_recorded(any_db: str) -> None:
    """Histories where a cancelled child was recorded as WorkflowFailed keep replaying that way."""

    @rk.workflow(name="old-parent")
    def parent(ctx: Context):
        try:
            yield rk.child_workflow(sleepy_stage)
        except rk.WorkflowFailed as exc:
            return f"failed: {exc.error_type}"
        except rk.WorkflowCancelled:
            return "cancelled"
        yield rk.sleep(1)

    old = rk.WorkflowFailed("old/1", "replaykit.errors.Cancelled", "cancelled", "")
    start = '{"args":[],"kwargs":{},"seed":1,"rules":2}'
    with open_store(any_db) as store:
        store.create("old", "old-parent", Event(0, 0, START, "old-parent", time.time(), OK, "json", start))
        store.record("old", Event(1, 1, "child", "sleepy-stage", time.time(), ERROR, *store.codec.encode_error(old)))
    assert rk.run(parent, workflow_id="old", db=any_db) == "failed: replaykit.errors.Cancelled"


def test_a_cancelled_scheduled_run_does_not_end_its_schedule(any_db: str) -> None:
    fired: list[str] = []

    @rk.workflow(name="scheduled-job")
    def job(ctx: Context):
        fired.append(ctx.workflow_id)
        yield rk.sleep(timedelta(minutes=30))

    with TestEnv(db=any_db) as env:
        env.engine.schedule("hourly", job, "0 * * * *")
        env.sleep(timedelta(minutes=70))
        first = fired[0]
        env.engine.cancel(first, "skip this one")
        env.sleep(timedelta(hours=1))
        assert env.store.info(first).status is rk.Status.CANCELLED
        assert env.store.info("schedule:hourly").status is rk.Status.RUNNING
        assert len(fired) >= 2


def test_a_delayed_run_cancelled_from_elsewhere_ends_its_handle_at_once(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(waits, workflow_id="later", start_delay=timedelta(hours=1))
        deadline = time.monotonic() + 10
        while engine._timers.next_deadline() is None:  # the engine has parked it until its start time
            assert time.monotonic() < deadline
            time.sleep(0.01)
        rk.cancel(any_db, "later", "not needed")  # as another process would, by path or URL
        with pytest.raises(rk.WorkflowCancelled, match="not needed"):
            handle.result(timeout=10)


def test_a_pending_run_is_not_locked_while_the_engine_is_busy(any_db: str) -> None:
    # The engine used to lock a run it had just created pending, to find it pending, and to give the lock
    # back only after its next commit: a cancel from another store object meanwhile (here, while the
    # driver is kept busy) was refused on PostgreSQL as "driven by another process".
    import time

    with rk.Engine(any_db) as engine:
        engine.start(waits, workflow_id="busy-later", start_delay=timedelta(days=1))
        engine._post(lambda: time.sleep(0.6))  # the driver's turn goes on; it commits after this
        time.sleep(0.2)
        rk.cancel(any_db, "busy-later", "not needed")
        with pytest.raises(rk.WorkflowCancelled, match="not needed"):
            engine.handle("busy-later").result(timeout=10)
