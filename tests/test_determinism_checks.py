"""Catching non-determinism early: warnings on direct clock/random/I/O use, strict replay."""

from __future__ import annotations

import datetime as dt
import inspect
import random
import time
import uuid
import warnings

import pytest

import replaykit as rk
from replaykit.testing import NonDeterminismWarning, TestEnv


@rk.activity
def use(value: object) -> object:
    time.time()  # activities may use the clock freely: no warning for this line
    return value


def lines_of(fn: object, *needles: str) -> list[int]:
    source, first = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    return [first + i for i, text in enumerate(source) for n in needles if n in text]


@rk.workflow
def careless(ctx: rk.Context):
    a = time.time()
    b = random.random()
    c = uuid.uuid4()
    d = dt.datetime.now()
    with open(__file__) as f:
        f.readline()
    yield use([a, b, str(c), d.isoformat()])


@rk.workflow
def careful(ctx: rk.Context):
    return (yield use([ctx.now().isoformat(), ctx.random().random(), str(ctx.uuid4())]))


def test_direct_calls_warn_with_the_line_and_the_replacement() -> None:
    with TestEnv() as env, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.run(careless)
    ours = [w for w in caught if issubclass(w.category, NonDeterminismWarning)]
    assert [w.lineno for w in ours] == lines_of(careless.fn, "time.time()", "random.random()", "uuid.uuid4()",
                                                "dt.datetime.now()", "open(__file__)")
    assert all(w.filename == __file__ for w in ours)
    messages = [str(w.message) for w in ours]
    assert "time.time()" in messages[0] and "use ctx.now()" in messages[0]
    assert "use ctx.random()" in messages[1] and "use ctx.uuid4()" in messages[2]
    assert "datetime.now()" in messages[3] and "do I/O in an activity" in messages[4]


def test_ctx_equivalents_and_activity_code_do_not_warn() -> None:
    with TestEnv() as env, warnings.catch_warnings():
        warnings.simplefilter("error", NonDeterminismWarning)
        env.run(careful)


def test_warnings_can_be_switched_off() -> None:  # on by default: tests/test_nondeterminism_default.py
    with rk.Engine(rk.MemoryStore(), warn_nondeterminism=False) as engine, warnings.catch_warnings():
        warnings.simplefilter("error", NonDeterminismWarning)
        engine.start(careless, workflow_id="c").result(timeout=10)


@rk.activity
def left() -> str:
    return "left"


@rk.activity
def right() -> str:
    return "right"


@rk.workflow
def coin_flip(ctx: rk.Context):
    yield rk.sleep(1)
    chosen = yield (left() if random.random() < 0.5 else right())  # non-deterministic branch
    yield rk.sleep(1)
    return chosen


@rk.workflow
def random_argument(ctx: rk.Context):
    token = yield use(str(uuid.uuid4()))  # a different argument on every replay
    return token


def test_strict_replay_catches_a_random_branch_on_the_first_run() -> None:
    caught = 0
    for _ in range(20):  # a fair coin must differ on replay within 20 tries, except with p = 2**-20
        with TestEnv(strict_replay=True, warn_nondeterminism=False) as env:
            try:
                env.run(coin_flip)
            except rk.NonDeterminismError as exc:
                assert "strict replay" in str(exc)
                caught += 1
                break
    assert caught == 1


def test_strict_replay_compares_arguments_too() -> None:
    with TestEnv(strict_replay=True, warn_nondeterminism=False) as env:
        with pytest.raises(rk.NonDeterminismError, match=r"strict replay"):
            env.run(random_argument)


def test_strict_replay_passes_deterministic_workflows() -> None:
    with TestEnv(strict_replay=True) as env:
        assert env.run(careful) is not None
