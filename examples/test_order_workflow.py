"""How to test a workflow with replaykit.testing: run it with `pytest examples/`.

The order workflow below charges a card, waits a day, then waits up to a week
for an approval signal. The tests run it in milliseconds on a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.testing import TestEnv, export_history, fake_context, replay


@rk.activity
def charge_card(order_id: str, cents: int) -> str:
    raise RuntimeError("talks to the payment provider; replaced in tests")


@rk.activity
def email(to: str, text: str) -> None:
    raise RuntimeError("sends mail; replaced in tests")


@rk.workflow
def order(ctx: rk.Context, order_id: str) -> rk.Flow[str]:
    receipt: str = yield charge_card(order_id, 1999)
    yield rk.sleep(timedelta(days=1))
    approved = yield rk.wait_signal("approved", timeout=timedelta(days=7))
    if not approved:
        yield email("ops@example.com", f"{order_id} was not approved in time")
        return "cancelled"
    return receipt


FAKES: dict[rk.Activity[..., Any] | str, Callable[..., Any]] = {
    charge_card: lambda order_id, cents: f"receipt-{order_id}",
    email: lambda to, text: None,
}


def test_approved_after_three_days() -> None:
    with TestEnv(activities=FAKES) as env:
        handle = env.start(order, "o-1", workflow_id="order-o-1")
        env.signal("order-o-1", "approved", True, at=timedelta(days=3))
        assert handle.result() == "receipt-o-1"
        env.mock(charge_card).assert_called_once_with("o-1", 1999)
        env.mock(email).assert_not_called()


def test_cancelled_after_a_silent_week(rk_env: TestEnv) -> None:
    # rk_env is the pytest plugin's ready TestEnv; activities are replaced the same way:
    with TestEnv(activities=FAKES) as env:
        started = env.now()
        assert env.run(order, "o-2") == "cancelled"
        assert env.now() - started == timedelta(days=8)  # a day's sleep, then a week's timeout
        assert env.activity_calls[-1] == email("ops@example.com", "o-2 was not approved in time")
    assert rk_env.now() == started  # each TestEnv has its own clock


def test_step_by_hand() -> None:
    ctx = fake_context()
    gen = order(ctx, "o-3")
    assert next(gen) == charge_card("o-3", 1999)
    assert gen.send("receipt-o-3") == rk.sleep(timedelta(days=1))
    assert gen.send(None) == rk.wait_signal("approved", timeout=timedelta(days=7))
    with pytest.raises(StopIteration) as done:
        gen.send(True)
    assert done.value.value == "receipt-o-3"


def test_recorded_history_still_replays(tmp_path: Path) -> None:
    with TestEnv(activities=FAKES) as env:
        env.run(order, "o-4", workflow_id="order-o-4")
        export_history(env.store, "order-o-4").save(tmp_path / "order-o-4.json")
    # Later, in CI, after the workflow code changed: does it still walk old histories?
    assert replay(order, tmp_path / "order-o-4.json").ok
