"""Two mistakes of workflow code that Python lets pass, caught during the step that makes them.

A command made and never yielded (``charge_card(x)`` instead of ``yield
charge_card(x)``) does nothing, silently. While the interpreter resumes a
workflow, every command notes where it was made (``commands.per_thread``); a step
that ends (yields, returns or raises) leaving one unused is refused with the file
and line, before anything is recorded.

An ``async def`` workflow runs on replaykit's interpreter, not on an asyncio
event loop, so awaiting asyncio (``asyncio.sleep``, a Future, ``gather``) cannot
work. While such a workflow steps, asyncio finds :class:`RefusingLoop` as its
running loop (only when asyncio is imported at all): any use of it is refused
with the line that made it, even if the workflow catches the error.

Both are :class:`InvalidCommandError`: nothing is recorded, the run is not marked
failed, and a rerun of the fixed code continues from the last recorded step.
"""

from __future__ import annotations

import os
import sys
from types import FrameType, TracebackType
from typing import Any

from .commands import CHILD, CONTINUE_AS_NEW, SIDE_EFFECT, SIGNAL, TIMER, ActivityCall, Command, Group
from .errors import InvalidCommandError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_ASYNC_ADVICE = (
    "async def workflows are run by replaykit's interpreter, not by an asyncio event loop: await only "
    "replaykit commands (an activity call, rk.sleep(...), rk.wait_signal(...), rk.all(...), rk.any(...), "
    "rk.child_workflow(...), rk.side_effect(...)) and your own async def helpers that await them. Use "
    "rk.sleep for delays and rk.all/rk.any instead of asyncio.gather/wait; run asyncio code in an async def "
    "activity. Nothing was recorded; fix the code and run again."
)

Made = tuple[Command[Any], FrameType, int]  # a command, and the frame and instruction that made it


def _in_asyncio(filename: str) -> bool:
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and os.path.dirname(os.path.abspath(filename)) == os.path.dirname(asyncio.__file__ or "")


def is_library(filename: str) -> bool:
    """Is this source file replaykit's or asyncio's (not the user's code)?"""
    return os.path.dirname(os.path.abspath(filename)) == _PACKAGE_DIR or _in_asyncio(filename)


def _site(made: Made) -> str:
    _, frame, lasti = made
    code = frame.f_code
    line = next((n for start, end, n in code.co_lines() if start <= lasti < end and n is not None),
                code.co_firstlineno)
    return f"{code.co_filename}:{line}"


def _tree(command: Command[Any]) -> set[int]:
    """Ids of a command and of every command nested in it."""
    ids, todo = set(), [command]
    while todo:
        c = todo.pop()
        ids.add(id(c))
        if isinstance(c, Group):
            todo.extend(c.commands)
    return ids


def unused(made: list[Made], yielded: Command[Any] | None) -> list[Made]:
    """The commands made during a step that it did not yield, outermost only (a forgotten
    ``rk.all(a(), b())`` is one mistake, not three)."""
    used = _tree(yielded) if yielded is not None else set()
    left = [m for m in made if id(m[0]) not in used]
    inner: set[int] = set()
    for command, _, _ in left:
        if isinstance(command, Group):
            inner |= _tree(command) - {id(command)}
    return [m for m in left if id(m[0]) not in inner]


_FACTORIES = {TIMER: "rk.sleep", SIGNAL: "rk.wait_signal", SIDE_EFFECT: "rk.side_effect", CHILD: "rk.child_workflow",
              CONTINUE_AS_NEW: "rk.continue_as_new"}


def _example(command: Command[Any]) -> str:
    """How the user wrote ``command``, roughly: ``charge_card(...)``, ``rk.sleep(...)``."""
    if isinstance(command, ActivityCall):
        name = getattr(command.activity.fn, "__name__", command.activity.name)
    elif isinstance(command, Group):
        name = f"rk.{command.mode}"
    else:
        name = _FACTORIES.get(command.kind, "rk.sleep")
    return f"{name}(...)"


def forgotten_yield(workflow_id: str, left: list[Made], then: str) -> InvalidCommandError:
    """The error for commands made and not yielded; ``then`` says what the step did instead."""
    what = ", ".join(f"{m[0].describe()} at {_site(m)}" for m in left)
    it = "it" if len(left) == 1 else "them"
    return InvalidCommandError(
        f"workflow {workflow_id!r} made {what} and did not yield {it} {then}. A command does nothing until the "
        f"workflow yields it: write `result = yield {_example(left[0][0])}` (`await` in an async def workflow), "
        "in the step that makes it; several at once go in rk.all(...). Nothing was recorded; fix the code and "
        "run again."
    )


def returned_command(workflow_id: str, command: Command[Any], made: list[Made]) -> InvalidCommandError:
    where = next((f" (made at {_site(m)})" for m in made if m[0] is command), "")
    return InvalidCommandError(
        f"workflow {workflow_id!r} returned {command.describe()}{where} instead of yielding it, so it never ran: "
        f"write `return (yield {_example(command)})` (`return await ...` in an async def workflow). "
        "Nothing was recorded; fix the code and run again."
    )


def not_a_command(workflow_id: str, value: Any, where: str, is_async: bool) -> InvalidCommandError:
    if is_async:
        return InvalidCommandError(
            f"workflow {workflow_id!r} awaited {value!r} at {where}, which is not a replaykit command "
            f"(asyncio.sleep(0) and asyncio futures hand such values to the interpreter). {_ASYNC_ADVICE}"
        )
    return InvalidCommandError(
        f"workflow {workflow_id!r} yielded {value!r} at {where}, which is not a replaykit command. Yield an "
        "activity call, rk.sleep(...), rk.wait_signal(...), rk.all(...), rk.any(...), rk.child_workflow(...) "
        "or rk.side_effect(...). Nothing was recorded."
    )


def _user_site(frame: FrameType | None) -> str:
    """The innermost caller outside replaykit and asyncio, of a running frame."""
    while frame is not None and is_library(frame.f_code.co_filename):
        frame = frame.f_back
    return "<unknown location>" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _raised_in_asyncio(raised: BaseException) -> str | None:
    """Where user code called into asyncio, if ``raised`` came from inside asyncio's own code."""
    site, tb = None, raised.__traceback__
    last: TracebackType | None = None
    while tb is not None:
        if not is_library(tb.tb_frame.f_code.co_filename):
            site = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        last, tb = tb, tb.tb_next
    if last is None or not _in_asyncio(last.tb_frame.f_code.co_filename):
        return None
    return site or "<unknown location>"


def _foreign(workflow_id: str, what: str, site: str) -> InvalidCommandError:
    return InvalidCommandError(f"workflow {workflow_id!r} used asyncio at {site} ({what}). {_ASYNC_ADVICE}")


class RefusingLoop:
    """The running asyncio loop while an ``async def`` workflow steps: every use is refused.

    The first refusal is kept in ``error``; the interpreter raises it when the
    step ends, whatever the workflow did with it.
    """

    __slots__ = ("workflow_id", "error", "_get", "_set")

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.error: InvalidCommandError | None = None
        self._get: Any = None  # asyncio's _get_running_loop / _set_running_loop, once asyncio is imported
        self._set: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self.error is None:
            self.error = _foreign(self.workflow_id, f"it needs a running event loop: loop.{name}",
                                  _user_site(sys._getframe(1)))
        raise self.error

    def enter(self) -> Any:
        """Become this thread's running loop, if asyncio is imported; returns what to restore."""
        if self._set is None:
            events = sys.modules.get("asyncio.events")  # never imported here: users without asyncio pay nothing
            if events is None:
                return self
            self._get, self._set = events._get_running_loop, events._set_running_loop
        previous = self._get()
        self._set(self)
        return previous

    def leave(self, previous: Any) -> None:
        if previous is not self:
            self._set(previous)

    def check(self, raised: BaseException | None = None) -> None:
        """Raise the refusal of this step, if any; or if the step ``raised`` from inside asyncio
        (``asyncio.timeout`` outside a task, ``asyncio.run``, asyncio imported mid-step)."""
        error, self.error = self.error, None
        if error is None and raised is not None:
            site = _raised_in_asyncio(raised)
            if site is not None:
                error = _foreign(self.workflow_id, f"{type(raised).__name__}: {raised}", site)
        if error is not None:
            raise error from raised
