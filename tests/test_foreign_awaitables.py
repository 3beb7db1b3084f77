"""An ``async def`` workflow that awaits something foreign (asyncio) gets ``InvalidCommandError``
naming its line, and nothing is recorded (issue 8, item 12)."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import replaykit as rk
from replaykit.context import Context
from replaykit.store import open_store
from replaykit.testing import TestEnv

from helpers import line_of


@rk.activity
def note(text: str) -> str:
    return text



async def sleeps_a_little() -> None:
    await asyncio.sleep(0.01)


async def awaits_a_new_future() -> None:
    await asyncio.Future()


async def gathers() -> None:
    await asyncio.gather(note("a"), note("b"))


async def asks_for_the_loop() -> None:
    asyncio.get_running_loop().time()


async def creates_a_task() -> None:
    await asyncio.create_task(sleeps_a_little())


async def uses_a_helper() -> None:
    await sleeps_a_little()


async def swallows_the_error() -> None:
    try:
        await asyncio.sleep(1)
    except Exception:  # the workflow hides it; the step is refused all the same
        pass


async def sleeps_zero() -> None:
    await asyncio.sleep(0)


async def times_out() -> None:
    async with asyncio.timeout(1):
        await note("inside")


@pytest.fixture(autouse=True)
def _no_stray_warnings() -> Iterator[None]:
    """Whatever these mistakes leave for the garbage collector warns here, not in a later test."""
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught] == []  # refused coroutines are closed: none "never awaited"


FOREIGN: list[Callable[[], Any]] = [sleeps_a_little, awaits_a_new_future, gathers, asks_for_the_loop,
                                    creates_a_task, uses_a_helper, swallows_the_error, sleeps_zero]
if sys.version_info >= (3, 11):
    FOREIGN.append(times_out)


@pytest.mark.parametrize("foreign", FOREIGN, ids=lambda f: f.__name__)
def test_a_foreign_await_is_refused_naming_the_line_and_nothing_is_recorded(
        any_db: str, foreign: Callable[[], Any]) -> None:
    async def flow(ctx: Context) -> str:
        await note("before")
        await foreign()  # the foreign await
        return "unreachable"

    with pytest.raises(rk.InvalidCommandError) as err:
        rk.run(rk.workflow(flow, name="async-flow"), workflow_id="f", db=any_db)
    message = str(err.value)
    assert f"{__file__}:" in message and "asyncio" in message and "Nothing was recorded" in message
    assert "no running event loop" not in message
    with open_store(any_db) as store:
        assert [e.kind for e in store.events("f")] == ["start", "activity"]
        info = store.info("f")
        assert info is not None and info.status is rk.Status.RUNNING

    async def fixed(ctx: Context) -> str:
        before = await note("before")
        await rk.sleep(0.01)
        return before + " and after"

    assert rk.run(rk.workflow(fixed, name="async-flow"), workflow_id="f", db=any_db) == "before and after"


def test_the_message_names_the_workflow_line_and_says_what_to_do() -> None:
    @rk.workflow(name="sleeps-with-asyncio")
    async def flow(ctx: Context) -> None:
        await asyncio.sleep(0.01)  # here

    with TestEnv() as env:
        handle = env.start(flow, workflow_id="s")
        with pytest.raises(rk.InvalidCommandError) as err:
            handle.result(timeout=10)
        assert handle.status() is rk.Status.RUNNING
        assert [e.kind for e in env.history("s")] == ["start"]
    message = str(err.value)
    assert f"{__file__}:{line_of(flow.fn, '# here')}" in message
    assert "rk.sleep" in message and "async def activity" in message


def test_asyncio_sleep_zero_names_the_workflow_line_not_asyncio() -> None:
    @rk.workflow(name="sleeps-zero")
    async def flow(ctx: Context) -> None:
        await asyncio.sleep(0)  # zero

    with TestEnv() as env, pytest.raises(rk.InvalidCommandError) as err:
        env.run(flow, workflow_id="z")
    assert f"{__file__}:{line_of(flow.fn, '# zero')}" in str(err.value)


def test_a_future_of_a_real_loop_is_refused_and_the_loop_is_untouched() -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()

        @rk.workflow(name="awaits-a-real-future")
        async def flow(ctx: Context) -> None:
            await future  # foreign

        with TestEnv() as env, pytest.raises(rk.InvalidCommandError, match="awaited <Future pending>"):
            env.run(flow, workflow_id="rf")
        assert not future.done()
    finally:
        loop.close()


def test_a_query_from_inside_a_running_loop_neither_uses_nor_loses_that_loop(any_db: str) -> None:
    @rk.workflow(name="queried-async")
    async def flow(ctx: Context) -> None:
        ctx.set_query_handler("where", lambda: "here")
        await rk.wait_signal("go")

    @rk.workflow(name="queried-async-foreign")
    async def foreign(ctx: Context) -> None:
        await asyncio.sleep(0.5)

    with rk.Engine(any_db) as engine:
        engine.start(flow, workflow_id="q")
        with pytest.raises(rk.InvalidCommandError):
            engine.start(foreign, workflow_id="qf").result(timeout=10)

    async def main() -> tuple[Any, str, bool]:
        running = asyncio.get_running_loop()
        answer = rk.query(any_db, "q", "where")
        with pytest.raises(rk.InvalidCommandError):
            rk.query(any_db, "qf", "anything")
        await asyncio.sleep(0)  # the real loop still runs this coroutine
        return answer, "ok", asyncio.get_running_loop() is running

    assert asyncio.run(main()) == ("here", "ok", True)
    assert asyncio.events._get_running_loop() is None  # nothing left behind in this thread


def test_async_workflows_that_await_only_commands_and_helpers_still_work() -> None:
    async def helper(text: str) -> str:
        return await note(text)

    @rk.workflow(name="pure-async")
    async def flow(ctx: Context) -> list[Any]:
        a = await note("a")
        b = await helper("b")
        both = await rk.all(note("c"), rk.sleep(1))
        return [a, b, both]

    with TestEnv(strict_replay=True) as env:
        assert env.run(flow, workflow_id="p") == ["a", "b", ["c", None]]


def test_asyncio_inside_activities_is_fine(any_db: str) -> None:
    @rk.activity
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    @rk.workflow(name="async-activity-user")
    async def flow(ctx: Context) -> int:
        return await fetch(21)

    assert rk.run(flow, workflow_id="aa", db=any_db) == 42
    with rk.Engine(any_db) as engine:
        assert engine.start(flow, workflow_id="ab").result(timeout=10) == 42


def test_async_workflows_step_without_importing_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users who never import asyncio do not get it imported (nor pay for it) by an async def workflow."""
    from replaykit.interpreter import Machine, Returned, Waiting

    for name in [m for m in sys.modules if m == "asyncio" or m.startswith("asyncio.")]:
        monkeypatch.delitem(sys.modules, name)

    async def flow(ctx: Context) -> str:
        first = await note("a")
        return first + (await note("b"))

    machine = Machine(flow, Context("no-asyncio", seed=0, start_time=0.0), (), {})
    step = machine.start()
    for value in ("a", "b"):
        assert isinstance(step, Waiting)
        step = machine.resolve(step.started[0].step, "ok", value, 0.0)
    assert step == Returned("ab")
    assert "asyncio" not in sys.modules and "asyncio.events" not in sys.modules


def test_an_asyncio_error_of_an_async_activity_is_the_workflows_failure_not_a_foreign_await(any_db: str) -> None:
    @rk.activity
    async def too_slow() -> None:
        await asyncio.wait_for(asyncio.sleep(5), timeout=0.01)  # raises TimeoutError inside asyncio

    @rk.workflow(name="lets-a-timeout-through")
    async def flow(ctx: Context) -> None:
        await too_slow()

    with pytest.raises(rk.WorkflowFailed, match="TimeoutError"):
        rk.run(flow, workflow_id="slow", db=any_db)
    with open_store(any_db) as store:
        info = store.info("slow")
        assert info is not None and info.status is rk.Status.FAILED
