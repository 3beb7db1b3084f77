"""Mistakes that mypy --strict and pyright --strict must each report (see tests/test_typing.py).

Every line ending in ``# E`` must be reported, and no other line: one mistake a line.
"""

from __future__ import annotations

from datetime import timedelta

import replaykit as rk


@rk.activity
def charge_card(order_id: str, cents: int) -> str:
    return f"receipt-{order_id}"


@rk.activity
async def fetch(url: str) -> bytes:
    return url.encode()


@rk.workflow
def order(ctx: rk.Context, order_id: str) -> rk.Flow[str]:
    receipt: str = yield charge_card(order_id, 1999)
    yield 42  # E a generator workflow yields commands only
    return receipt


@rk.workflow
async def wrong_return(ctx: rk.Context, url: str) -> str:
    return await fetch(url)  # E returns bytes, declared str


@rk.workflow
def wrong_flow_return(ctx: rk.Context) -> rk.Flow[str]:
    yield rk.sleep(1)
    return 42  # E returns int, declared Flow[str]


@rk.workflow  # E a plain function is not a workflow
def not_a_generator(ctx: rk.Context) -> str:
    return "x"


@rk.workflow  # E a workflow takes ctx first
def no_ctx(order_id: str) -> rk.Flow[str]:
    yield rk.sleep(1)
    return order_id


@rk.workflow
async def mistakes(ctx: rk.Context, order_id: str) -> str:
    await charge_card(order_id, "1999")  # E wrong activity argument type
    await charge_card(order_id)  # E too few activity arguments
    await charge_card(order_id, 1, 2)  # E too many activity arguments
    await charge_card(order_id, cent=5)  # E unknown keyword argument
    n: int = await charge_card(order_id, 1)  # E the activity gives a str
    when: str = await rk.sleep(timedelta(seconds=1))  # E a sleep gives None
    size: int = await rk.side_effect(ctx.now)  # E side_effect gives what the function returns
    child: int = await rk.child_workflow(order, order_id)  # E the child gives a str
    await rk.child_workflow(order, 42)  # E wrong child argument type
    receipt: str = charge_card(order_id, 1)  # E forgot await: an ActivityCall is not its result
    charge_card.fn(order_id)  # E .fn takes the activity's parameters
    return receipt + when + str(n + size + child)


def scripts(db: str) -> None:
    rk.run(order, 42, workflow_id="o", db=db)  # E wrong workflow argument type
    rk.run(order, "o-1", "extra", workflow_id="o", db=db)  # E too many workflow arguments
    rk.run(order, "o-1", db=db)  # E workflow_id is required
    total: int = rk.run(order, "o-1", workflow_id="o", db=db)  # E the workflow gives a str
    rk.run(order, "o-1", workflow_id="o", db=db).decode()  # E str has no decode
    with rk.Engine(db) as engine:
        engine.start(mistakes, 42, workflow_id="m")  # E wrong workflow argument type
        handle = engine.start(order, "o-2", workflow_id="o2")
        count: int = handle.result(timeout=5)  # E the handle gives a str
    print(total, count)


def scale_out(db: str) -> None:
    with rk.Client(db) as client:
        client.start(order, 42, workflow_id="o")  # E wrong workflow argument type
        client.start(order, "o-1", workflow_id="o", queue=3)  # E a queue is named by a string
        late: int = client.start(order, "o-1", workflow_id="o").result()  # E the handle gives a str
    rk.Worker(db, workflows=[order], queues=[rk.Queue("q", rate=10)])  # E rate is (starts, seconds)
    print(late)


def tests_with_the_test_env() -> None:
    from replaykit.testing import TestEnv

    with TestEnv() as env:
        env.run(order, 42)  # E wrong workflow argument type
        env.run(order, "o-1", "extra")  # E too many workflow arguments
        ended: int = env.run(order, "o-1")  # E the workflow gives a str
        later: int = env.start(order, "o-2", workflow_id="o2").result()  # E the handle gives a str
    print(ended, later)


def lazily_loaded_names_are_still_checked() -> None:
    rk.Enginee(rk.MemoryStore())  # E a misspelt name of the public namespace (its names load on first use)
    rk.store.Postgress  # E a misspelt store  # noqa: B018


@rk.workflow
def compensated(ctx: rk.Context) -> rk.Flow[None]:
    undo = rk.Saga()
    yield charge_card("o-1", 5)
    undo.add(charge_card, "o-1", "5")  # E a compensation is checked against its activity's parameters
