"""The pure heart: drive one workflow generator or coroutine, live or from history.

:class:`Machine` does no I/O and reads no clock. The runtime feeds it outcomes
(``send``/``throw``) or recorded events (``replay``); it answers with the next
command (:class:`Pending`), or the workflow's end (:class:`Returned`,
:class:`Raised`). ``replay`` first checks the recorded event against the
command the code yielded, raising :class:`NonDeterminismError` on mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from . import payloads
from .commands import Command
from .context import Context
from .errors import InvalidCommandError, NonDeterminismError
from .history import ERROR, TIMEOUT, Event

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


# NamedTuples rather than attrs classes: one is made per step, on the hot path.
class Pending(NamedTuple):
    """The workflow is suspended at its ``seq``-th yield, waiting on ``command``."""

    seq: int
    command: Command
    deadline: float | None


class Returned(NamedTuple):
    value: Any


class Raised(NamedTuple):
    error: Exception


Step = Pending | Returned | Raised


def yield_site(gen: Any) -> str:
    """``file:line`` where a suspended generator/coroutine (or what it delegates to) waits."""
    site = None
    while gen is not None:
        frame = getattr(gen, "gi_frame", None) or getattr(gen, "cr_frame", None)
        if frame is None or os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
            break
        site = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        gen = getattr(gen, "gi_yieldfrom", None) or getattr(gen, "cr_await", None)
    return site or "<unknown location>"


class Machine:
    """One workflow run as a state machine whose transitions are recorded outcomes."""

    def __init__(self, fn: Callable[..., Any], ctx: Context, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.ctx = ctx
        self._gen = fn(ctx, *args, **kwargs)
        self.seq = 0
        self.pending: Command | None = None

    def start(self) -> Step:
        return self._advance(self._gen.send, None)

    def send(self, at: float, value: Any) -> Step:
        """Resume the pending yield with ``value``, at workflow time ``at``."""
        self.ctx._time = at
        return self._advance(self._gen.send, value)

    def throw(self, at: float, error: BaseException) -> Step:
        """Raise ``error`` at the pending yield, at workflow time ``at``."""
        self.ctx._time = at
        return self._advance(self._gen.throw, error)

    def where(self) -> str:
        return yield_site(self._gen)

    def check(self, event: Event) -> None:
        """Raise ``NonDeterminismError`` unless ``event`` answers the pending command."""
        cmd = self.pending
        if cmd is not None and event.seq == self.seq and event.kind == cmd.kind and event.name == cmd.name:
            return
        now = cmd.describe() if cmd is not None else "nothing (the workflow has already ended)"
        raise NonDeterminismError(self.ctx.workflow_id, event.seq, event.describe(), now, self.where())

    def replay(self, event: Event) -> Step:
        """Check ``event`` against the pending command, then resume with its recorded outcome."""
        self.check(event)
        if event.outcome == ERROR:
            return self.throw(event.at, payloads.decode_error(event.encoding, event.payload))
        if event.outcome == TIMEOUT:
            return self.send(event.at, None)
        return self.send(event.at, payloads.decode(event.encoding, event.payload))

    def _advance(self, resume: Callable[[Any], Any], arg: Any) -> Step:
        self.pending = None
        try:
            command = resume(arg)
        except StopIteration as stop:
            return Returned(stop.value)
        except Exception as exc:
            return Raised(exc)
        if not isinstance(command, Command):
            raise InvalidCommandError(
                f"workflow {self.ctx.workflow_id!r} yielded {command!r} at {self.where()}, which is not a "
                "replaykit command. Yield an activity call, rk.sleep(...), rk.wait_signal(...) or "
                "rk.side_effect(...). Nothing was recorded."
            )
        self.seq += 1
        self.pending = command
        return Pending(self.seq, command, command.deadline(self.ctx._time))
