"""Properties, with hypothesis: replay equivalence and crash-anywhere resumption."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaykit as rk
from replaykit.history import START
from replaykit.interpreter import Machine, Pending

executions: Counter[str] = Counter()


@rk.activity
def compute(tag: str, x: int) -> int:
    executions[tag] += 1
    return x * 2 + 1


@rk.activity
def refuse(tag: str, message: str) -> None:
    executions[tag] += 1
    raise ValueError(message)


@rk.workflow
def program(ctx: rk.Context, ops: list[list[Any]]):
    """Interpret a generated list of operations; the value depends on every outcome."""
    acc = 0
    for i, (op, arg) in enumerate(ops):
        tag = f"{ctx.workflow_id}/{i}"
        if op == "act":
            acc += yield compute(tag, arg)
        elif op == "fail":
            try:
                yield refuse(tag, f"no {arg}")
            except ValueError as exc:
                acc += len(str(exc))
        elif op == "sleep":
            yield rk.sleep(0)
        elif op == "side":
            acc += yield rk.side_effect(lambda a=arg: a + 1)
        elif op == "rand":
            acc += ctx.random().randint(0, 1000) + ctx.uuid4().int % 7
        elif op == "branch" and acc % 2:
            acc += yield compute(tag, -arg)
    if ops and ops[-1][0] == "raise":
        raise RuntimeError(f"ended with {acc}")
    return acc


ops = st.lists(
    st.tuples(st.sampled_from(["act", "fail", "sleep", "side", "rand", "branch", "raise"]),
              st.integers(-50, 50)).map(list),
    max_size=12,
)


def shape(events: list[rk.Event]) -> list[tuple[Any, ...]]:
    """A history without its timestamps (and the start event's random seed)."""
    return [(e.seq, e.kind, e.name, e.outcome, e.payload if e.kind != START else None) for e in events]


def outcome(handle: rk.WorkflowHandle) -> tuple[str, Any]:
    try:
        return "ok", handle.result(timeout=30)
    except rk.WorkflowFailed as exc:
        return "failed", exc.message


def copy_prefix(source: rk.Store, workflow_id: str, n: int) -> rk.MemoryStore:
    """A store holding the first ``n`` events: the state a crash after them leaves behind."""
    events = list(source.events(workflow_id))[:n]
    target = rk.MemoryStore()
    target.create(workflow_id, "program", events[0])
    for e in events[1:]:
        target.record(workflow_id, e)
    return target


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, data=st.data())
def test_crash_anywhere_then_resume_matches_an_uninterrupted_run(ops: list[list[Any]], data: Any) -> None:
    executions.clear()
    with rk.Engine(rk.MemoryStore(), activity_threads=0) as engine:
        expected = outcome(engine.start(program, ops, workflow_id="p"))
        history = list(engine.store.events("p"))
    uninterrupted = Counter(executions)

    crash_after = data.draw(st.integers(1, len(history) - 1), label="events kept by the crash")
    store = copy_prefix(engine.store, "p", crash_after)
    executions.clear()
    with rk.Engine(store, activity_threads=0) as engine:
        assert outcome(engine.start(program, ops, workflow_id="p")) == expected
        resumed = list(store.events("p"))
    assert shape(resumed) == shape(history)
    # Only the activities not yet recorded ran again, each once.
    already_recorded = sum(1 for e in history[1:crash_after] if e.kind == "activity")
    assert sum(executions.values()) == sum(uninterrupted.values()) - already_recorded


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_replay_reproduces_the_recorded_command_sequence(ops: list[list[Any]]) -> None:
    with rk.Engine(rk.MemoryStore(), activity_threads=0) as engine:
        outcome(engine.start(program, ops, workflow_id="p"))
        history = list(engine.store.events("p"))
    start = history[0].value()
    commands_seen = []
    machine = Machine(program.fn, rk.Context("p", seed=start["seed"], start_time=history[0].at), (ops,), {})
    step = machine.start()
    for event in history[1:-1]:
        assert isinstance(step, Pending)
        commands_seen.append((step.seq, step.command.kind, step.command.name))
        step = machine.replay(event)  # raises NonDeterminismError on any divergence
    assert not isinstance(step, Pending)
    assert commands_seen == [(e.seq, e.kind, e.name) for e in history[1:-1]]


@settings(max_examples=40, deadline=None)
@given(ops=ops, prefix=st.integers(0, 20))
def test_every_history_prefix_replays_to_the_suspension_point_the_live_run_passed(
        ops: list[list[Any]], prefix: int) -> None:
    with rk.Engine(rk.MemoryStore(), activity_threads=0) as engine:
        outcome(engine.start(program, ops, workflow_id="p"))
        history = list(engine.store.events("p"))
    steps = history[1:-1]
    prefix = min(prefix, len(steps))
    start = history[0].value()
    machine = Machine(program.fn, rk.Context("p", seed=start["seed"], start_time=history[0].at), (ops,), {})
    step = machine.start()
    for event in steps[:prefix]:
        step = machine.replay(event)
    if prefix < len(steps):
        assert isinstance(step, Pending) and step.seq == steps[prefix].seq
        assert (step.command.kind, step.command.name) == (steps[prefix].kind, steps[prefix].name)
    else:
        assert not isinstance(step, Pending)
