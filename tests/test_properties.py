"""The seed theory, made executable with hypothesis: crash-anywhere, replay purity,
composition, and time."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaykit as rk
from replaykit.history import RESULT
from replaykit.interpreter import Machine, Waiting, new_machine
from replaykit.keys import Keyring
from replaykit.payloads import Codec
from replaykit.testing import TestEnv
from replaykit.testing import strategies as rks
from replaykit.testing.crashes import _run, assert_survives_crashes, shape

SECRET = "property-tests-secret"
CODEC = Codec(Keyring.configured(SECRET))  # reads what a store with SECRET recorded
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def recorded_run(program: list[Any], workflow: Any = rks.run_program) -> list[rk.Event]:
    with TestEnv(warn_nondeterminism=False, concurrent_activities=False,  # repeatable group order
                 db=rk.MemoryStore(secret=SECRET)) as env:
        handle = env.start(workflow, program, workflow_id="p")
        signals = rks.signals_for(program) if workflow is rks.run_program else {}
        for name, payload in signals.items():
            try:
                env.signal("p", name, payload)
            except rk.IllegalTransitionError:  # it ended first (failed before its first wait): nothing to send
                break
        try:
            handle.result(timeout=30)
        except rk.WorkflowFailed:
            pass
        return env.history("p")


def fresh_machine(history: list[rk.Event], workflow: Any = rks.run_program) -> Machine:
    return new_machine(workflow, "p", history[0], codec=CODEC)


# 1. Crash anywhere, resume: same result, same history, same activity executions.
@settings(SETTINGS, max_examples=100)
@given(program=rks.programs(), schedule=rks.crash_schedules())
def test_crash_anywhere_then_resume_matches_an_uninterrupted_run(program: list[Any], schedule: list[float]) -> None:
    length = len(recorded_run(program))
    assert_survives_crashes(rks.run_program, program, signals=rks.signals_for(program),
                            crash_points=rks.crash_points(schedule, length))


# 2. Replay is a pure function: it yields exactly the recorded command sequence...
@SETTINGS
@given(program=rks.programs())
def test_replay_yields_exactly_the_recorded_commands(program: list[Any]) -> None:
    history = recorded_run(program)
    steps = [e for e in history[1:] if e.kind != RESULT]
    machine = fresh_machine(history)
    step = machine.start()
    yielded: dict[int, tuple[str, str]] = {}
    for event in steps:
        assert isinstance(step, Waiting)
        yielded.update({leaf.step: (leaf.command.kind, leaf.command.name) for leaf in step.started})
        step = machine.replay(event)
    assert not isinstance(step, Waiting)
    # Every recorded outcome answers the command the code yielded under that step; steps are numbered
    # in yield order without gaps; a yielded step without an outcome is a loser of an rk.any / rk.all.
    assert all(yielded[e.step] == (e.kind, e.name) for e in steps)
    assert sorted(yielded) == list(range(1, len(yielded) + 1))


# ...and any prefix replays to the suspension point the live run passed through.
@SETTINGS
@given(program=rks.programs(), cut=st.integers(0, 40))
def test_every_prefix_replays_to_the_live_suspension_point(program: list[Any], cut: int) -> None:
    history = recorded_run(program)
    steps = [e for e in history[1:] if e.kind != RESULT]
    cut = min(cut, len(steps))
    machine = fresh_machine(history)
    step = machine.start()
    for event in steps[:cut]:
        step = machine.replay(event)
    if cut < len(steps):
        waiting = machine.outstanding.get(steps[cut].step)
        assert waiting is not None, "the next recorded outcome answers something the code waits on"
        assert (waiting.command.kind, waiting.command.name) == (steps[cut].kind, steps[cut].name)
    else:
        assert not isinstance(step, Waiting)


# 3. Composition: sequencing two workflows replays as the concatenation of their histories.
@rk.workflow(name="composed")
def composed(ctx: rk.Context, program: list[Any]):
    first, second = program
    a = yield from rks._block(ctx, first, "p.0")
    b = yield from rks._block(ctx, second, "p.1")
    return [a, b]


@SETTINGS
@given(first=rks.programs(signals=False, failures=False, randomness=False),
       second=rks.programs(signals=False, failures=False, randomness=False))
def test_sequencing_composes_histories(first: list[Any], second: list[Any]) -> None:
    both = recorded_run([first, second], composed)
    alone = [recorded_run(first), recorded_run(second)]
    steps = [(e.kind, e.name, e.outcome, e.payload) for e in both[1:-1]]
    assert steps == [(e.kind, e.name, e.outcome, e.payload) for h in alone for e in h[1:-1]]
    assert [e.seq for e in both[1:-1]] == list(range(1, len(steps) + 1))
    assert both[-1].value() == [alone[0][-1].value(), alone[1][-1].value()]
    assert shape(both) == shape(recorded_run([first, second], composed))  # and it is reproducible


# 4. Time: timers fire in due order and never early; fake time never goes backwards.
fired: list[int] = []


@rk.workflow(name="sleeps_for")
def sleeps_for(ctx: rk.Context, index: int, seconds: float):
    yield rk.sleep(seconds)
    fired.append(index)  # workflow code runs on the driver, in firing order
    return ctx.now().timestamp()


@SETTINGS
@given(durations=st.lists(st.integers(0, 90 * 86400), min_size=1, max_size=12),
       manual=st.lists(st.integers(0, 30 * 86400), max_size=3))
def test_timers_fire_in_due_order_never_early_and_time_never_goes_back(durations: list[int],
                                                                       manual: list[int]) -> None:
    fired.clear()
    with TestEnv(warn_nondeterminism=False) as env:
        moves: list[float] = []
        env.clock.on_move.append(moves.append)
        start = env.clock.now()
        handles = [env.start(sleeps_for, i, d, workflow_id=f"t{i}") for i, d in enumerate(durations)]
        for step in manual:
            env.sleep(step)
        woke = [h.result(timeout=30) for h in handles]
        end = env.clock.now()
    assert moves == sorted(moves)  # never backwards
    assert woke == [start + d for d in durations]  # exactly at the deadline: never early, never late
    assert [durations[i] for i in fired] == sorted(durations)  # in due order
    assert end == start + max(max(durations), sum(manual))  # no further than needed


def test_crash_check_of_a_run_that_ended_before_its_signals_are_sent() -> None:
    """The run may end before ``assert_survives_crashes`` sends it the signals (a program that fails at
    once): nothing to deliver then. It raised IllegalTransitionError, about once in 20 suite runs."""
    program = [["fail", "at once"], ["all", [["act", 1], ["signal", 1]]]]  # waits on a signal it never reaches
    with TestEnv() as env:
        with pytest.raises(rk.WorkflowFailed):
            env.run(rks.run_program, program, workflow_id="ended")
        outcome = _run(env, rks.run_program, (program,), {}, "ended", rks.signals_for(program))
    assert outcome.status == "failed"
