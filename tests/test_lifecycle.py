"""Cancellation, pause/resume, queries and custom status, child workflows, sagas.

The tests that take ``any_db`` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

import replaykit as rk
from replaykit.commands import utc
from replaykit.testing import TestEnv, export_history, replay
from replaykit.testing.crashes import assert_survives_crashes

from conftest import PYTHON
from helpers import wait_until

log: list[str] = []


@rk.activity
def note(text: str) -> str:
    log.append(text)
    return text


long_job_began, long_job_stopped = threading.Event(), threading.Event()


@rk.activity
def long_job() -> str:
    long_job_began.set()
    for _ in range(200):
        time.sleep(0.05)
        if rk.is_cancelled():
            log.append("long job stopped")
            long_job_stopped.set()
            return "stopped"
    return "finished"


@pytest.fixture(autouse=True)
def _clear() -> None:
    log.clear()
    long_job_began.clear()
    long_job_stopped.clear()


@rk.workflow(name="cancellable")
def cancellable(ctx: rk.Context):
    try:
        yield note("started")
        yield rk.sleep(timedelta(days=30))
        yield note("never")
    except rk.Cancelled:
        yield note("compensated")  # workflow code may still run activities after cancellation
        raise
    finally:
        log.append("finally")


def test_cancel_raises_at_the_yield_runs_compensation_and_ends_cancelled(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        handle = env.start(cancellable, workflow_id="c")
        env.sleep(timedelta(days=1))
        env.engine.cancel("c", "customer asked")
        with pytest.raises(rk.WorkflowCancelled) as err:
            handle.result()
        assert err.value.reason == "customer asked"
        assert handle.status() is rk.Status.CANCELLED
        kinds = [e.kind for e in env.history("c")]
    assert log == ["started", "compensated", "finally"]
    assert kinds == ["start", "activity", "cancel", "activity", "result"]  # the pending timer was cleared


def test_a_cancelled_history_replays_and_resumes_mid_compensation(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        handle = env.start(cancellable, workflow_id="c")
        env.sleep(timedelta(days=1))
        env.engine.cancel("c")
        with pytest.raises(rk.WorkflowCancelled):
            handle.result()
        history = export_history(env.store, "c")
    assert replay(cancellable, history).ok
    # A crash right after the cancellation was recorded: the compensation runs on resume.
    store = rk.MemoryStore()
    store.create("c", "cancellable", history.events[0])
    for event in history.events[1:3]:
        store.record("c", event)
    log.clear()
    with TestEnv(db=store, start=utc(history.events[2].at)) as env:
        with pytest.raises(rk.WorkflowCancelled):
            env.engine.recover()[0].result(timeout=10)
    assert log == ["compensated", "finally"]


def test_cancel_from_another_process_tells_running_activities(any_db: str, child_env: dict[str, str]) -> None:
    @rk.workflow(name="with-long-job")
    def flow(ctx: rk.Context):
        try:
            return (yield long_job())
        except rk.Cancelled:
            return "cancelled cleanly"

    with rk.Engine(any_db, poll_interval=0.02) as engine:
        handle = engine.start(flow, workflow_id="lj")
        assert long_job_began.wait(timeout=10)  # cancelled before it began, it would never run
        subprocess.run([PYTHON, "-c", "import replaykit as rk, sys; rk.cancel(sys.argv[1], 'lj')", any_db],
                       env=child_env, check=True, timeout=60)
        assert handle.result(timeout=10) == "cancelled cleanly"
        assert handle.status() is rk.Status.COMPLETED  # it caught Cancelled and returned
    assert long_job_stopped.wait(timeout=10)  # the activity's thread saw the cancellation and appended
    assert log == ["long job stopped"]


def test_shield_defers_cancellation_until_the_block_ends(any_db: str) -> None:
    @rk.workflow(name="shielded")
    def flow(ctx: rk.Context):
        try:
            with ctx.shield():
                yield rk.sleep(timedelta(hours=1))
                yield note("inside the shield")
            yield note("after the shield")
        except rk.Cancelled:
            return "cancelled after the shield"

    with TestEnv(db=any_db) as env:
        handle = env.start(flow, workflow_id="s")
        env.sleep(timedelta(minutes=10))
        env.engine.cancel("s")
        assert handle.result() == "cancelled after the shield"
    assert log == ["inside the shield"]


def test_cancelling_a_run_that_has_not_started_yet(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        handle = env.start(cancellable, workflow_id="later", start_delay=timedelta(hours=5))
        assert handle.status() is rk.Status.PENDING
        env.engine.cancel("later")
        assert handle.status() is rk.Status.CANCELLED
    assert log == []


def test_pause_stops_at_the_next_yield_and_resume_continues(any_db: str) -> None:
    @rk.workflow(name="pausable")
    def flow(ctx: rk.Context):
        for i in range(4):
            yield rk.sleep(0.15)
            yield note(f"step {i}")
        return "done"

    with rk.Engine(any_db) as engine:
        handle = engine.start(flow, workflow_id="p")
        while not log:
            time.sleep(0.01)
        engine.pause("p")
        assert handle.status() is rk.Status.PAUSED
        time.sleep(0.6)
        paused_at = len(log)
        assert paused_at <= 2  # at most the step under way when pausing finished
    # Paused survives a restart: a new engine does not pick it up...
    with rk.Engine(any_db, workflows=[flow]) as engine:
        assert engine.recover() == []
        time.sleep(0.3)
        assert len(log) == paused_at
        # ...until resumed.
        assert engine.resume("p").result(timeout=10) == "done"
    assert log == [f"step {i}" for i in range(4)]
    with pytest.raises(rk.IllegalTransitionError, match="completed; it cannot become paused"):
        rk.pause(any_db, "p")
    with pytest.raises(rk.IllegalTransitionError, match="not paused"):
        rk.resume(any_db, "p")


@rk.workflow(name="progressing")
def progressing(ctx: rk.Context, total: int):
    done: list[int] = []

    @ctx.query("progress")
    def progress(unit: str = "items") -> str:
        return f"{len(done)}/{total} {unit}"

    for i in range(total):
        yield note(f"item {i}")
        done.append(i)
        ctx.set_status({"done": len(done)})
        if i == 1:
            yield rk.wait_signal("continue")
    return "all done"


def test_queries_answer_from_replayed_state_and_custom_status_is_visible(any_db: str,
                                                                          child_env: dict[str, str]) -> None:
    with rk.Engine(any_db, poll_interval=0.02) as engine:
        handle = engine.start(progressing, 4, workflow_id="q")
        # The custom status is saved when the run parks on its signal: then the queries see item 1 done.
        wait_until(lambda: engine.store.info("q").custom_status == {"done": 2},  # type: ignore[union-attr]
                   "the run waits for its signal", timeout=30)
        assert engine.query("q", "progress") == "2/4 items"
        assert engine.query("q", "progress", unit="rows") == "2/4 rows"
        assert engine.store.info("q").custom_status == {"done": 2}  # type: ignore[union-attr]
        code = "import replaykit as rk, sys; import test_lifecycle; print(rk.query(sys.argv[1], 'q', 'progress'))"
        other = subprocess.run([PYTHON, "-c", code, any_db], env=child_env, capture_output=True, text=True, timeout=60)
        assert other.stdout.strip() == "2/4 items", other.stderr
        with pytest.raises(LookupError, match="has no query 'nope'; it answers: progress"):
            engine.query("q", "nope")
        engine.signal("q", "continue")
        assert handle.result(timeout=10) == "all done"
        assert engine.query("q", "progress") == "4/4 items"  # completed runs answer too
    assert log == ["item 0", "item 1", "item 2", "item 3"]  # queries never re-ran activities


@rk.workflow(name="stage")
def stage(ctx: rk.Context, item: str):
    return (yield note(f"processed {item}"))


@rk.workflow(name="failing-stage")
def failing_stage(ctx: rk.Context):
    yield rk.sleep(1)
    raise ValueError("stage broke")


def test_child_results_failures_and_ids(any_db: str) -> None:
    @rk.workflow(name="pipeline")
    def pipeline(ctx: rk.Context):
        first = yield rk.child_workflow(stage, "a")
        second = yield rk.child_workflow(stage, "b", workflow_id="custom-child-id")
        try:
            yield rk.child_workflow(failing_stage)
        except rk.WorkflowFailed as exc:
            return [first, second, exc.error_type, exc.message]

    with TestEnv(db=any_db) as env:
        assert env.run(pipeline, workflow_id="pipe") == [
            "processed a", "processed b", "builtins.ValueError", "stage broke"]
        assert env.store.info("pipe/1").status is rk.Status.COMPLETED
        assert env.store.info("custom-child-id").status is rk.Status.COMPLETED
        assert env.store.info("pipe/3").status is rk.Status.FAILED


def test_cancelling_a_parent_cancels_its_children(any_db: str) -> None:
    @rk.workflow(name="sleepy-child")
    def sleepy(ctx: rk.Context):
        yield rk.sleep(timedelta(days=10))

    @rk.workflow(name="parent-of-sleepy")
    def parent(ctx: rk.Context):
        yield rk.child_workflow(sleepy)

    with TestEnv(db=any_db) as env:
        handle = env.start(parent, workflow_id="par")
        env.sleep(timedelta(hours=1))
        env.engine.cancel("par")
        with pytest.raises(rk.WorkflowCancelled):
            handle.result()
        env.sleep(timedelta(seconds=1))
        assert env.store.info("par/1").status is rk.Status.CANCELLED


def test_children_survive_a_crash_anywhere() -> None:
    @rk.workflow(name="two-stage-pipeline")
    def pipeline(ctx: rk.Context):
        a = yield rk.child_workflow(stage, "x")
        b = yield rk.all(rk.child_workflow(stage, "y"), note("beside"))
        return [a, b]

    outcome = assert_survives_crashes(pipeline)
    assert outcome.value == ["processed x", ["processed y", "beside"]]


def test_saga_compensates_in_reverse_on_failure(any_db: str) -> None:
    @rk.activity
    def debit(account: str, cents: int) -> None:
        log.append(f"debit {account} {cents}")

    @rk.activity
    def credit(account: str, cents: int) -> None:
        if account == "closed":
            raise ValueError("account closed")
        log.append(f"credit {account} {cents}")

    @rk.workflow(name="transfer")
    def transfer(ctx: rk.Context, source: str, target: str, cents: int):
        saga = rk.Saga()
        try:
            yield debit(source, cents)
            saga.add(credit, source, cents)
            yield credit(target, cents)
            saga.add(debit, target, cents)
            return "transferred"
        except ValueError:
            yield from saga.compensate()
            return "rolled back"

    with TestEnv(db=any_db) as env:
        assert env.run(transfer, "alice", "bob", 500) == "transferred"
        assert env.run(transfer, "alice", "closed", 700) == "rolled back"
    assert log == ["debit alice 500", "credit bob 500", "debit alice 700", "credit alice 700"]


def _unused(*_: Any) -> None:
    pass


def test_cancel_pause_and_resume_from_a_shell(any_db: str, child_env: dict[str, str]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "replaykit", *args], env=child_env, capture_output=True, text=True,
                              timeout=60)

    with rk.Engine(any_db, poll_interval=0.02) as engine:
        handle = engine.start(cancellable, workflow_id="shell")
        while "started" not in log:
            time.sleep(0.01)
        assert cli("pause", any_db, "shell").returncode == 0
        assert handle.status() is rk.Status.PAUSED
        assert cli("resume", any_db, "shell").returncode == 0
        assert cli("cancel", any_db, "shell").returncode == 0
        with pytest.raises(rk.WorkflowCancelled):
            handle.result(timeout=10)
    refused = cli("resume", any_db, "shell")
    assert refused.returncode == 1 and "is cancelled, not paused" in refused.stderr
    assert "cancel 'Cancelled'" in cli("history", any_db, "shell").stdout
    events = json.loads(cli("history", any_db, "shell", "--json").stdout)
    assert [(e["kind"], e["name"], e["outcome"]) for e in events if e["kind"] == "cancel"] == [
        ("cancel", "Cancelled", "error")]


@rk.workflow(name="parked-for-a-day")
def sleeper(ctx: rk.Context):
    yield rk.sleep(86400)


def test_a_resume_from_a_shell_alone_wakes_a_paused_run_among_parked_ones(
        any_db: str, child_env: dict[str, str]) -> None:
    # The resume is a status change, with no signal: the engine's poll must still find the run.
    paused = threading.Event()

    @rk.activity(name="note-once-paused")
    def note_once_paused(text: str) -> str:
        paused.wait(30)  # the run cannot end before the pause is in the store, however slow the shell is
        return note(text)

    @rk.workflow(name="pause-resume-alone")
    def stepping(ctx: rk.Context):
        for i in range(50):
            yield (note(f"alone {i}") if i < 2 else note_once_paused(f"alone {i}"))
            yield rk.sleep(0.02)
        return "done"

    def cli(*args: str) -> None:
        done = subprocess.run([PYTHON, "-m", "replaykit", *args], env=child_env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr

    with rk.Engine(any_db, poll_interval=0.02) as engine:
        for i in range(20):
            engine.start(sleeper, workflow_id=f"parked-{i}")
        handle = engine.start(stepping, workflow_id="alone")
        while "alone 1" not in log:
            time.sleep(0.01)
        cli("pause", any_db, "alone")
        paused.set()
        time.sleep(0.3)
        stopped_at = len(log)
        time.sleep(0.3)
        assert len(log) == stopped_at and handle.status() is rk.Status.PAUSED
        cli("resume", any_db, "alone")
        assert handle.result(timeout=20) == "done"


def test_a_saga_survives_a_crash_anywhere_in_its_compensation() -> None:
    @rk.activity
    def reserve(what: str) -> str:
        if what == "car":
            raise RuntimeError("no cars")
        return what

    @rk.activity
    def release(what: str) -> str:
        return f"released {what}"

    @rk.workflow(name="trip-saga")
    def trip(ctx: rk.Context):
        saga = rk.Saga()
        try:
            for what in ("flight", "hotel", "car"):
                yield reserve(what)
                saga.add(release, what)
        except RuntimeError:
            with ctx.shield():
                return (yield from saga.compensate())

    assert assert_survives_crashes(trip).value == ["released hotel", "released flight"]


def test_a_failed_child_replays_as_the_same_exception() -> None:
    @rk.workflow(name="tolerant-parent")
    def parent(ctx: rk.Context):
        try:
            yield rk.child_workflow(failing_stage)
        except rk.WorkflowFailed as exc:
            return f"child {exc.workflow_id} failed: {exc.message}"

    outcome = assert_survives_crashes(parent)
    assert outcome.value == "child crash-check/1 failed: stage broke"


def test_rerunning_a_paused_workflow_says_so_instead_of_waiting_forever(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(cancellable, workflow_id="paused")
        while "started" not in log:
            time.sleep(0.01)
        engine.pause("paused")
    with pytest.raises(rk.WorkflowPausedError, match="'paused' is paused; resume it"):
        rk.run(cancellable, workflow_id="paused", db=any_db)
