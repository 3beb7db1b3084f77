"""A command made in workflow code and never yielded is an error, not a silent no-op (issue 8, item 9)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest

import replaykit as rk
from replaykit.context import Context
from replaykit.store import open_store
from replaykit.testing import TestEnv

from helpers import line_of

charged: list[str] = []


@rk.activity
def charge_card(order_id: str, cents: int) -> str:
    charged.append(order_id)
    return f"receipt-{order_id}"


@rk.activity
def note(text: str) -> str:
    return text



def kinds(db: str, workflow_id: str) -> list[str]:
    with open_store(db) as store:
        return [e.kind for e in store.events(workflow_id)]


def status(db: str, workflow_id: str) -> rk.Status:
    with open_store(db) as store:
        info = store.info(workflow_id)
        assert info is not None
        return info.status


@pytest.fixture(autouse=True)
def _clear() -> None:
    charged.clear()


def test_a_forgotten_yield_is_refused_at_the_next_yield_and_a_fixed_rerun_continues(any_db: str) -> None:
    def forgetful(ctx: Context, order_id: str):
        yield note("start")
        charge_card(order_id, 1999)  # forgotten yield
        yield rk.sleep(0)  # the next yield
        return "done"

    with pytest.raises(rk.InvalidCommandError) as err:
        rk.run(rk.workflow(forgetful, name="order"), "o-1", workflow_id="o-1", db=any_db)
    message = str(err.value)
    assert f"{__file__}:{line_of(forgetful, '# forgotten yield')}" in message
    assert f"{__file__}:{line_of(forgetful, '# the next yield')}" in message
    assert "activity charge_card('o-1', 1999)" in message and "yield" in message
    assert charged == []  # the activity never ran
    assert kinds(any_db, "o-1") == ["start", "activity"]  # nothing recorded for the mistaken step
    assert status(any_db, "o-1") is rk.Status.RUNNING  # not marked failed

    def fixed(ctx: Context, order_id: str):
        yield note("start")
        receipt = yield charge_card(order_id, 1999)
        yield rk.sleep(0)
        return receipt

    assert rk.run(rk.workflow(fixed, name="order"), "o-1", workflow_id="o-1", db=any_db) == "receipt-o-1"
    assert charged == ["o-1"]
    assert kinds(any_db, "o-1") == ["start", "activity", "activity", "timer", "result"]


def test_returning_a_command_is_refused_even_under_strict_replay() -> None:
    @rk.workflow(name="returns-a-command")
    def returns(ctx: Context):
        yield rk.sleep(1)
        return charge_card("o-2", 5)  # returned, not yielded

    with TestEnv(strict_replay=True) as env:
        handle = env.start(returns, workflow_id="r")
        with pytest.raises(rk.InvalidCommandError, match=r"returned activity charge_card\('o-2', 5\)") as err:
            handle.result(timeout=10)
        assert f"{__file__}:{line_of(returns.fn, '# returned, not yielded')}" in str(err.value)
        assert handle.status() is rk.Status.RUNNING
        assert [e.kind for e in env.history("r")] == ["start", "timer"]
    assert charged == []


def test_returning_a_command_made_before_the_step_is_refused_too() -> None:
    made_earlier = rk.sleep(5)

    @rk.workflow(name="returns-a-constant-command")
    def returns(ctx: Context):
        yield rk.sleep(1)
        return made_earlier

    with TestEnv() as env:
        with pytest.raises(rk.InvalidCommandError, match=r"returned sleep\(0:00:05\)"):
            env.run(returns, workflow_id="rc")


def test_a_command_made_and_dropped_before_the_end_is_refused_at_the_end() -> None:
    @rk.workflow(name="forgets-at-the-end")
    def forgets(ctx: Context):
        yield rk.sleep(1)
        rk.sleep(60)  # dropped
        return "done"

    with TestEnv() as env:
        handle = env.start(forgets, workflow_id="end")
        with pytest.raises(rk.InvalidCommandError, match=r"made sleep\(0:01:00\) at .* without yielding it, "
                                                         r"before it returned"):
            handle.result(timeout=10)
        assert handle.status() is rk.Status.RUNNING
        assert [e.kind for e in env.history("end")] == ["start", "timer"]


def test_using_a_command_as_its_result_is_reported_as_the_forgotten_yield_not_recorded_as_a_failure() -> None:
    @rk.workflow(name="uses-the-command")
    def uses(ctx: Context):
        yield rk.sleep(0)
        receipt = charge_card("o-3", 5)  # made here
        return receipt.upper()  # used here

    with TestEnv() as env:
        handle = env.start(uses, workflow_id="use")
        with pytest.raises(rk.InvalidCommandError, match=r"charge_card\('o-3', 5\) is a replaykit command") as err:
            handle.result(timeout=10)
        message = str(err.value)
        assert f"{__file__}:{line_of(uses.fn, '# used here')}" in message
        assert f"made at {__file__}:{line_of(uses.fn, '# made here')}" in message
        assert isinstance(err.value.__cause__, AttributeError)
        assert handle.status() is rk.Status.RUNNING
        assert [e.kind for e in env.history("use")] == ["start", "timer"]


def test_an_async_workflow_that_forgets_await_is_refused() -> None:
    @rk.workflow(name="async-forgets")
    async def forgets(ctx: Context):
        await note("a")
        charge_card("o-4", 5)  # forgotten await
        await note("b")

    with TestEnv() as env:
        with pytest.raises(rk.InvalidCommandError) as err:
            env.run(forgets, workflow_id="af")
        assert f"{__file__}:{line_of(forgets.fn, '# forgotten await')}" in str(err.value)
        assert [e.kind for e in env.history("af")] == ["start", "activity"]


def test_commands_in_groups_helpers_and_variables_count_as_used() -> None:
    def helper(ctx: Context):
        first = note("helper")  # made, then yielded a line later
        value = yield first
        return value

    @rk.workflow(name="uses-everything")
    def uses(ctx: Context):
        calls = [charge_card(f"g-{i}", i) for i in range(3)]
        together = yield rk.all(*calls, rk.all(note("nested"), rk.sleep(1)))
        index, first = yield rk.any(rk.sleep(5), rk.all(note("x")))
        helped = yield from helper(ctx)
        saga = rk.Saga()
        saga.add(note, "undo")
        undone = yield from saga.compensate()
        return [together, index, first, helped, undone]

    @rk.workflow(name="async-uses-everything")
    async def async_uses(ctx: Context):
        pending = note("later")
        both = await rk.all(pending, rk.sleep(0))
        return [both, await note("awaited")]

    with TestEnv(strict_replay=True) as env:
        assert env.run(uses, workflow_id="u") == [
            ["receipt-g-0", "receipt-g-1", "receipt-g-2", ["nested", None]], 1, ["x"], "helper", ["undo"]]
        assert env.run(async_uses, workflow_id="au") == [["later", None], "awaited"]


def test_stepping_by_hand_and_commands_outside_workflows_keep_working() -> None:
    def order(ctx: Context, order_id: str):
        receipt = yield charge_card(order_id, 1999)
        spare = rk.sleep(3)  # made and dropped: nobody is tracking outside the interpreter
        del spare
        return receipt

    gen = order(Context("by-hand", seed=0, start_time=0.0), "o-1")
    assert next(gen) == charge_card("o-1", 1999)
    with pytest.raises(StopIteration) as stop:
        gen.send("receipt-o-1")
    assert stop.value.value == "receipt-o-1"
    loose = [charge_card("o-9", 1), rk.sleep(1), rk.all(note("n"))]  # outside any workflow: fine
    assert loose[0] == charge_card("o-9", 1) and charged == []


def test_a_command_made_on_another_thread_during_a_step_is_not_counted() -> None:
    made_elsewhere = threading.Event()
    step_running = threading.Event()
    others: list[Any] = []

    def other_thread() -> None:
        assert step_running.wait(10)
        others.append(charge_card("elsewhere", 1))  # while the workflow's step runs on the driver
        made_elsewhere.set()

    @rk.workflow(name="waits-inside-a-step")
    def waits(ctx: Context):
        step_running.set()
        assert made_elsewhere.wait(10)  # blocking workflow code, for this test only
        return (yield note("mine"))

    worker = threading.Thread(target=other_thread)
    worker.start()
    with TestEnv() as env:
        assert env.run(waits, workflow_id="t") == "mine"
    worker.join(10)
    assert others == [charge_card("elsewhere", 1)]


def test_an_activity_misused_outside_a_workflow_says_what_it_is() -> None:
    call = charge_card("o-1", 1999)
    with pytest.raises(AttributeError) as err:
        call.amount  # noqa: B018
    message = str(err.value)
    assert "charge_card('o-1', 1999) is a replaykit command" in message
    assert "result = yield charge_card(...)" in message and "charge_card.fn(...)" in message
    misuses: list[Callable[[], Any]] = [
        lambda: list(call), lambda: call[0], lambda: call + 1, lambda: 1 + call, lambda: call * 2,
        lambda: int(call), lambda: float(call), lambda: call < 3, lambda: "x" in call, lambda: -call,
    ]
    for misuse in misuses:
        with pytest.raises(rk.InvalidCommandError, match=r"is a replaykit command made by calling the activity"):
            misuse()
    assert not hasattr(call, "amount")  # still an AttributeError to getattr/hasattr
    assert call == charge_card("o-1", 1999) and bool(call)
    assert repr(cloudpickle.loads(cloudpickle.dumps(call))) == repr(call)  # pickling probes attributes: unharmed
    assert charged == []


def test_commands_kept_for_a_later_yield_are_fine_even_if_some_are_never_needed() -> None:
    @rk.workflow(name="yields-later")
    def later(ctx: Context):
        pending = note("kept in a variable")
        yield rk.sleep(1)
        first = yield pending
        calls = [charge_card(f"l-{i}", i) for i in range(4)]  # made up front, yielded one a step
        receipts = []
        for call in calls:
            receipts.append((yield call))
            if len(receipts) == 2:
                break  # the others are never needed: not a mistake
        return [first, receipts]

    with TestEnv(strict_replay=True) as env:
        assert env.run(later, workflow_id="later") == ["kept in a variable", ["receipt-l-0", "receipt-l-1"]]
    assert charged == ["l-0", "l-1"]


def test_a_group_given_something_else_is_refused_not_recorded_as_a_failure() -> None:
    @rk.workflow(name="bad-group")
    def bad(ctx: Context):
        yield rk.sleep(0)
        yield rk.all(note("a"), "b")  # not a command

    with TestEnv() as env:
        handle = env.start(bad, workflow_id="bg")
        with pytest.raises(rk.InvalidCommandError, match=r"rk.all\(...\) takes replaykit commands, got 'b'") as err:
            handle.result(timeout=10)
        assert f"{__file__}:{line_of(bad.fn, '# not a command')}" in str(err.value)
        assert handle.status() is rk.Status.RUNNING
        assert [e.kind for e in env.history("bg")] == ["start", "timer"]


def test_an_activity_error_let_through_is_still_the_workflows_failure() -> None:
    @rk.activity
    def misuses_a_command() -> None:
        note("x").upper()  # an activity's own bug: its failure, recorded like any other

    @rk.workflow(name="lets-it-through")
    def flow(ctx: Context):
        yield misuses_a_command()

    with TestEnv() as env:
        handle = env.start(flow, workflow_id="through")
        with pytest.raises(rk.WorkflowFailed, match="is a replaykit command"):
            handle.result(timeout=10)
        assert handle.status() is rk.Status.FAILED


def test_a_dropped_sleep_until_is_named_as_such() -> None:
    from datetime import datetime, timezone

    def drops(ctx: Context):
        rk.sleep_until(datetime(2030, 1, 1, tzinfo=timezone.utc))  # dropped
        yield rk.sleep(0)

    with TestEnv() as env:
        with pytest.raises(rk.InvalidCommandError, match=r"rk\.sleep_until\(\.\.\.\)"):
            env.run(drops, workflow_id="su")


def test_a_query_made_inside_a_step_does_not_end_that_steps_tracking() -> None:
    def answers(ctx: Context):
        ctx.query("q")(lambda: "answer")
        yield rk.wait_signal("never")

    answering = rk.Workflow(answers, "answers")
    with TestEnv() as env:
        env.start(answering, workflow_id="other")

        def asks_then_drops(ctx: Context):
            assert rk.query(env.store, "other", "q", workflows={"answers": answering}) == "answer"
            note("dropped")  # dropped after a nested replay
            yield rk.sleep(0)

        with pytest.raises(rk.InvalidCommandError, match="note"):
            env.run(asks_then_drops, workflow_id="outer")
