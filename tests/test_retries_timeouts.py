"""Retries with durable backoff, activity timeouts and heartbeats, signal and run timeouts."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

import replaykit as rk
from replaykit.store import open_store
from replaykit.testing import TestEnv
from replaykit.testing.crashes import assert_survives_crashes

attempts: list[int] = []


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def fails_until(n: int) -> Any:
    @rk.activity(name=f"fails-until-{n}", retry=rk.RetryPolicy(max_attempts=5, backoff=rk.Exponential(60, 3600),
                                                               non_retryable=(Fatal,)))
    def flaky(x: int) -> int:
        attempt = rk.activity_info().attempt
        attempts.append(attempt)
        if attempt < n:
            raise Flaky(f"attempt {attempt}")
        return x * 2

    return flaky


@pytest.fixture(autouse=True)
def _clear() -> None:
    attempts.clear()


def test_retries_wait_durably_record_every_attempt_and_expose_the_attempt() -> None:
    flaky = fails_until(3)

    @rk.workflow
    def flow(ctx: rk.Context):
        return (yield flaky(21)), ctx.now().isoformat()

    with TestEnv() as env:
        assert env.run(flow, workflow_id="r") == (42, "2030-01-01T00:03:00+00:00")  # waited 60 s, then 120 s
        history = [(e.step, e.kind, e.name, e.outcome) for e in env.history("r")[1:-1]]
    assert attempts == [1, 2, 3]
    assert history == [(1, "activity", flaky.name, "error"), (1, "timer", "retry", "ok"),
                       (1, "activity", flaky.name, "error"), (1, "timer", "retry", "ok"),
                       (1, "activity", flaky.name, "ok")]


def test_exhausted_or_non_retryable_errors_reach_the_workflow() -> None:
    flaky = fails_until(99)

    @rk.activity(retry=rk.RetryPolicy(max_attempts=5, non_retryable=(Fatal,)))
    def fatal() -> None:
        attempts.append(-1)
        raise Fatal("no point retrying")

    @rk.workflow
    def flow(ctx: rk.Context):
        caught = []
        for call in (flaky(1), fatal()):
            try:
                yield call
            except (Flaky, Fatal) as exc:
                caught.append(str(exc))
        return caught

    with TestEnv() as env:
        assert env.run(flow) == ["attempt 5", "no point retrying"]
    assert attempts == [1, 2, 3, 4, 5, -1]


def test_workflow_default_policy_linear_backoff_and_max_elapsed() -> None:
    @rk.activity
    def always_fails() -> None:
        attempts.append(rk.activity_info().attempt)
        raise Flaky("again")

    @rk.workflow(retry=rk.RetryPolicy(max_attempts=None, backoff=rk.Linear(10, 25), max_elapsed=60))
    def flow(ctx: rk.Context):
        started = ctx.now()
        try:
            yield always_fails()
        except Flaky:
            return (ctx.now() - started).total_seconds()

    with TestEnv() as env:
        # waits 10, 20, 25 (capped): the next 25 would end past 60 s after the first attempt
        assert env.run(flow) == 55.0
    assert attempts == [1, 2, 3, 4]


def test_jitter_is_deterministic_per_run_and_step() -> None:
    policy = rk.RetryPolicy(backoff=rk.Fixed(100), jitter=0.5)
    waits = {policy.next_wait(Flaky(), 1, 0, 0, seed=7, step=3) for _ in range(5)}
    assert len(waits) == 1 and 50 <= waits.pop() <= 150
    assert policy.next_wait(Flaky(), 1, 0, 0, seed=7, step=4) != policy.next_wait(Flaky(), 1, 0, 0, seed=7, step=3)


def test_retrying_until_an_operator_intervenes_with_a_signal() -> None:
    @rk.activity(retry=rk.RetryPolicy(max_attempts=None, backoff=rk.Fixed(3600)))
    def stuck() -> None:
        raise Flaky("the service is down")

    @rk.workflow
    def flow(ctx: rk.Context):
        index, value = yield rk.any(stuck(), rk.wait_signal("skip"))
        return "skipped by operator" if index == 1 else value

    with TestEnv() as env:
        handle = env.start(flow, workflow_id="op")
        env.signal("op", "skip", at=timedelta(days=3, minutes=30))
        assert handle.result() == "skipped by operator"
        retries = [e for e in env.history("op") if e.name == "retry"]
    assert len(retries) == 72  # an attempt every hour for three days


def test_retries_survive_a_crash_anywhere() -> None:
    flaky = fails_until(3)

    @rk.workflow(name="retrying")
    def flow(ctx: rk.Context):
        return (yield flaky(5))

    assert assert_survives_crashes(flow).value == 10


def test_start_to_close_timeout_is_raised_at_the_yield(any_db: str) -> None:
    @rk.activity(timeout=0.2)
    def hangs() -> None:
        for _ in range(100):
            time.sleep(0.05)
            rk.heartbeat()  # raises Cancelled once the engine gave up on it

    @rk.workflow
    def flow(ctx: rk.Context):
        try:
            yield hangs()
        except rk.ActivityTimeoutError as exc:
            return [exc.kind, exc.seconds]

    started = time.monotonic()
    assert rk.run(flow, workflow_id="t", db=any_db) == ["start_to_close", 0.2]
    assert time.monotonic() - started < 3


def test_heartbeat_timeout_and_retry_after_it(any_db: str) -> None:
    @rk.activity(heartbeat_timeout=0.3, retry=rk.RetryPolicy(max_attempts=2, backoff=rk.Fixed(0)))
    def beats_then_hangs() -> str:
        attempt = rk.activity_info().attempt
        attempts.append(attempt)
        if attempt == 2:
            return "second attempt ok"
        for _ in range(4):
            time.sleep(0.1)
            rk.heartbeat({"progress": _})
        time.sleep(1.5)  # stops beating
        return "too late"

    @rk.workflow
    def flow(ctx: rk.Context):
        return (yield beats_then_hangs())

    assert rk.run(flow, workflow_id="h", db=any_db) == "second attempt ok"
    with open_store(any_db) as store:
        first = [e for e in store.events("h") if e.kind == "activity"][0].value()
    assert first["type"] == "replaykit.errors.ActivityTimeoutError" and "heartbeat" in first["message"]


def test_schedule_to_close_bounds_all_attempts(any_db: str) -> None:
    @rk.activity(schedule_to_close=0.5, retry=rk.RetryPolicy(max_attempts=None, backoff=rk.Fixed(0.05)))
    def never_works() -> None:
        raise Flaky("down")

    @rk.workflow
    def flow(ctx: rk.Context):
        try:
            yield never_works()
        except rk.ActivityTimeoutError as exc:
            return exc.kind

    assert rk.run(flow, workflow_id="s", db=any_db) == "schedule_to_close"


def test_run_timeout_raises_timed_out_at_the_current_yield() -> None:
    cleaned: list[str] = []

    @rk.activity
    def clean_up() -> str:
        cleaned.append("yes")
        return "cleaned"

    @rk.workflow
    def slow(ctx: rk.Context):
        try:
            yield rk.sleep(timedelta(days=10))
        finally:
            yield clean_up()

    with TestEnv() as env:
        handle = env.start(slow, workflow_id="slow", timeout=timedelta(days=1))
        with pytest.raises(rk.WorkflowTimedOut):
            handle.result()
        assert handle.status() is rk.Status.TIMED_OUT
        assert env.now().isoformat() == "2030-01-02T00:00:00+00:00"
    assert cleaned == ["yes"]  # the finally block ran, and its activity too


def test_run_timeout_survives_a_restart(any_db: str) -> None:
    @rk.workflow(name="waits-long")
    def waits(ctx: rk.Context):
        yield rk.wait_signal("never")

    from replaykit.testing.timeskip import FakeClock

    # Fake clocks (they move only while somebody waits for a result): the first engine cannot reach the
    # deadline however long it takes to close, and the times recorded are exact, whatever the load.
    began = time.time()
    with rk.Engine(any_db, clock=FakeClock(began)) as engine:
        engine.start(waits, workflow_id="w", timeout=0.6)
    with rk.Engine(any_db, workflows=[waits], clock=FakeClock(began + 0.2)) as engine:  # restarted 0.2 s later
        with pytest.raises(rk.WorkflowTimedOut):
            engine.start(waits, workflow_id="w").result(timeout=10)
        start, cancel, _ = engine.store.events("w")
    assert (cancel.kind, cancel.name) == ("cancel", "TimedOut")
    # The deadline counts from the first start (from the restart, it would have been 0.2 s later).
    assert cancel.at - start.at == pytest.approx(0.6, abs=1e-5)
