"""The time-skipping test environment: fake time, mocking, signals at chosen times."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

import replaykit as rk
from replaykit.testing import TestEnv, fake_context

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
stamps: list[tuple[datetime, float]] = []


@rk.activity
def stamp(i: int) -> int:
    stamps.append((datetime.now(timezone.utc), time.time()))
    return i


@rk.activity
def charge_card(order_id: str, cents: int) -> str:
    raise AssertionError("the real charge_card must not run in these tests")


@rk.workflow
def month_long(ctx: rk.Context):
    for i in range(100):
        yield rk.sleep(timedelta(hours=7.2))  # 100 timers spanning 30 days
        yield stamp(i)
    approval = yield rk.wait_signal("approve", timeout=timedelta(days=1))
    late = yield rk.wait_signal("late", timeout=timedelta(hours=1))  # times out
    return {"approval": approval, "late": late, "finished": ctx.now().isoformat()}


@pytest.mark.timeout(20)
def test_a_month_of_timers_a_signal_and_a_timeout_without_real_waiting() -> None:
    stamps.clear()
    with TestEnv(start=START) as env:
        handle = env.start(month_long, workflow_id="m")
        env.signal("m", "approve", "yes", at=timedelta(days=30, hours=5))
        result = handle.result(timeout=15)
    assert result == {"approval": "yes", "late": None, "finished": "2030-01-31T06:00:00+00:00"}
    # Activities saw the fake time through datetime.now() and time.time() (freezegun).
    assert [s[0] for s in stamps] == [START + timedelta(hours=7.2 * (i + 1)) for i in range(100)]
    assert [s[1] for s in stamps] == [(START + timedelta(hours=7.2 * (i + 1))).timestamp() for i in range(100)]


def test_freeze_time_can_be_switched_off() -> None:
    stamps.clear()

    @rk.workflow
    def one(ctx: rk.Context):
        return (yield stamp(1))

    with TestEnv(start=START, freeze_time=False) as env:
        env.run(one)
    assert abs(stamps[0][1] - time.time()) < 60  # the real clock


def test_explicit_time_control_and_timers_never_early() -> None:
    woke: list[datetime] = []

    @rk.workflow
    def sleeper(ctx: rk.Context):
        yield rk.sleep(timedelta(hours=2))
        woke.append(ctx.now())
        yield rk.sleep(timedelta(hours=2))
        woke.append(ctx.now())
        return "done"

    with TestEnv(start=START) as env:
        handle = env.start(sleeper, workflow_id="s")
        env.sleep(timedelta(hours=1))
        assert env.now() == START + timedelta(hours=1) and woke == []
        assert handle.status() is rk.Status.RUNNING
        env.sleep(timedelta(hours=2))
        assert env.now() == START + timedelta(hours=3) and woke == [START + timedelta(hours=2)]
        env.advance_to(START + timedelta(days=1))
        assert woke == [START + timedelta(hours=2), START + timedelta(hours=4)]
        assert handle.result(timeout=5) == "done"
        with pytest.raises(ValueError, match="never goes backwards"):
            env.sleep(-1)


def test_signal_at_a_chosen_fake_time_and_explicit_signal() -> None:
    @rk.workflow
    def waits(ctx: rk.Context):
        first = yield rk.wait_signal("a", timeout=timedelta(days=3))
        at_first = ctx.now()
        second = yield rk.wait_signal("b")
        return [first, at_first.isoformat(), second]

    with TestEnv(start=START) as env:
        handle = env.start(waits, workflow_id="w")
        env.signal("w", "a", 1, at=START + timedelta(days=2))
        env.sleep(timedelta(days=2, hours=1))
        env.signal("w", "b", 2)
        assert handle.result(timeout=5) == [1, "2030-01-03T00:00:00+00:00", 2]


def test_activities_replaced_by_function_or_name_and_calls_asserted() -> None:
    async def fake_ship(order_id: str) -> str:
        await asyncio.sleep(0)
        return f"shipped {order_id}"

    @rk.activity
    def ship(order_id: str) -> str:
        raise AssertionError("not in tests")

    @rk.workflow
    def order(ctx: rk.Context, order_id: str):
        receipt = yield charge_card(order_id, 1999)
        shipped = yield ship(order_id)
        return [receipt, shipped]

    fakes = {charge_card: lambda order_id, cents: f"fake-receipt-{cents}", ship.name: fake_ship}
    with TestEnv(activities=fakes) as env:
        assert env.run(order, "o-1") == ["fake-receipt-1999", "shipped o-1"]
        env.mock(charge_card).assert_called_once_with("o-1", 1999)
        env.mock(ship).assert_awaited_once_with("o-1")
        assert env.activity_calls == [charge_card("o-1", 1999), ship("o-1")]
        with pytest.raises(KeyError, match="was not replaced"):
            env.mock("other")


def test_a_fake_that_raises_is_thrown_into_the_workflow() -> None:
    def declined(order_id: str, cents: int) -> str:
        raise PermissionError("card declined")

    @rk.workflow
    def order(ctx: rk.Context):
        try:
            return (yield charge_card("o-2", 5))
        except PermissionError as exc:
            return f"refused: {exc}"

    with TestEnv(activities={charge_card: declined}) as env:
        assert env.run(order) == "refused: card declined"


def test_sqlite_store_on_request(tmp_path: object) -> None:
    @rk.workflow
    def nap(ctx: rk.Context):
        yield rk.sleep(timedelta(days=365))
        return ctx.now().year

    db = f"{tmp_path}/env.db"
    with TestEnv(start=START, db=db) as env:
        assert env.run(nap, workflow_id="n") == 2031  # a year passed, in no time
    with rk.SqliteStore(db) as store:
        assert [e.kind for e in store.events("n")] == ["start", "timer", "result"]


def test_stepping_by_hand_with_a_fake_context() -> None:
    @rk.workflow
    def remind(ctx: rk.Context, who: str):
        yield rk.sleep(timedelta(days=1))
        return f"reminded {who} at {ctx.now():%Y-%m-%d} ({ctx.uuid4()})"

    ctx = fake_context(now=START, seed=1)
    gen = remind(ctx, "bo")
    assert next(gen) == rk.sleep(timedelta(days=1))
    ctx.advance(days=1)
    with pytest.raises(StopIteration) as done:
        gen.send(None)
    assert done.value.value.startswith("reminded bo at 2030-01-02 (")
    assert fake_context(seed=1).uuid4() == fake_context(seed=1).uuid4()
