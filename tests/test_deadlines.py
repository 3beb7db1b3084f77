"""A run's timeout against runs nobody drove for a while (their engine closed or crashed, or evicted
them): what came before the deadline is delivered first, then the timeout, once; nothing starts after it.

The tests that take ``any_db`` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import replaykit as rk
from replaykit.executor import Executor
from replaykit.history import CANCEL
from replaykit.store import open_store
from replaykit.testing.timeskip import FakeClock

from helpers import journal, read_journal, wait_until

TIMEOUT = 0.6  # each run's timeout; a test waits past it before another engine takes the run up
# The timeout of a run that something done from outside (a signal, a cancel, a child's end) must reach
# before its deadline: a margin for a loaded machine, where closing an engine can take seconds.
LONG_TIMEOUT = 3.0
MARGIN = 0.05  # how long past a deadline a test waits, on the store's clock


def _parked(engine: rk.Engine, workflow_id: str) -> None:
    wait_until(lambda: workflow_id in engine._runs and not engine._runs[workflow_id].executions
               and engine._runs[workflow_id].machine.outstanding, f"{workflow_id} waits")


def _past(db: str, workflow_id: str, after: float) -> None:
    """Wait until ``after`` seconds have passed since the run's start (as recorded: its start event's time).
    The deadlines counted from it have then passed, however long the steps before took."""
    with open_store(db) as store:
        start = next(iter(store.events(workflow_id)))
    time.sleep(max(0.0, start.at + after + MARGIN - time.time()))


class _Ahead:
    """The wall clock moved forward by ``ahead`` seconds."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def now(self) -> float:
        return time.time() + self.ahead


def _taken_up(db: str, workflow_id: str, after: float) -> tuple[str, Any]:
    """A fresh engine takes the run up once ``after`` seconds have passed since the run's start, on its
    clock: (status, result or error). Its clock runs ahead of the wall clock, so the test does not wait."""
    with open_store(db) as store:
        start = next(iter(store.events(workflow_id)))
    with rk.Engine(db, clock=_Ahead(max(0.0, start.at + after + MARGIN - time.time()))) as engine:
        [handle] = [h for h in engine.recover() if h.workflow_id == workflow_id]
        try:
            result: Any = handle.result(timeout=15)
        except (rk.WorkflowFailed, rk.WorkflowCancelled) as ended:
            result = ended
        return handle.status().value, result


def _timeouts(db: str, workflow_id: str) -> int:
    with rk.Engine(db) as engine:
        return sum(1 for e in engine.store.events(workflow_id) if e.kind == CANCEL and e.name == "TimedOut")


@rk.workflow(name="dl_sleeps_then_sleeps")
def sleeps_then_sleeps(ctx: rk.Context, first: float) -> Any:
    yield rk.sleep(first)
    yield rk.sleep(30)
    return "slept"


def test_a_timer_due_before_the_deadline_fires_and_the_next_sleep_times_out(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(sleeps_then_sleeps, 0.2, workflow_id="t", timeout=TIMEOUT)
        _parked(engine, "t")
    status, error = _taken_up(any_db, "t", TIMEOUT)
    assert status == "timed_out" and isinstance(error, rk.WorkflowTimedOut)
    with rk.Engine(any_db) as engine:
        kinds = [e.kind for e in engine.store.events("t")]
    assert kinds == ["start", "timer", "cancel", "result"]  # the first timer, then the timeout


@rk.workflow(name="dl_waits_for_go")
def waits_for_go(ctx: rk.Context) -> Any:
    return (yield rk.wait_signal("go"))


def test_a_signal_sent_before_the_deadline_is_taken_after_it(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(waits_for_go, workflow_id="s", timeout=LONG_TIMEOUT)
        _parked(engine, "s")
    rk.send_signal(any_db, "s", "go", "went")  # nobody drives the run: it waits in the inbox
    assert _taken_up(any_db, "s", LONG_TIMEOUT) == ("completed", "went")


def test_a_signal_sent_after_the_deadline_is_not_taken(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(waits_for_go, workflow_id="s", timeout=TIMEOUT)
        _parked(engine, "s")
    _past(any_db, "s", TIMEOUT)
    rk.send_signal(any_db, "s", "go", "too late")
    status, error = _taken_up(any_db, "s", TIMEOUT)
    assert status == "timed_out" and isinstance(error, rk.WorkflowTimedOut)


@rk.workflow(name="dl_short_child")
def short_child(ctx: rk.Context) -> Any:
    yield rk.sleep(0.1)
    return "child done"


@rk.workflow(name="dl_parent")
def parent(ctx: rk.Context) -> Any:
    return (yield rk.child_workflow(short_child, workflow_id="dl-child"))


def test_a_child_that_ended_before_the_deadline_answers_its_parent_after_it(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(parent, workflow_id="p", timeout=LONG_TIMEOUT)
        wait_until(lambda: "dl-child" in engine._runs, "the child runs")
    with rk.Engine(any_db) as engine:  # drives the child alone: the parent is left past its deadline
        assert engine.start(short_child, workflow_id="dl-child").result(timeout=10) == "child done"
    assert _taken_up(any_db, "p", LONG_TIMEOUT) == ("completed", "child done")


@rk.workflow(name="dl_parent_of_sleeper")
def parent_of_sleeper(ctx: rk.Context) -> Any:
    return (yield rk.child_workflow(sleeps_then_sleeps, 5.0, workflow_id="dl-sleeper"))


def test_a_parent_past_its_deadline_cancels_the_child_it_started(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(parent_of_sleeper, workflow_id="p", timeout=TIMEOUT)
        wait_until(lambda: "dl-sleeper" in engine._runs, "the child runs")
    status, _ = _taken_up(any_db, "p", TIMEOUT)
    assert status == "timed_out"
    with rk.Engine(any_db) as engine:
        wait_until(lambda: engine.handle("dl-sleeper").status() is rk.Status.CANCELLED, "the child is cancelled")


@rk.activity(schedule_to_close=0.2)
def slow_write(path: str) -> str:
    journal(path, "began")
    time.sleep(1.5)
    return "written"


@rk.workflow(name="dl_writes")
def writes(ctx: rk.Context, path: str) -> Any:
    try:
        return (yield slow_write(path))
    except rk.ActivityTimeoutError as exc:
        return exc.kind


def test_an_activity_whose_schedule_to_close_passed_first_fails_with_it_and_is_not_run_again(
        any_db: str, tmp_path: Any) -> None:
    path = str(tmp_path / "journal")
    with rk.Engine(any_db) as engine:
        engine.start(writes, path, workflow_id="w", timeout=TIMEOUT)
        wait_until(lambda: read_journal(path) == ["began"], "the activity began")
    assert _taken_up(any_db, "w", TIMEOUT) == ("completed", "schedule_to_close")
    assert read_journal(path) == ["began"]  # its time was up: no second attempt


def test_a_cancel_asked_before_the_deadline_wins_over_the_timeout(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(sleeps_then_sleeps, 30.0, workflow_id="c", timeout=LONG_TIMEOUT)
        _parked(engine, "c")
    rk.cancel(any_db, "c", "asked first")
    status, error = _taken_up(any_db, "c", LONG_TIMEOUT)
    assert status == "cancelled" and "asked first" in str(error)


def test_a_cancel_asked_after_the_deadline_comes_after_the_timeout(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(sleeps_then_sleeps, 30.0, workflow_id="c", timeout=TIMEOUT)
        _parked(engine, "c")
    _past(any_db, "c", TIMEOUT)
    rk.cancel(any_db, "c", "asked late")
    status, error = _taken_up(any_db, "c", TIMEOUT)
    assert status == "timed_out" and isinstance(error, rk.WorkflowTimedOut)


@rk.activity
def undo(path: str) -> str:
    journal(path, "undone")
    return "undone"


@rk.workflow(name="dl_compensates")
def compensates(ctx: rk.Context, path: str) -> Any:
    try:
        yield rk.sleep(30)
    except rk.TimedOut:
        yield undo(path)
        yield rk.sleep(0.05)
        return "compensated"
    return "slept"


@pytest.mark.parametrize("left", ["closed", "evicted"])
def test_a_run_that_catches_its_timeout_compensates_once(any_db: str, tmp_path: Any, left: str) -> None:
    path = str(tmp_path / "journal")
    if left == "closed":
        with rk.Engine(any_db) as engine:
            engine.start(compensates, path, workflow_id="k", timeout=TIMEOUT)
            _parked(engine, "k")
        assert _taken_up(any_db, "k", TIMEOUT) == ("completed", "compensated")
    else:
        with rk.Engine(any_db, max_cached_runs=0) as engine:
            handle = engine.start(compensates, path, workflow_id="k", timeout=TIMEOUT)
            wait_until(lambda: "k" in engine._evicted, "the run is evicted")
            assert handle.result(timeout=10) == "compensated"
    assert read_journal(path) == ["undone"]
    assert _timeouts(any_db, "k") == 1


@rk.workflow(name="dl_shielded")
def shielded(ctx: rk.Context, then_sleep: bool) -> Any:
    with ctx.shield():
        yield rk.sleep(0.9)
    if then_sleep:
        yield rk.sleep(0.05)
    return "done"


def test_a_shielded_wait_past_the_deadline_finishes_then_the_timeout_ends_the_run(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(shielded, True, workflow_id="h", timeout=0.3)
        _parked(engine, "h")
    status, error = _taken_up(any_db, "h", 0.9)  # past both the deadline (0.3) and the shielded sleep
    assert status == "timed_out" and isinstance(error, rk.WorkflowTimedOut)
    with rk.Engine(any_db) as engine:
        assert [e.kind for e in engine.store.events("h")] == ["start", "cancel", "timer", "result"]


def test_a_timeout_held_by_a_shield_is_not_raised_at_a_return_right_after_it(any_db: str) -> None:
    """As in a live run: a cancellation is raised at a yield; what the workflow returns stands."""
    with rk.Engine(any_db) as engine:
        engine.start(shielded, False, workflow_id="h", timeout=0.3)
        _parked(engine, "h")
    assert _taken_up(any_db, "h", 0.9) == ("completed", "done")
    assert _timeouts(any_db, "h") == 1


@rk.workflow(name="dl_naps")
def naps(ctx: rk.Context, seconds: float) -> Any:
    yield rk.sleep(seconds)
    return "woke"


@rk.workflow(name="dl_signal_or_nap")
def signal_or_nap(ctx: rk.Context) -> Any:
    index, _ = yield rk.any(rk.wait_signal("never"), rk.sleep(0.2))
    return f"branch {index}"


def _stopped_clock() -> FakeClock:
    """For the engine that starts a run: its 0.2 s timer must not fire there, however slowly the engine closes
    on a loaded machine, so that the engine taking the run up after its deadline finds the timer due too."""
    return FakeClock(time.time())


def test_in_an_any_a_timer_due_before_the_deadline_wins_over_a_sibling_with_no_answer(any_db: str) -> None:
    with rk.Engine(any_db, clock=_stopped_clock()) as engine:
        engine.start(signal_or_nap, workflow_id="a", timeout=TIMEOUT)
        _parked(engine, "a")
    assert _taken_up(any_db, "a", TIMEOUT) == ("completed", "branch 1")


@rk.workflow(name="dl_waits_briefly")
def waits_briefly(ctx: rk.Context) -> Any:
    got = yield rk.wait_signal("go", timeout=0.2)
    return "no signal" if got is None else f"got {got}"


def test_a_signal_wait_that_timed_out_before_the_deadline_returns_none_though_a_later_signal_waits(
        any_db: str) -> None:
    with rk.Engine(any_db, clock=_stopped_clock()) as engine:
        engine.start(waits_briefly, workflow_id="w", timeout=TIMEOUT)
        _parked(engine, "w")
    _past(any_db, "w", TIMEOUT)
    rk.send_signal(any_db, "w", "go", "late")
    assert _taken_up(any_db, "w", TIMEOUT) == ("completed", "no signal")


@rk.workflow(name="dl_chain")
def chain(ctx: rk.Context, generation: int) -> Any:
    if generation == 0:
        yield rk.sleep(0.05)
        yield rk.continue_as_new(1)
    yield rk.sleep(5)
    return "done"


def test_a_run_that_continues_as_new_keeps_its_deadline(tmp_path: Any) -> None:
    with rk.Engine(str(tmp_path / "s.db")) as engine:
        handle = engine.start(chain, 0, workflow_id="c", timeout=TIMEOUT)
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=10)  # before: the next generation had no timeout, slept its 5 s and completed


def test_a_delayed_start_counts_its_timeout_from_when_it_starts() -> None:
    from datetime import timedelta

    from replaykit.testing import TestEnv

    with TestEnv() as env:
        handle = env.start(naps, 60.0, workflow_id="d", start_delay=timedelta(hours=2), timeout=timedelta(hours=1))
        assert handle.result(timeout=20) == "woke"  # before: timed out at its first yield, from its creation


def _effect(path: str) -> int:
    journal(path, "side effect ran")
    return 1


@rk.workflow(name="dl_naps_then_effect")
def naps_then_effect(ctx: rk.Context, path: str) -> Any:
    yield rk.sleep(0.2)
    yield rk.side_effect(lambda: _effect(path))
    yield rk.sleep(30)
    return "done"


def test_a_side_effect_held_back_by_a_pause_does_not_run_past_the_deadline(tmp_path: Any) -> None:
    from replaykit.testing.timeskip import FakeClock

    db, path = str(tmp_path / "s.db"), str(tmp_path / "journal")
    clock = FakeClock(time.time())  # its sleep ends when the test moves the clock: after the pause is held
    paused = threading.Event()
    with rk.Engine(db, poll_interval=0.02, clock=clock) as engine:
        engine.on("run_paused", lambda event: paused.set())
        engine.start(naps_then_effect, path, workflow_id="p", timeout=TIMEOUT)
        _parked(engine, "p")
        engine.pause("p")
        assert paused.wait(timeout=20)  # the engine holds the pause
        clock.advance_to(clock.now() + 0.2)
        wait_until(lambda: [e.kind for e in engine.store.events("p")] == ["start", "timer"], "its sleep ends",
                   timeout=20)
    _past(db, "p", TIMEOUT)
    rk.resume(db, "p")
    status, _ = _taken_up(db, "p", TIMEOUT)
    assert status == "timed_out" and read_journal(path) == []


@rk.workflow(name="dl_worker_child")
def worker_child(ctx: rk.Context) -> Any:
    yield rk.sleep(8)
    return "child done"


@rk.workflow(name="dl_worker_parent")
def worker_parent(ctx: rk.Context) -> Any:
    return (yield rk.child_workflow(worker_child, workflow_id="dl-worker-child"))


def test_a_parent_driven_by_workers_times_out_while_its_child_runs(tmp_path: Any) -> None:
    db = str(tmp_path / "s.db")
    with rk.Worker(db, workflows=[worker_parent, worker_child], heartbeat=0.1) as _, rk.Client(db) as client:
        handle = client.start(worker_parent, workflow_id="p", timeout=TIMEOUT)
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=6)  # before: claimed and handed back in a loop until the child ended
        wait_until(lambda: client.handle("dl-worker-child").status() is rk.Status.CANCELLED, "the child is cancelled")


@rk.workflow(name="dl_two_generations")
def two_generations(ctx: rk.Context, generation: int) -> Any:
    if generation == 1:
        yield rk.sleep(0.2)
        yield rk.continue_as_new(2)
    return (yield rk.wait_signal("go"))


def test_a_run_taken_up_late_that_continues_as_new_keeps_its_passed_deadline(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(two_generations, 1, workflow_id="x", timeout=TIMEOUT)
        _parked(engine, "x")
    _past(any_db, "x", TIMEOUT)
    rk.send_signal(any_db, "x", "go", "sent after the deadline")
    status, error = _taken_up(any_db, "x", TIMEOUT)  # the first sleep came before it, then the next generation
    assert status == "timed_out" and isinstance(error, rk.WorkflowTimedOut)  # before: its deadline moved to now



ENDED = threading.Event()  # set when a slow step below has ended (its answer came after the deadline)


def _slowly(seconds: float) -> str:
    time.sleep(seconds)
    ENDED.set()
    return "done"


@rk.activity
def slow(seconds: float) -> str:
    return _slowly(seconds)


@rk.workflow(name="dl_slow_step")
def slow_step(ctx: rk.Context, seconds: float) -> Any:
    return (yield slow(seconds))


@rk.workflow(name="dl_slow_side_effect")
def slow_side_effect(ctx: rk.Context, seconds: float) -> Any:
    return (yield rk.side_effect(lambda: _slowly(seconds)))


@pytest.mark.parametrize("threads", [0, 4], ids=["inline", "on a thread"])
@pytest.mark.parametrize("workflow", [slow_step, slow_side_effect], ids=["activity", "side effect"])
def test_a_step_that_ends_after_the_deadline_does_not_complete_the_run(db: str, workflow: Any, threads: int) -> None:
    """Inline (``activity_threads=0``, and every side effect) or on a thread, the deadline comes first and
    the late answer is not recorded. Before, a step run inline past the deadline completed its run."""
    ENDED.clear()
    with rk.Engine(db, activity_threads=threads) as engine:
        handle = engine.start(workflow, 1.0, workflow_id="s", timeout=0.3)
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=20)
        assert ENDED.wait(20)
    with rk.Engine(db) as engine:
        assert [e.kind for e in engine.store.events("s")] == ["start", "cancel", "result"]


@rk.workflow(name="dl_shielded_slow_step")
def shielded_slow_step(ctx: rk.Context, seconds: float) -> Any:
    with ctx.shield():
        done = yield rk.side_effect(lambda: _slowly(seconds))
    yield rk.sleep(0.05)
    return done


@pytest.mark.parametrize("threads", [0, 4], ids=["inline", "on a thread"])
def test_a_shielded_step_that_ends_after_the_deadline_keeps_its_answer(db: str, threads: int) -> None:
    """The timeout is recorded when the deadline is seen; the shield keeps the step's answer, which is
    recorded after it (the step runs once), and the timeout is raised at the next yield."""
    ENDED.clear()
    with rk.Engine(db, activity_threads=threads) as engine:
        handle = engine.start(shielded_slow_step, 0.6, workflow_id="s", timeout=0.2)
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=20)
    with rk.Engine(db) as engine:
        assert [e.kind for e in engine.store.events("s")] == ["start", "cancel", "side_effect", "result"]


CLOCK: list[FakeClock] = []  # the running test's engine clock, moved by the activities below
CLOSING: list[rk.Engine] = []
RUNS: list[str] = []


def _five_seconds_pass() -> str:
    RUNS.append("ran")
    CLOCK[0].advance_to(CLOCK[0].now() + 5.0)  # the step takes 5 s of the run's clock: its 1 s timeout passes
    return "done"


@rk.activity(name="dl_slow_with_schedule_to_close", schedule_to_close=0.5)
def slow_with_schedule_to_close() -> str:
    return _five_seconds_pass()


@rk.activity(name="dl_slow_on_the_clock")
def slow_on_the_clock() -> str:
    return _five_seconds_pass()


@rk.activity(name="dl_slow_closing")
def slow_closing() -> str:
    CLOSING[0].close()  # close() (or Ctrl-C) while the inline step runs: it finishes and is recorded
    return _five_seconds_pass()


@rk.workflow(name="dl_one_slow_step")
def one_slow_step(ctx: rk.Context, which: str) -> Any:
    return (yield (slow_with_schedule_to_close() if which == "schedule_to_close" else slow_on_the_clock()))


@rk.workflow(name="dl_shielded_slow")
def shielded_slow(ctx: rk.Context, closing: bool) -> Any:
    with ctx.shield():
        done = yield (slow_closing() if closing else slow_on_the_clock())
    return done


@pytest.mark.parametrize("which", ["plain", "schedule_to_close"])
def test_an_activity_run_serially_past_the_deadline_does_not_complete_the_run(db: str, which: str) -> None:
    """The serial executor (TestEnv(concurrent_activities=False)) runs activities with timeouts inline too;
    a ``schedule_to_close`` still ahead when it began is no answer known before the deadline."""
    CLOCK[:] = [FakeClock(time.time())]
    with rk.Engine(db, clock=CLOCK[0], executor=Executor(0, serial=True)) as engine:
        handle = engine.start(one_slow_step, which, workflow_id="s", timeout=1.0)
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result(timeout=20)


def test_a_shielded_step_past_the_deadline_is_recorded_though_the_engine_closes_meanwhile(db: str) -> None:
    RUNS.clear()
    CLOCK[:] = [FakeClock(time.time())]
    engine = rk.Engine(db, clock=CLOCK[0], activity_threads=0)
    CLOSING[:] = [engine]
    engine.start(shielded_slow, True, workflow_id="c", timeout=1.0)
    engine._thread.join(20)
    engine.close()
    with rk.Engine(db, workflows=[shielded_slow], activity_threads=0) as again:
        for handle in again.recover():
            handle.result(timeout=20)
        kinds = [e.kind for e in again.store.events("c")]
    assert RUNS == ["ran"] and kinds[:3] == ["start", "cancel", "activity"]  # before: lost, and run again


def test_a_kept_late_answer_tells_hooks_when_its_attempt_began(db: str) -> None:
    told: list[Any] = []
    began = time.time()
    CLOCK[:] = [FakeClock(began)]
    with rk.Engine(db, clock=CLOCK[0], activity_threads=0) as engine:
        engine.on("step_completed", told.append)
        assert engine.start(shielded_slow, False, workflow_id="h", timeout=1.0).result(timeout=20) == "done"
    [event] = told
    assert event.started == began  # it began then and ran 5 s


@rk.workflow(name="dl_timer_or_slow_step")
def timer_or_slow_step(ctx: rk.Context, timer_first: bool) -> Any:
    timer, slow_step = rk.sleep(0.5), rk.side_effect(_five_seconds_pass)
    index, _ = yield (rk.any(timer, slow_step) if timer_first else rk.any(slow_step, timer))
    return "the timer" if (index == 0) == timer_first else "the slow step"


@pytest.mark.parametrize("timer_first", [True, False], ids=["timer first", "slow step first"])
def test_a_timer_due_before_the_deadline_wins_over_a_step_that_ran_here_past_it(db: str, timer_first: bool) -> None:
    """The driver ran the side effect for 5 s (of the run's clock); the timer came due at 0.5 s, before
    the 1 s deadline. Before: the timeout came first (timer first), or the late step won (step first)."""
    RUNS.clear()
    CLOCK[:] = [FakeClock(time.time())]
    with rk.Engine(db, clock=CLOCK[0]) as engine:
        handle = engine.start(timer_or_slow_step, timer_first, workflow_id="t", timeout=1.0)
        assert handle.result(timeout=20) == "the timer"
        assert [e.kind for e in engine.store.events("t")] == ["start", "timer", "result"]
