"""Replay a whole history against the current code, explaining any divergence side by side.

Pure, like the interpreter: events in, a step count or a ``NonDeterminismError`` out.
The engine uses it to explain a failed resume; ``replaykit.testing.replay`` and
``replaykit check`` use it to vet code changes against recorded histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import Cancelled, NonDeterminismError, Terminated
from .history import CANCEL, ERROR, RESULT, Event
from .interpreter import Feed, Machine, Returned, Step, Waiting, new_machine
from .payloads import Codec, error_record
from .workflow import Workflow

_CONTEXT_ROWS = 8


def _code_side(machine: Machine, step: Step, event: Event) -> str:
    leaf = machine.outstanding.get(event.step)
    if leaf is not None:
        return leaf.command.describe()
    if machine.outstanding:
        return ", ".join(f"step {s}: {lf.command.describe()}" for s, lf in sorted(machine.outstanding.items()))
    if isinstance(step, Returned):
        return "returns (the workflow ends)"
    if isinstance(step, Waiting):
        return "nothing"
    return f"ends ({type(step).__name__.lower()})"


def _matches(machine: Machine, event: Event) -> bool:
    if event.kind == CANCEL:
        return True
    leaf = machine.outstanding.get(event.step)
    return leaf is not None and (leaf.command.kind, leaf.command.name) == (event.kind, event.name)


def _table(rows: list[tuple[int, str, str, bool]]) -> str:
    shown = rows[-_CONTEXT_ROWS:]
    width = max([len(r[1]) for r in shown] + [len("history recorded")])
    lines = [f"  {'':2}{'step':>5}  {'history recorded':<{width}}  code now"]
    if len(rows) > len(shown):
        lines.append(f"  {'':2}{'...':>5}")
    for step, recorded, code, ok in shown:
        lines.append(f"  {'  ' if ok else '> '}{step:>5}  {recorded:<{width}}  {code}")
    return "\n".join(lines)


def _named(error: type[BaseException]) -> str:
    return f"{error.__module__}.{error.__qualname__}"


def _ended_without_code(result: Event, before: Sequence[Event]) -> bool:
    """Was ``result`` recorded without running the code (so the code need not end there)? A run
    terminated (``rk.terminate``), or a pending run cancelled before it started (its start alone
    before the result). Read from the recorded error's type name, never unpickled."""
    if result.outcome != ERROR:
        return False
    kind = error_record(result.encoding, result.payload, "result").get("type")
    return kind == _named(Terminated) or (kind == _named(Cancelled) and not before)


def check_history(workflow: Workflow[Any], workflow_id: str, events: Sequence[Event], codec: Codec) -> int:
    """Replay ``events`` (a start event first) through ``fn``; return how many events matched.

    Raises :class:`NonDeterminismError` whose ``diff`` shows recorded events and
    the commands the code waits on now, side by side, up to the first mismatch.
    A history that ends with a result must also end the code there, unless the result was
    recorded without running it (a terminate, a pending run cancelled).
    """
    rest = list(events[1:])
    result = rest.pop() if rest and rest[-1].kind == RESULT else None
    machine = new_machine(workflow, workflow_id, events[0], codec=codec)
    machine.ctx.is_replaying = True
    feed = machine.feed = Feed(iter(rest))
    rows: list[tuple[int, str, str, bool]] = []
    try:
        step = machine.start()
        while (event := feed.pop()) is not None:
            ok = event.kind == "patch" or _matches(machine, event)
            if event.kind != "patch":
                rows.append((event.step, event.describe(), _code_side(machine, step, event), ok))
            if not ok:
                raise NonDeterminismError(workflow_id, event.step, event.describe(),
                                          _code_side(machine, step, event), machine.where(), _table(rows))
            if event.kind != "patch":
                step = machine.replay(event)
            else:
                machine.check(event)  # an unconsumed marker: the code no longer asks for it
        if result is not None and isinstance(step, Waiting) and not _ended_without_code(result, rest):
            ended = "the workflow " + ("returned" if result.outcome == "ok" else "ended")
            now = _code_side(machine, step, result)
            rows.append((result.step, ended, now, False))
            raise NonDeterminismError(workflow_id, result.seq, ended, now, machine.where(), _table(rows))
        return len(rest)
    finally:
        machine.discard()
