"""Two mistakes of workflow code that Python lets pass, caught during the step that makes them.

A command made and never yielded (``charge_card(x)`` instead of ``yield
charge_card(x)``) does nothing, silently. While the interpreter resumes a
workflow, every command notes where it was made (``commands.per_thread``). When
the step ends (it yields, returns or raises), a command it made that was not
yielded and that nothing refers to any more can never run: that is refused, with
the file and line. So are returning a command, and using one as if it were its
result (``charge_card(x).amount``). A command kept for a later yield is fine.

An ``async def`` workflow runs on replaykit's interpreter, not on an asyncio
event loop, so awaiting asyncio (``asyncio.sleep``, a Future, ``gather``) cannot
work. While such a workflow steps, asyncio finds :class:`RefusingLoop` as its
running loop (only when asyncio is imported at all): any use of it is refused
with the line that made it, even if the workflow catches the error.

Both are :class:`InvalidCommandError`: nothing is recorded, the run is not marked
failed, and a rerun of the fixed code continues from the last recorded step.
"""

from __future__ import annotations

import inspect
import os
import sys
import weakref
from types import CodeType, FrameType, TracebackType
from typing import Any, NamedTuple, NoReturn

from .commands import CHILD, CONTINUE_AS_NEW, SIDE_EFFECT, SIGNAL, TIMER, ActivityCall, Command, Group, SleepUntil
from .errors import InvalidCommandError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_ASYNC_ADVICE = (
    "async def workflows are run by replaykit's interpreter, not by an asyncio event loop: await only "
    "replaykit commands (an activity call, rk.sleep(...), rk.wait_signal(...), rk.all(...), rk.any(...), "
    "rk.child_workflow(...), rk.side_effect(...)) and your own async def helpers that await them. Use "
    "rk.sleep for delays and rk.all/rk.any instead of asyncio.gather/wait; for a timeout on a step, give the "
    "activity one (@rk.activity(timeout=...)) or race it with a timer (rk.any(step, rk.sleep(seconds))); run "
    "asyncio code in an async def activity. Nothing was recorded; fix the code and run again."
)

Made = tuple[Command[Any], CodeType, int]  # a command, and the code and instruction that made it


def _in_asyncio(filename: str) -> bool:
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and os.path.dirname(os.path.abspath(filename)) == os.path.dirname(asyncio.__file__ or "")


def is_library(filename: str) -> bool:
    """Is this source file replaykit's (with the methods attrs writes for it) or asyncio's?"""
    return (os.path.dirname(os.path.abspath(filename)) == _PACKAGE_DIR or filename.startswith("<attrs generated")
            or _in_asyncio(filename))


def _site(code: CodeType, lasti: int) -> str:
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


_FACTORIES = {TIMER: "rk.sleep", SIGNAL: "rk.wait_signal", SIDE_EFFECT: "rk.side_effect", CHILD: "rk.child_workflow",
              CONTINUE_AS_NEW: "rk.continue_as_new"}


def _example(command: Command[Any]) -> str:
    """How the user wrote ``command``, roughly: ``charge_card(...)``, ``rk.sleep(...)``."""
    if isinstance(command, ActivityCall):
        name = getattr(command.activity.fn, "__name__", command.activity.name)
    elif isinstance(command, Group):
        name = f"rk.{command.mode}"
    elif isinstance(command, SleepUntil):  # the one kind made by two factories
        name = "rk.sleep_until"
    else:
        name = _FACTORIES.get(command.kind, type(command).__name__)
    return f"{name}(...)"


class Dropped(NamedTuple):
    """A command made and dropped without being yielded: what it was, and where it was made."""

    what: str
    example: str
    site: str


def _weakly(made: list[Made], used: set[int]) -> list[tuple[weakref.ref[Command[Any]], Dropped]]:
    """Weak references to the commands in ``made`` not ``used``, outermost only (a forgotten
    ``rk.all(a(), b())`` is one mistake, not three)."""
    left = [m for m in made if id(m[0]) not in used]
    inner: set[int] = set()
    for m in left:
        if isinstance(m[0], Group):
            inner |= _tree(m[0]) - {id(m[0])}
    notes = []
    for command, code, lasti in left:
        if id(command) not in inner:
            try:
                ref = weakref.ref(command)
            except TypeError:  # a command type without weak references: assume it is kept
                continue
            notes.append((ref, Dropped(command.describe(), _example(command), _site(code, lasti))))
    return notes


def dropped(made: list[Made], yielded: Command[Any] | None) -> list[Dropped]:
    """The commands made during a step, not yielded, that nothing refers to any more: they can
    never run. Commands kept for a later yield (in a variable, a list) are not dropped. Empties
    ``made``, which held them: whatever dies then was referred to by nothing else."""
    notes = _weakly(made, _tree(yielded) if yielded is not None else set())
    made.clear()
    return [note for ref, note in notes if ref() is None]


def forgotten_yield(workflow_id: str, lost: list[Dropped], then: str) -> InvalidCommandError:
    """The error for commands dropped without being yielded; ``then`` says when it was noticed."""
    what = ", ".join(f"{d.what} at {d.site}" for d in lost)
    it = "it" if len(lost) == 1 else "them"
    return InvalidCommandError(
        f"workflow {workflow_id!r} made {what} and dropped {it} without yielding {it}, {then}. A command does "
        f"nothing until the workflow yields it: write `result = yield {lost[0].example}` (`await` in an async "
        "def workflow); several at once go in rk.all(...). Nothing was recorded; fix the code and run again."
    )


def returned_command(workflow_id: str, command: Command[Any], made: list[Made]) -> InvalidCommandError:
    where = next((f" (made at {_site(m[1], m[2])})" for m in made if m[0] is command), "")
    return InvalidCommandError(
        f"workflow {workflow_id!r} returned {command.describe()}{where} instead of yielding it, so it never ran: "
        f"write `return (yield {_example(command)})` (`return await ...` in an async def workflow). "
        "Nothing was recorded; fix the code and run again."
    )


def misused(workflow_id: str, error: BaseException, made: list[Made]) -> InvalidCommandError | None:
    """The error for workflow code that raised because it misused a command (used an activity
    call as its result, passed rk.all something else), or ``None`` if ``error`` is not that."""
    if isinstance(error, TypeError) and "can't be used in 'await' expression" in str(error):
        return InvalidCommandError(
            f"workflow {workflow_id!r} at {_raised_at(error)[0]}: {error}: an async def workflow awaits replaykit "
            "commands and async def helpers that await them (a helper written as a generator must become an "
            f"async def too). {_ASYNC_ADVICE}")
    command = getattr(error, "obj", None) if isinstance(error, AttributeError) else None
    if not isinstance(command, Command) and not isinstance(error, InvalidCommandError):
        return None
    where = next((f" (made at {_site(m[1], m[2])})" for m in made if m[0] is command), "")
    text = str(error) if str(error).endswith(".") else f"{error}."
    return InvalidCommandError(
        f"workflow {workflow_id!r} at {_raised_at(error)[0]}{where}: {text} Nothing was recorded; fix the code "
        "and run again."
    )


def _raised_at(error: BaseException) -> tuple[str, bool]:
    """Where user code raised ``error`` (its innermost frame outside replaykit and asyncio), and
    whether it was raised from inside asyncio's own code."""
    site, tb = "<unknown location>", error.__traceback__
    last: TracebackType | None = None
    while tb is not None:
        if not is_library(tb.tb_frame.f_code.co_filename):
            site = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        last, tb = tb, tb.tb_next
    return site, last is not None and _in_asyncio(last.tb_frame.f_code.co_filename)


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

        def refuse(*args: Any, **kwargs: Any) -> NoReturn:
            for arg in args:  # a coroutine handed to create_task: closed, so it does not warn "never awaited"
                if inspect.iscoroutine(arg):
                    arg.close()
            if self.error is None:
                self.error = _foreign(self.workflow_id, f"it needs a running event loop: loop.{name}()",
                                      _user_site(sys._getframe(1)))
            raise self.error

        return refuse

    def enter(self) -> Any:
        """Become this thread's running loop, if asyncio is imported, and the finalizer of the async
        generators the step starts; returns what to restore."""
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(hooks.firstiter, self._finalize)
        if self._set is None:
            events = sys.modules.get("asyncio.events")  # never imported here: users without asyncio pay nothing
            if events is None:
                return hooks, self
            self._get, self._set = events._get_running_loop, events._set_running_loop
        previous = self._get()
        self._set(self)
        return hooks, previous

    def leave(self, previous: Any) -> None:
        hooks, loop = previous
        sys.set_asyncgen_hooks(*hooks)
        if loop is not self:
            self._set(loop)

    def _finalize(self, agen: Any) -> None:
        """An async generator of the workflow dropped before its end (a ``break`` out of ``async for``). An
        asyncio loop would close it later, in a task of its own: here its cleanup runs now if it awaits
        nothing, and a cleanup that awaits a step is refused (it would run at no recorded point)."""
        closing = agen.aclose()
        try:
            closing.send(None)
        except StopIteration:
            return  # closed, with nothing to await
        except BaseException:  # noqa: BLE001 - its cleanup failed: still a cleanup that cannot run here
            pass
        else:
            closing.close()
        if self.error is None:
            self.error = InvalidCommandError(
                f"workflow {self.workflow_id!r}: the async generator {agen.__qualname__} was left before its end "
                "(a break or return out of async for), and its cleanup awaits a step, which has no place to run "
                "when Python drops the generator. Close it where the workflow says: async with "
                "contextlib.aclosing(gen(...)) as items: async for item in items: ... Nothing was recorded; fix "
                "the code and run again.")

    def check(self, raised: BaseException | None = None) -> None:
        """Raise the refusal of this step, if any; or if the step ``raised`` from inside asyncio
        (``asyncio.timeout`` outside a task, ``asyncio.run``, asyncio imported mid-step)."""
        error, self.error = self.error, None
        if error is None and raised is not None:
            site, in_asyncio = _raised_at(raised)
            if in_asyncio:
                error = _foreign(self.workflow_id, f"{type(raised).__name__}: {raised}", site)
        if error is not None:
            raise error from raised
