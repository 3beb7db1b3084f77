"""Parallel groups: rk.all and rk.any, nested, mixed, concurrent, replayed and crash-resumed."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

import replaykit as rk
from replaykit.store import open_store
from replaykit.testing import TestEnv
from replaykit.testing.crashes import assert_survives_crashes

ran: list[str] = []


@rk.activity
def work(tag: str, seconds: float = 0.0) -> str:
    time.sleep(seconds)
    ran.append(tag)
    return f"done {tag}"


@rk.activity
def broken(tag: str) -> str:
    raise KeyError(tag)


@rk.activity
def slow_and_polite(tag: str) -> str:
    for _ in range(200):  # up to 10 s, unless told to stop
        time.sleep(0.05)
        rk.heartbeat()  # raises rk.Cancelled once the result is no longer wanted
    ran.append(tag)
    return tag


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


@rk.workflow
def fan_out(ctx: rk.Context, n: int):
    results = yield rk.all(*[work(f"item-{i}") for i in range(n)])
    return results


def test_all_returns_results_in_argument_order(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        assert env.run(fan_out, 5) == [f"done item-{i}" for i in range(5)]
        history = env.history(env.engine.store.list()[0].workflow_id)
    assert sorted(e.step for e in history if e.kind == "activity") == [1, 2, 3, 4, 5]


def test_all_of_nothing_is_an_empty_list_and_any_of_nothing_is_refused(any_db: str) -> None:
    @rk.workflow
    def empty(ctx: rk.Context):
        return (yield rk.all())

    with TestEnv(db=any_db) as env:
        assert env.run(empty) == []
    with pytest.raises(ValueError, match="at least one command"):
        rk.any()


def test_activities_in_a_group_really_run_concurrently(any_db: str) -> None:
    barrier = threading.Barrier(3, timeout=10)

    @rk.activity
    def meet(i: int) -> int:
        barrier.wait()  # breaks unless all three run at the same time
        return i

    @rk.workflow
    def flow(ctx: rk.Context):
        return (yield rk.all(meet(1), meet(2), meet(3)))

    assert rk.run(flow, workflow_id="inline", db=any_db) == [1, 2, 3]  # rk.run too, despite inline activities
    with TestEnv(db=any_db) as env:
        assert env.run(flow) == [1, 2, 3]


def test_first_failure_in_all_raises_and_cancels_the_rest(any_db: str) -> None:
    @rk.workflow
    def flow(ctx: rk.Context):
        try:
            yield rk.all(slow_and_polite("slow"), broken("bad"))
        except KeyError as exc:
            return f"caught {exc.args[0]}"

    started = time.monotonic()
    assert rk.run(flow, workflow_id="f", db=any_db) == "caught bad"
    assert time.monotonic() - started < 5  # did not wait for the slow one
    time.sleep(0.2)
    assert ran == []  # the slow activity heard it was cancelled and stopped
    with open_store(any_db) as store:
        kinds = [(e.step, e.kind, e.outcome) for e in store.events("f")]
    assert (1, "activity", "ok") not in kinds and (2, "activity", "error") in kinds


def test_any_first_to_finish_wins_and_the_losers_are_cancelled(any_db: str) -> None:
    @rk.workflow
    def race(ctx: rk.Context):
        index, value = yield rk.any(rk.sleep(timedelta(days=2)), rk.wait_signal("go"), rk.sleep(timedelta(days=1)))
        later = yield rk.sleep(timedelta(days=5))  # the losing 2-day timer must not fire meanwhile
        return index, value, later, ctx.now().isoformat()

    with TestEnv(db=any_db) as env:
        assert env.run(race, workflow_id="r") == (2, None, None, "2030-01-07T00:00:00+00:00")  # day 1 + 5
        timers = [e for e in env.history("r") if e.kind == "timer"]
    assert [e.step for e in timers] == [3, 4]  # step 1 (two days) lost and never fired


def test_any_with_a_signal_winning_over_a_timeout(any_db: str) -> None:
    @rk.workflow
    def approval(ctx: rk.Context):
        return (yield rk.any(rk.wait_signal("approve"), rk.sleep(timedelta(hours=4))))

    with TestEnv(db=any_db) as env:
        handle = env.start(approval, workflow_id="a")
        env.signal("a", "approve", "ok", at=timedelta(hours=1))
        assert handle.result() == (0, "ok")


def test_nested_groups_mixing_activities_timers_signals_and_children(any_db: str) -> None:
    @rk.workflow
    def child(ctx: rk.Context, x: int):
        yield rk.sleep(timedelta(minutes=x))
        return x * 10

    @rk.workflow
    def parent(ctx: rk.Context):
        return (yield rk.all(
            rk.any(work("quick"), rk.sleep(timedelta(days=1))),
            rk.all(rk.child_workflow(child, 1), rk.child_workflow(child, 2)),
            rk.any(rk.wait_signal("s"), rk.sleep(timedelta(hours=1))),
        ))

    with TestEnv(db=any_db) as env:
        handle = env.start(parent, workflow_id="p")
        env.signal("p", "s", "sig", at=timedelta(minutes=30))
        assert handle.result() == [(0, "done quick"), [10, 20], (0, "sig")]
        assert env.store.info("p/3").status is rk.Status.COMPLETED  # children have ids of their own


@rk.workflow(name="group-program")
def group_program(ctx: rk.Context, n: int):
    first = yield rk.all(*[work(f"a{i}") for i in range(n)])
    index, won = yield rk.any(rk.sleep(timedelta(hours=3)), rk.all(rk.sleep(timedelta(hours=1)), work("b")))
    try:
        yield rk.all(work("c"), broken("d"))
    except KeyError:
        pass
    return [first, index, won]


@pytest.mark.parametrize("n", [1, 3])
def test_groups_survive_a_crash_anywhere(n: int) -> None:
    outcome = assert_survives_crashes(group_program, n)
    assert outcome.value == [[f"done a{i}" for i in range(n)], 1, [None, "done b"]]


def test_replay_feeds_completions_in_the_recorded_order(any_db: str) -> None:
    @rk.workflow(name="ordered")
    def ordered(ctx: rk.Context):
        index, value = yield rk.any(work("slow", 0.3), work("fast", 0.0))
        yield rk.wait_signal("go")
        return [index, value]

    with rk.Engine(any_db) as engine:
        engine.start(ordered, workflow_id="o")
        while [e.kind for e in engine.store.events("o")].count("activity") < 1:
            time.sleep(0.01)
        time.sleep(0.5)  # the slow loser finishes too, and must not be recorded
    with open_store(any_db) as store:
        recorded = [(e.step, e.name) for e in store.events("o") if e.kind == "activity"]
    assert len(recorded) == 1 and recorded[0][0] == 2
    rk.send_signal(any_db, "o", "go")
    ran.clear()
    assert rk.run(ordered, workflow_id="o", db=any_db) == [1, "done fast"]
    assert ran == []  # replayed, nothing re-run


def test_commands_of_a_group_compare_by_value() -> None:
    assert rk.all(work("x"), rk.sleep(1)) == rk.all(work("x"), rk.sleep(1))
    assert rk.any(work("x")) != rk.all(work("x"))
    with pytest.raises(TypeError, match="takes replaykit commands"):
        rk.all("not a command")  # type: ignore[arg-type]


def _unused(*_: Any) -> None:
    pass
