"""hypothesis strategies for workflow tests (needs ``hypothesis`` installed).

``programs()`` draws random workflow programs: trees of activities, failing
activities caught by ``try`` blocks, timers, side effects, signal waits with
timeouts, parallel groups (``rk.all`` / ``rk.any`` of those), and an optional
uncaught exception at the end. ``run_program`` is a
workflow that interprets one, so any property about workflows in general can
be checked against many of them::

    from hypothesis import given
    from replaykit.testing import strategies as rks
    from replaykit.testing.crashes import assert_survives_crashes

    @given(rks.programs())
    def test_any_program_survives_crashes(program):
        assert_survives_crashes(rks.run_program, program, signals=rks.signals_for(program))

``crash_schedules()`` draws the fractions of a run's history at which to crash.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import strategies as st

from .. import commands
from ..activity import activity
from ..context import Context
from ..workflow import workflow

Program = list[Any]


class ProgramError(Exception):
    """Raised by ``fail`` steps (and caught by ``try`` blocks) in generated programs."""


@activity(name="replaykit.testing.program_step")
def program_step(n: int) -> int:
    return n * 3 + 1


@activity(name="replaykit.testing.program_failure")
def program_failure(message: str) -> None:
    raise ProgramError(message)


def _plus_one(n: int) -> int:
    return n + 1


def _block(ctx: Context, ops: Program, path: str) -> Any:
    acc = 0
    for i, op in enumerate(ops):
        kind, here = op[0], f"{path}.{i}"
        if kind == "act":
            acc += yield program_step(op[1])
        elif kind == "fail":
            yield program_failure(op[1])
        elif kind == "sleep":
            yield commands.sleep(op[1])
        elif kind == "side":
            acc += yield commands.side_effect(functools.partial(_plus_one, op[1]))
        elif kind == "signal":
            got = yield commands.wait_signal(f"sig{here}", timeout=op[1])
            acc += 0 if got is None else got
        elif kind == "rand":
            acc += ctx.random().randint(0, 99)
        elif kind == "seq":
            acc += yield from _block(ctx, op[1], here)
        elif kind == "try":
            try:
                acc += yield from _block(ctx, op[1], here)
            except ProgramError as exc:
                acc += len(str(exc))
        elif kind in ("all", "any"):
            group = [_command(leaf, f"{here}.{j}") for j, leaf in enumerate(op[1])]
            if kind == "all":
                acc += sum(v or 0 for v in (yield commands.all_of(*group)))
            else:
                index, value = yield commands.any_of(*group)
                acc += 1000 * index + (value or 0)
        elif kind == "raise":
            raise ProgramError(f"program raised at {here} with {acc}")
    return acc


def _command(op: list[Any], here: str) -> commands.Command:
    """One leaf of a parallel group, as a command."""
    kind = op[0]
    if kind == "act":
        return program_step(op[1])
    if kind == "fail":
        return program_failure(op[1])
    if kind == "sleep":
        return commands.sleep(op[1])
    if kind == "side":
        return commands.side_effect(functools.partial(_plus_one, op[1]))
    return commands.wait_signal(f"sig{here}", timeout=op[1])


@workflow(name="replaykit.testing.run_program")
def run_program(ctx: Context, program: Program) -> Any:
    """Interpret a program drawn from :func:`programs`."""
    return (yield from _block(ctx, program, "p"))


def _leaves(signals: bool, failures: bool, randomness: bool) -> st.SearchStrategy[list[Any]]:
    options = [
        st.tuples(st.just("act"), st.integers(-1000, 1000)),
        st.tuples(st.just("sleep"), st.sampled_from([0, 1, 60, 3600, 86400, 30 * 86400])),
        st.tuples(st.just("side"), st.integers(0, 100)),
    ]
    if randomness:
        options.append(st.tuples(st.just("rand"), st.just(0)))
    if signals:
        options.append(st.tuples(st.just("signal"), st.sampled_from([1, 3600, 86400])))
    if failures:
        options.append(st.tuples(st.just("fail"), st.text("abcdefgh", min_size=1, max_size=8)))
    return st.one_of(options).map(list)


def programs(*, max_leaves: int = 12, signals: bool = True, failures: bool = True,
             randomness: bool = True) -> st.SearchStrategy[Program]:
    """Random workflow programs for :func:`run_program`: nested sequences and ``try`` blocks.

    Switch off ``signals`` (waits with timeouts), ``failures`` (failing activities,
    an uncaught exception at the end) or ``randomness`` (``ctx.random()`` draws).
    """
    leaves = _leaves(signals, failures, randomness)
    group_leaves = _leaves(signals, failures, randomness=False)  # ctx.random() is no command
    groups = st.tuples(st.sampled_from(["all", "any"]), st.lists(group_leaves, min_size=1, max_size=4)).map(list)
    tree = st.recursive(
        st.lists(st.one_of(leaves, groups), max_size=4),
        lambda children: st.lists(
            st.one_of(leaves, groups, children.map(lambda c: ["seq", c]),
                      children.map(lambda c: ["try", c])),
            max_size=4),
        max_leaves=max_leaves,
    )
    ending = st.sampled_from([[], [["raise", 0]]]) if failures else st.just([])
    return st.tuples(tree, ending).map(lambda t: t[0] + t[1])


def signals_for(program: Program, path: str = "p") -> dict[str, int]:
    """Payloads for every other signal the program waits on (the rest time out)."""
    found: dict[str, int] = {}
    for i, op in enumerate(program):
        here = f"{path}.{i}"
        if op[0] == "signal" and i % 2 == 0:
            found[f"sig{here}"] = i + 1
        elif op[0] in ("seq", "try"):
            found.update(signals_for(op[1], here))
        elif op[0] in ("all", "any"):
            found.update({f"sig{here}.{j}": j + 1 for j, leaf in enumerate(op[1]) if leaf[0] == "signal" and j % 2})
    return found


def crash_schedules(max_crashes: int = 3) -> st.SearchStrategy[list[float]]:
    """Sorted fractions in [0, 1): where in a run's history to crash (see ``crash_points``)."""
    return st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=max_crashes).map(sorted)


def crash_points(schedule: list[float], history_length: int) -> list[int]:
    """Map a crash schedule onto event counts a crash may keep: 1 .. history_length - 1."""
    return sorted({1 + int(f * (history_length - 1)) for f in schedule if history_length > 1})
