"""Replay a whole history against the current code, explaining any divergence side by side.

Pure, like the interpreter: events in, a step count or a ``NonDeterminismError`` out.
The engine uses it to explain a failed resume; ``replaykit.testing.replay`` and
``replaykit check`` use it to vet code changes against recorded histories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import payloads
from .context import Context
from .errors import NonDeterminismError
from .history import RESULT, Event
from .interpreter import Machine, Pending, Returned, Step

_CONTEXT_ROWS = 8


def _code_side(step: Step) -> str:
    if isinstance(step, Pending):
        return step.command.describe()
    if isinstance(step, Returned):
        return "returns (the workflow ends)"
    return f"raises {type(step.error).__name__} (the workflow ends)"


def _matches(step: Step, event: Event) -> bool:
    return isinstance(step, Pending) and (step.seq, step.command.kind, step.command.name) == (
        event.seq, event.kind, event.name)


def _table(rows: list[tuple[int, str, str, bool]]) -> str:
    shown = rows[-_CONTEXT_ROWS:]
    width = max([len(r[1]) for r in shown] + [len("history recorded")])
    lines = [f"  {'':2}{'step':>5}  {'history recorded':<{width}}  code now"]
    if len(rows) > len(shown):
        lines.append(f"  {'':2}{'...':>5}")
    for seq, recorded, code, ok in shown:
        lines.append(f"  {'  ' if ok else '> '}{seq:>5}  {recorded:<{width}}  {code}")
    return "\n".join(lines)


def check_history(fn: Callable[..., Any], workflow_id: str, events: Sequence[Event]) -> int:
    """Replay ``events`` (a start event first) through ``fn``; return how many steps matched.

    Raises :class:`NonDeterminismError` whose ``diff`` shows recorded events and
    the commands the code yields now, side by side, up to the first mismatch.
    A history that ends with a result must also end the code there.
    """
    start, rest = events[0], list(events[1:])
    result = rest.pop() if rest and rest[-1].kind == RESULT else None
    recorded = payloads.decode(start.encoding, start.payload)
    ctx = Context(workflow_id, seed=recorded["seed"], start_time=start.at)
    ctx.is_replaying = True
    machine = Machine(fn, ctx, tuple(recorded["args"]), recorded["kwargs"])
    rows: list[tuple[int, str, str, bool]] = []
    try:
        step = machine.start()
        for event in rest:
            ok = _matches(step, event)
            rows.append((event.seq, event.describe(), _code_side(step), ok))
            if not ok:
                raise NonDeterminismError(workflow_id, event.seq, event.describe(), _code_side(step),
                                          machine.where(), _table(rows))
            step = machine.replay(event)
        if result is not None and isinstance(step, Pending):
            ended = "the workflow " + ("returned" if result.outcome == "ok" else "failed")
            rows.append((result.seq, ended, _code_side(step), False))
            raise NonDeterminismError(workflow_id, result.seq, ended, _code_side(step), machine.where(),
                                      _table(rows))
        return len(rest)
    finally:
        machine.discard()
