"""The pure heart: drive one workflow generator or coroutine, live or from history.

:class:`Machine` does no I/O and reads no clock. The runtime feeds it outcomes
(``send``/``throw``) or recorded events (``replay``); it answers with the next
command (:class:`Pending`), or the workflow's end (:class:`Returned`,
:class:`Raised`). ``replay`` first checks the recorded event against the
command the code yielded, raising :class:`NonDeterminismError` on mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from . import determinism, payloads
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
                 kwargs: dict[str, Any], *, watch: bool = False) -> None:
        self.ctx = ctx
        self._watch = watch
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

    def discard(self) -> None:
        """Drop a suspended workflow quietly.

        Closing a generator runs its ``finally`` blocks; that happens here, with
        the logger silenced, instead of at some random garbage collection.
        """
        self.ctx.is_replaying = True
        try:
            self._gen.close()
        except Exception:  # a finally block that yields or raises: nothing to record
            pass

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
            if self._watch:
                with determinism.watching():
                    command = resume(arg)
            else:
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


def replay_history(fn: Callable[..., Any], workflow_id: str, start: Event, events: Iterator[Event], *,
                   watch: bool = False) -> tuple[Machine, Step]:
    """Build a fresh machine from a start event and feed it the recorded events, in one pass.

    ``ctx.is_replaying`` is true while code runs that an event after it already
    covers; code after the last event runs live. Returns the machine and the
    step it reached: where a live run continues.
    """
    recorded = payloads.decode(start.encoding, start.payload)
    ctx = Context(workflow_id, seed=recorded["seed"], start_time=start.at)
    machine = Machine(fn, ctx, tuple(recorded["args"]), recorded["kwargs"], watch=watch)
    event = next(events, None)
    ctx.is_replaying = event is not None
    step = machine.start()
    while event is not None:
        following = next(events, None)
        if not isinstance(step, Pending):
            machine.check(event)
        ctx.is_replaying = following is not None
        step = machine.replay(event)
        event = following
    ctx.is_replaying = False
    return machine, step
