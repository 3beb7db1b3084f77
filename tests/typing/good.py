"""User code that must pass ``mypy --strict`` and ``pyright --strict`` (see tests/test_typing.py).

``reveal_type`` is checked only by the type checkers: this module is never imported.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from typing_extensions import assert_type

import replaykit as rk
from replaykit.testing import TestEnv, fake_context, replay


@rk.activity
def charge_card(order_id: str, cents: int) -> str:
    return f"receipt-{order_id}"


@rk.activity(retry=rk.RetryPolicy(max_attempts=3), timeout=timedelta(seconds=5))
async def fetch(url: str, *, attempts: int = 1) -> bytes:
    return url.encode() * attempts


@rk.activity
def notify(to: str) -> None:
    pass


@rk.workflow
def order(ctx: rk.Context, order_id: str) -> rk.Flow[str]:
    receipt: str = yield charge_card(order_id, 1999)
    yield rk.sleep(timedelta(milliseconds=10))
    approved = yield rk.wait_signal("approved", timeout=timedelta(seconds=1))
    if not approved:
        return "cancelled"
    return receipt


@rk.workflow(name="order-async")
async def order_async(ctx: rk.Context, order_id: str, cents: int = 1999) -> str:
    receipt = await charge_card(order_id, cents)
    assert_type(receipt, str)
    body = await fetch("https://example.com", attempts=2)
    assert_type(body, bytes)
    assert_type(await rk.sleep(1), None)
    assert_type(await rk.sleep_until(rk.commands.utc(0)), None)
    assert_type(await rk.wait_signal("go"), Any)
    assert_type(await rk.side_effect(ctx.now), datetime)
    results = await rk.all(charge_card("a", 1), fetch("b"))
    assert_type(results, list[Any])
    index, value = await rk.any(rk.sleep(5), rk.wait_signal("go"))
    assert_type(index, int)
    assert_type(value, Any)
    child = await rk.child_workflow(order, order_id, workflow_id=f"{order_id}-child")
    assert_type(child, str)
    await notify("ops")
    return receipt


@rk.workflow
async def parent(ctx: rk.Context, n: int) -> list[str]:
    out: list[str] = []
    for i in range(n):
        out.append(await rk.child_workflow(order_async, f"o-{i}", 100 * i))
    out.append(await rk.child_workflow(order_async, order_id="kw", cents=1))
    return out


@rk.activity
def refund(order_id: str, cents: int) -> None:
    pass


@rk.workflow
def saga(ctx: rk.Context, order_id: str, polls: int = 3) -> rk.Flow[list[str]]:
    compensations = rk.Saga()
    try:
        receipt: str = yield charge_card(order_id, 1999)
        compensations.add(refund, order_id, 1999)
        receipts: list[str] = yield rk.all(*[charge_card(f"{order_id}-{i}", i) for i in range(polls)])
        index, _ = yield rk.any(rk.sleep(1), rk.wait_signal("stop"))
        if index == 0 and polls > 0:
            yield rk.continue_as_new(order_id, polls - 1)
        return [receipt, *receipts]
    except rk.ActivityFailed:
        with ctx.shield():
            yield from compensations.compensate()
        raise


def main(db: str) -> None:
    assert_type(charge_card("o-1", 1999), rk.ActivityCall[str])
    assert_type(charge_card.fn("o-1", 1999), Any)
    assert_type(rk.run(order, "o-42", workflow_id="order-o-42", db=db), str)
    assert_type(rk.run(parent, 3, workflow_id="p", db=db), list[str])
    with rk.Engine(db) as engine:
        handle = engine.start(order_async, "o-43", 500, workflow_id="order-o-43", lock_timeout=1.0)
        assert_type(handle, rk.WorkflowHandle[str])
        assert_type(handle.result(timeout=10), str)
        assert_type(engine.handle("order-o-43"), rk.WorkflowHandle[Any])
    assert_type(rk.run(saga, "o-44", workflow_id="saga", db=db), list[str])
    assert_type(rk.run(saga, order_id="o-45", polls=1, workflow_id="saga-kw", db=db), list[str])


@rk.activity(heartbeat_timeout=timedelta(seconds=5))
def long(n: int) -> int:
    info = rk.activity_info()
    for _ in range(n):
        rk.heartbeat(info.idempotency_key)
        if rk.is_cancelled():
            break
    return n


@rk.workflow
def misc(ctx: rk.Context, n: int) -> rk.Flow[str]:
    ctx.logger.info("start %d", n)
    progress = {"done": 0}

    @ctx.query("progress")
    def _progress() -> dict[str, int]:
        return progress

    if ctx.patched("v2"):
        done: int = yield long(n)
        progress["done"] = done
    ctx.set_status({"n": n})
    return f"{ctx.now().isoformat()} {ctx.random().random()} {ctx.uuid4()}"


def testing(db: str) -> None:
    with TestEnv() as env:
        result: str = env.run(misc, 3)
        handle: rk.WorkflowHandle[str] = env.start(misc, 3, workflow_id="m")
        env.signal("m", "go", True)
        print(result, handle.result(), env.history("m"))
    steps = misc(fake_context(), 3)  # stepping by hand
    print(next(steps))
    with rk.Engine(db) as engine:
        started = engine.start(misc, 2, workflow_id="x")
        engine.signal("x", "go")
        print(started.status(), engine.query("x", "progress"))
    rk.send_signal(db, "x", "go", 1)
    with rk.SqliteStore(db) as store:
        for event in store.events("x"):
            print(event.describe())
    print(replay(misc, "history.json").ok)


def fake_charge(order_id: str, cents: int) -> str:
    return "receipt-test"


def doubles_kept_in_a_variable() -> None:
    doubles = {charge_card: fake_charge, notify: print}  # a fixture's, say: keyed by activity
    by_name = {"charge_card": fake_charge}
    with TestEnv(activities=doubles) as env, TestEnv(activities=by_name) as other:
        print(env.run(order, "o-1"), other.run(order, "o-2"))


def scale_out(db: str) -> None:
    with rk.Client(db) as client:
        handle = client.start(order, "o-1", workflow_id="o", queue="orders", priority=2, key="tenant-1")
        assert_type(handle.result(timeout=1), str)
        client.signal("o", "approved", True)
        workers: list[rk.WorkerRecord] = client.workers()
        print(workers, client.list(rk.Status.RUNNING)[0].queue)
    bulk = rk.Queue("bulk", concurrency=3, worker_concurrency=1, rate=(10, 1.0), per_key=1)
    queues: list[str | rk.Queue] = ["orders", bulk]
    with rk.Worker(db, workflows=[order, order_async], queues=queues, concurrency=8) as worker:
        assert_type(worker.start(order_async, "o-2", 5, workflow_id="o2").result(), str)
        worker.request_stop()
    rk.Worker(db, workflows=[order]).run()


@rk.json_type
@dataclasses.dataclass(frozen=True)
class Receipt:
    order_id: str
    cents: int


@rk.activity
def receipt(order_id: str) -> Receipt:
    return Receipt(order_id, 1999)


def typed_values(db: str) -> None:
    assert_type(Receipt("o", 1), Receipt)
    with rk.SqliteStore(db, read_only=True, pickle="off") as store:
        print(store.read_only, [e.value() for e in store.events("x")])


async def activities_unit_tested() -> None:
    receipt_text: str = charge_card.fn("o-1", 5)  # `.fn` is typed as returning Any: annotate what it gives
    kept: rk.Activity[[str, int], str] = charge_card  # what users annotate stays assignable
    print(receipt_text, kept.name)
