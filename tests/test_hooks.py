"""Lifecycle hooks (``engine.on``): each real occurrence told once, in order, after it is committed;
never again when a run is replayed (a real process killed with SIGKILL and run again); a failing
callback changes nothing."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import replaykit as rk

from conftest import PYTHON
from helpers import wait_until

CHILD = str(Path(__file__).with_name("hooks_child.py"))
tries: dict[str, int] = {}


# test_a_run_is_told_step_by_step runs these on a fake clock, which moves only while the engine is idle:
# a wait that came due before the engine parked the run would be answered at once (as on a real clock
# under load), and the run would not be told suspended.
@rk.activity(retry=rk.RetryPolicy(max_attempts=3, backoff=rk.Fixed(0.1)))
def flaky(key: str) -> str:
    tries[key] = tries.get(key, 0) + 1
    if tries[key] == 1:
        raise ConnectionError("first try fails")
    return key


@rk.activity
def broken() -> None:
    raise ValueError("always")


@rk.workflow(name="hooks.journey")
def journey(ctx: rk.Context, key: str) -> rk.Flow[str]:
    got = yield flaky(key)
    yield rk.sleep(0.1)
    answer: str = yield rk.wait_signal("go")
    return got + answer


@rk.workflow(name="hooks.failing")
def failing(ctx: rk.Context) -> rk.Flow[None]:
    yield broken()


@rk.workflow(name="hooks.looping")
def looping(ctx: rk.Context, n: int) -> rk.Flow[int]:
    yield rk.sleep(0)
    if n < 2:
        yield rk.continue_as_new(n + 1)
    return n


class Recorder:
    def __init__(self) -> None:
        self.events: list[rk.HookEvent] = []
        self.changed = threading.Condition()

    def __call__(self, event: rk.HookEvent) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def kinds(self, workflow_id: str) -> list[str]:
        return [e.kind for e in self.events if e.workflow_id == workflow_id]

    def wait_for(self, workflow_id: str, kind: str, count: int = 1) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.kinds(workflow_id).count(kind) >= count, timeout=20), \
                self.kinds(workflow_id)


def test_a_run_is_told_step_by_step(any_db: str) -> None:
    from replaykit.testing.timeskip import FakeClock

    seen = Recorder()
    clock = FakeClock(time.time())
    with rk.Engine(any_db, clock=clock) as engine:
        clock.waiting(+1)  # time skips, as in a test environment, only when the engine is idle: its runs parked
        engine.on("*", seen)
        handle = engine.start(journey, any_db, workflow_id="j")  # a key of its own: its first try fails
        seen.wait_for("j", "run_suspended", count=3)  # the retry's wait, the sleep, and now the signal
        engine.signal("j", "go", "!")
        assert handle.result(timeout=20) == any_db + "!"
        with pytest.raises(rk.WorkflowFailed):
            engine.start(failing, workflow_id="f").result(timeout=20)
        assert engine.start(looping, 0, workflow_id="l").result(timeout=20) == 2
    assert seen.kinds("j") == ["run_created", "run_started",
                               "step_retried", "run_suspended", "step_completed",  # the wait before the 2nd try
                               "run_suspended", "step_completed",  # the sleep
                               "run_suspended", "step_completed", "run_completed"]  # the signal
    retried, completed = (e for e in seen.events if e.workflow_id == "j" and e.step == 1)
    assert (retried.command, retried.attempt, type(retried.error)) == ("activity flaky", 1, ConnectionError)
    assert (completed.command, completed.attempt, completed.error) == ("activity flaky", 2, None)
    assert [e.command for e in seen.events if e.workflow_id == "j" and e.kind == "step_completed"] == [
        "activity flaky", "timer", "signal go"]
    assert seen.kinds("f") == ["run_created", "run_started", "step_failed", "run_failed"]
    failed = [e for e in seen.events if e.kind == "run_failed"][0]
    assert isinstance(failed.error, ValueError) and failed.workflow == "hooks.failing"
    assert seen.kinds("l").count("run_continued") == 2 and seen.kinds("l")[-1] == "run_completed"


def test_pause_and_cancel_are_told(db: str) -> None:
    seen = Recorder()
    with rk.Engine(db, poll_interval=0.02) as engine:
        engine.on("run_paused", seen)
        engine.on("run_resumed", seen)
        off = engine.on("run_cancelled", seen)
        engine.start(journey, "b", workflow_id="p")
        time.sleep(0.2)
        rk.pause(db, "p")
        seen.wait_for("p", "run_paused")
        rk.resume(db, "p")
        seen.wait_for("p", "run_resumed")
        rk.cancel(db, "p")
        seen.wait_for("p", "run_cancelled")
        off()
        engine.start(journey, "c", workflow_id="q")
        engine.cancel("q")
        with pytest.raises(rk.WorkflowCancelled):
            engine.handle("q").result(timeout=20)
    assert seen.kinds("p") == ["run_paused", "run_resumed", "run_cancelled"]
    assert seen.kinds("q") == []  # unsubscribed


def test_a_failing_callback_is_logged_and_changes_nothing(db: str, caplog: pytest.LogCaptureFixture) -> None:
    def boom(event: rk.HookEvent) -> None:
        raise RuntimeError("callback bug")

    seen = Recorder()
    with caplog.at_level(logging.ERROR, logger="replaykit"), rk.Engine(db) as engine:
        engine.on("step_completed", boom)
        engine.on("run_completed", seen)
        handle = engine.start(journey, "d", workflow_id="d")
        time.sleep(0.2)
        engine.signal("d", "go", "?")
        assert handle.result(timeout=20) == "d?"
        seen.wait_for("d", "run_completed")
    assert "a step_completed hook failed" in caplog.text and "callback bug" in caplog.text
    with pytest.raises(ValueError, match="not a lifecycle event"):
        rk.Engine(rk.MemoryStore()).on("run_finished", seen)


def test_nothing_is_told_twice_when_a_killed_run_is_replayed(db: str, tmp_path: Path,
                                                              child_env: dict[str, str]) -> None:
    journal = tmp_path / "journal"
    first = subprocess.Popen([PYTHON, CHILD, db, str(journal)], env=child_env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while "run_suspended" not in (journal.read_text() if journal.exists() else ""):
            assert time.monotonic() < deadline and first.poll() is None, "the first process never parked"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    before = journal.read_text().splitlines()
    assert before == ["run_created None None", "run_started None None", "step_completed 1 activity step",
                      "step_completed 2 activity step", "run_suspended None None"]
    second = subprocess.Popen([PYTHON, CHILD, db, str(journal)], env=child_env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(journal.read_text().splitlines()) < len(before) + 2:  # resumed, and parked again
            assert time.monotonic() < deadline and second.poll() is None, journal.read_text()
            time.sleep(0.02)
        rk.send_signal(db, "h", "go", "done")
        out, _ = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert out == "done\n"
    assert journal.read_text().splitlines()[len(before):] == [
        "run_resumed None None", "run_suspended None None", "step_completed 3 signal go", "run_completed None None"]


def test_a_worker_tells_the_runs_it_drives(any_db: str) -> None:
    seen = Recorder()
    client = rk.Client(any_db)
    try:
        with rk.Worker(any_db, workflows=[failing], heartbeat=0.1, poll_interval=0.02) as worker:
            off = worker.on("*", seen)
            client.start(failing, workflow_id="wf")
            seen.wait_for("wf", "run_failed")
            off()
            client.start(failing, workflow_id="wf2")
            with pytest.raises(rk.WorkflowFailed):
                client.handle("wf2").result(timeout=20)
    finally:
        client.close()
    assert seen.kinds("wf")[-2:] == ["step_failed", "run_failed"] and "run_started" in seen.kinds("wf")
    assert seen.kinds("wf2") == []


@rk.workflow(name="hooks.napping")
def napping(ctx: rk.Context) -> rk.Flow[str]:
    yield rk.sleep(0.5)  # long enough to be still due when the engine starts it, even on a loaded machine
    return "rested"


def test_a_run_woken_after_eviction_is_resumed_not_started_again(any_db: str) -> None:
    seen = Recorder()
    with rk.Engine(any_db, max_cached_runs=0) as engine:  # evicted while it sleeps, replayed when it wakes
        engine.on("*", seen)
        assert engine.start(napping, workflow_id="n").result(timeout=20) == "rested"
    assert seen.kinds("n") == ["run_created", "run_started", "run_suspended", "run_resumed", "step_completed",
                               "run_completed"]


def test_a_delayed_start_is_told_started_once_even_to_a_late_subscriber(db: str) -> None:
    seen = Recorder()
    with rk.Engine(db) as engine:
        handle = engine.start(napping, workflow_id="late", start_delay=0.2)
        engine.on("*", seen)  # after the start was recorded, before it is due
        assert handle.result(timeout=20) == "rested"
    assert seen.kinds("late") == ["run_started", "run_suspended", "step_completed", "run_completed"]


class Watcher:
    """A subscriber object: its methods named after events are subscribed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def step_retried(self, event: rk.HookEvent) -> None:
        self.seen.append((event.kind, event.command))

    def run_failed(self, event: rk.HookEvent) -> None:
        self.seen.append((event.kind, type(event.error).__name__))

    def helper(self, event: rk.HookEvent) -> None:  # not an event's name: never called
        self.seen.append(("helper", None))


def test_a_subscriber_object_gets_the_events_its_methods_name(db: str) -> None:
    watcher = Watcher()
    with rk.Engine(db) as engine:
        off = engine.subscribe(watcher)
        with pytest.raises(rk.WorkflowFailed):
            engine.start(failing, workflow_id="fails-1").result(timeout=10)
        tries.pop("sub", None)
        handle = engine.start(journey, "sub", workflow_id="sub")
        engine.signal("sub", "go", "!")
        assert handle.result(timeout=10) == "sub!"
        wait_until(lambda: len(watcher.seen) >= 2, "both are told (on the hooks' own thread), before unsubscribing")
        off()
        with pytest.raises(rk.WorkflowFailed):
            engine.start(failing, workflow_id="fails-2").result(timeout=10)
        with pytest.raises(TypeError, match="has no method named after a lifecycle event"):
            engine.subscribe(object())
    assert watcher.seen == [("run_failed", "ValueError"), ("step_retried", "activity flaky")]


@rk.activity
def timed(seconds: float) -> list[float]:
    began = time.time()
    time.sleep(seconds)
    return [began, time.time()]


@rk.workflow(name="hooks.three_at_once")
def three_at_once(ctx: rk.Context) -> rk.Flow[list[list[float]]]:
    return (yield rk.all(timed(0.05), timed(0.05), timed(0.05)))


def test_an_attempt_starts_when_it_began_to_run_not_when_it_was_queued(db: str) -> None:
    told: list[rk.HookEvent] = []
    with rk.Engine(db, activity_threads=1) as engine:  # one thread: the second waits for the first to end
        engine.on("step_completed", told.append)
        ran = engine.start(three_at_once, workflow_id="queued").result(timeout=10)
    started = {e.step: e.started for e in told}
    assert len(started) == 3 and all(s is not None for s in started.values())
    spans = sorted((started[step], began, ended) for step, (began, ended) in zip(sorted(started), ran, strict=True))
    for (told_start, began, _), (_, _, ended_before) in zip(spans[1:], spans[:-1], strict=True):
        assert ended_before <= told_start <= began  # it began after the one before it ended, as told
