"""The pure interpreter: replay from events, non-determinism diagnosis. No store, no clock."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import replaykit as rk
from replaykit import payloads
from replaykit.history import ERROR, OK, Event
from replaykit.interpreter import Machine, Raised, Returned, Step, Waiting
from replaykit.keys import Keyring

codec = payloads.Codec(Keyring.ephemeral())


@rk.activity
def fetch(key: str) -> str:
    return key.upper()


@rk.activity
def store(key: str) -> None:
    pass


def ctx() -> rk.Context:
    return rk.Context("wf-1", seed=7, start_time=1000.0)


def ok(step: int, kind: str, name: str, value: object, at: float = 1000.0) -> Event:
    return Event(step, step, kind, name, at, OK, *codec.encode(value, "test"))


def waits_on(step: Step) -> list[tuple[int, Any]]:
    assert isinstance(step, Waiting), step
    return [(leaf.step, leaf.command) for leaf in step.started]


def two_steps(ctx: rk.Context, key: str):
    a = yield fetch(key)
    b = yield fetch(a + "!")
    return a + b


def test_live_steps_and_replay_produce_the_same_commands() -> None:
    m = Machine(two_steps, ctx(), ("x",), {}, codec=codec)
    assert waits_on(m.start()) == [(1, fetch("x"))]
    assert waits_on(m.resolve(1, OK, "X", 1001.0)) == [(2, fetch("X!"))]
    assert m.resolve(2, OK, "X!", 1002.0) == Returned("XX!")

    replayed = Machine(two_steps, ctx(), ("x",), {}, codec=codec)
    assert waits_on(replayed.start()) == [(1, fetch("x"))]
    assert waits_on(replayed.replay(ok(1, "activity", "fetch", "X"))) == [(2, fetch("X!"))]
    assert replayed.replay(ok(2, "activity", "fetch", "X!")) == Returned("XX!")


def test_recorded_error_is_thrown_at_the_yield() -> None:
    def flow(ctx: rk.Context):
        try:
            yield fetch("a")
        except KeyError as exc:
            return f"caught {exc.args[0]}"

    m = Machine(flow, ctx(), (), {}, codec=codec)
    m.start()
    error = Event(1, 1, "activity", "fetch", 1000.0, ERROR, *codec.encode_error(KeyError("gone")))
    assert m.replay(error) == Returned("caught gone")


def test_unhandled_error_ends_the_machine_with_raised() -> None:
    def flow(ctx: rk.Context):
        yield fetch("a")
        raise ValueError("boom")

    m = Machine(flow, ctx(), (), {}, codec=codec)
    m.start()
    step = m.resolve(1, OK, "A", 1000.0)
    assert isinstance(step, Raised) and str(step.error) == "boom"


def test_changed_activity_raises_nondeterminism_with_file_and_line() -> None:
    def flow(ctx: rk.Context):
        yield store("a")  # was fetch when the history was recorded

    m = Machine(flow, ctx(), (), {}, codec=codec)
    m.start()
    with pytest.raises(rk.NonDeterminismError) as err:
        m.replay(ok(1, "activity", "fetch", "A"))
    line = inspect.getsourcelines(flow)[1] + 1
    message = str(err.value)
    assert f"{__file__}:{line}" in message
    assert "history recorded: activity 'fetch'" in message
    assert "code now yields:  activity store('a')" in message
    assert err.value.seq == 1


def test_kind_change_is_nondeterminism() -> None:
    def flow(ctx: rk.Context):
        yield rk.sleep(5)

    m = Machine(flow, ctx(), (), {}, codec=codec)
    m.start()
    with pytest.raises(rk.NonDeterminismError, match="history recorded: activity 'fetch'"):
        m.replay(ok(1, "activity", "fetch", "A"))


def test_history_longer_than_code_is_nondeterminism() -> None:
    def flow(ctx: rk.Context):
        return "done"
        yield  # pragma: no cover

    m = Machine(flow, ctx(), (), {}, codec=codec)
    assert m.start() == Returned("done")
    with pytest.raises(rk.NonDeterminismError, match="already ended"):
        m.check(ok(1, "activity", "fetch", "A"))


def test_site_is_reported_through_yield_from_and_await() -> None:
    def helper():
        yield store("deep")  # the line to report

    def flow(ctx: rk.Context):
        yield from helper()

    m = Machine(flow, ctx(), (), {}, codec=codec)
    m.start()
    assert m.where() == f"{__file__}:{inspect.getsourcelines(helper)[1] + 1}"

    async def coro_flow(ctx: rk.Context):
        await store("deep")  # the line to report

    c = Machine(coro_flow, ctx(), (), {}, codec=codec)
    c.start()
    assert c.where() == f"{__file__}:{inspect.getsourcelines(coro_flow)[1] + 1}"


def test_yielding_a_non_command_is_a_clear_error() -> None:
    def flow(ctx: rk.Context):
        yield 42

    m = Machine(flow, ctx(), (), {}, codec=codec)
    with pytest.raises(rk.InvalidCommandError, match=r"yielded 42 at .*test_interpreter.py:\d+"):
        m.start()


def test_time_and_randomness_are_deterministic() -> None:
    def flow(ctx: rk.Context):
        first = (ctx.now(), ctx.random().random(), ctx.uuid4())
        yield rk.sleep(1)
        return first, (ctx.now(), ctx.random().random(), ctx.uuid4())

    runs = []
    for _ in range(2):
        m = Machine(flow, ctx(), (), {}, codec=codec)
        m.start()
        step = m.replay(ok(1, "timer", "", None, at=2000.0))
        assert isinstance(step, Returned)
        runs.append(step.value)
    assert runs[0] == runs[1]
    (t0, r0, u0), (t1, r1, u1) = runs[0]
    assert t0.timestamp() == 1000.0 and t1.timestamp() == 2000.0
    assert r0 != r1 and u0 != u1 and u0.version == 4
    other_seed = Machine(flow, rk.Context("wf-1", seed=8, start_time=1000.0), (), {}, codec=codec)
    other_seed.start()
    assert other_seed.replay(ok(1, "timer", "", None, at=2000.0)).value != runs[0]  # type: ignore[union-attr]


def test_sleep_deadline_counts_from_workflow_time() -> None:
    def flow(ctx: rk.Context):
        yield fetch("a")
        yield rk.sleep(60)

    m = Machine(flow, ctx(), (), {}, codec=codec)
    m.start()
    step = m.replay(ok(1, "activity", "fetch", "A", at=5000.0))
    assert isinstance(step, Waiting) and step.started[0].deadline == 5060.0
