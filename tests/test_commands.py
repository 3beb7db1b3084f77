"""Commands are immutable values; workflows can be stepped by hand with no runtime."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest

import replaykit as rk


@rk.activity
def charge_card(order_id: str, cents: int) -> str:
    return f"receipt-{order_id}"


@rk.workflow
def order(ctx: rk.Context, order_id: str):
    receipt = yield charge_card(order_id, 1999)
    yield rk.sleep(timedelta(hours=1))
    approved = yield rk.wait_signal("approved", timeout=timedelta(days=2))
    return receipt if approved else "cancelled"


def test_commands_compare_by_value() -> None:
    assert charge_card("o-1", 1999) == charge_card("o-1", 1999)
    assert charge_card("o-1", 1999) != charge_card("o-2", 1999)
    assert rk.sleep(timedelta(hours=1)) == rk.sleep(3600)
    assert rk.wait_signal("a", timeout=5) == rk.wait_signal("a", timeout=timedelta(seconds=5))
    assert rk.wait_signal("a") != rk.wait_signal("b")
    assert charge_card("o-1", cents=5) == rk.ActivityCall(charge_card, ("o-1",), (("cents", 5),))


def test_commands_are_immutable() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        rk.sleep(1).seconds = 2  # type: ignore[misc]


def test_step_a_workflow_by_hand() -> None:
    gen = order(None, "o-1")  # ctx is not touched by this workflow
    assert next(gen) == charge_card("o-1", 1999)
    assert gen.send("receipt-1") == rk.sleep(timedelta(hours=1))
    assert gen.send(None) == rk.wait_signal("approved", timeout=timedelta(days=2))
    with pytest.raises(StopIteration) as stop:
        gen.send(True)
    assert stop.value.value == "receipt-1"


def test_activity_function_is_callable_directly() -> None:
    assert charge_card.fn("o-9", 1) == "receipt-o-9"
    assert charge_card.name == "charge_card"
    assert rk.activity(name="charge-v2")(charge_card.fn).name == "charge-v2"


def test_activity_info_outside_an_activity_is_an_error() -> None:
    with pytest.raises(LookupError, match="outside a running activity"):
        rk.activity_info()


def test_bad_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        rk.sleep(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        rk.sleep_until(datetime(2030, 1, 1))
    assert rk.sleep_until(datetime(2030, 1, 1, tzinfo=timezone.utc)).deadline(0) == \
        datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()


def test_commands_are_awaitable_with_the_same_values() -> None:
    @rk.workflow
    async def flow(ctx: rk.Context) -> str:
        r = await charge_card("o-1", 5)
        await rk.sleep(10)
        return r

    coro = flow(None)
    assert coro.send(None) == charge_card("o-1", 5)
    assert coro.send("r1") == rk.sleep(10)
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    assert stop.value.value == "r1"
