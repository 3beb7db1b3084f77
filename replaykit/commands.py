"""The commands a workflow yields: immutable values, compared by value.

A workflow never performs an effect itself; it yields one of these and the
runtime answers it, live or from history. Because they are plain values, a
unit test can step a workflow by hand::

    >>> import replaykit as rk
    >>> from datetime import timedelta
    >>> rk.sleep(timedelta(hours=1)) == rk.sleep(3600)
    True

Every command is also awaitable, so ``async def`` workflows ``await`` the
same values that generator workflows ``yield``. ``Command[T]`` is what the
workflow is resumed with: ``await rk.sleep(1)`` is ``None``, ``await
charge_card(...)`` is the activity's return type.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable, Generator
from datetime import datetime, timedelta, timezone
from types import CodeType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, overload

import attrs

from .clock import optional_seconds, seconds
from .errors import InvalidCommandError
from .text import check_text

if TYPE_CHECKING:
    # PEP 696 defaults, seen by type checkers only: a bare ``Command`` means ``Command[Any]``.
    from typing_extensions import TypeVar

    from .activity import Activity
    from .workflow import Takes0, Takes1, Takes2, Takes3, Takes4, Takes5, Takes6, Workflow

    T_co = TypeVar("T_co", covariant=True, default=Any)
    R = TypeVar("R", default=Any)  # also the result type of Activity, Workflow and WorkflowHandle
else:
    from typing import TypeVar

    T_co = TypeVar("T_co", covariant=True)
    R = TypeVar("R")
A1 = TypeVar("A1")
A2 = TypeVar("A2")
A3 = TypeVar("A3")
A4 = TypeVar("A4")
A5 = TypeVar("A5")
A6 = TypeVar("A6")

ACTIVITY = "activity"
TIMER = "timer"
SIGNAL = "signal"
SIDE_EFFECT = "side_effect"
CHILD = "child"
GROUP = "group"
CONTINUE_AS_NEW = "continue_as_new"


class Making:
    """While the interpreter resumes a workflow on this thread, ``made`` is where the commands
    made meanwhile are noted, with where they were made (code, instruction); else ``None``."""

    __slots__ = ("made",)

    def __init__(self) -> None:
        self.made: list[tuple[Command[Any], CodeType, int]] | None = None


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.making = Making()


per_thread = _PerThread()  # ``per_thread.making``: this thread's (one lookup a step or command)
_C = TypeVar("_C", bound="Command[Any]")


def noted(command: _C) -> _C:
    """``command``, noted with its maker's place if a workflow step runs on this thread (see guard.py)."""
    made = per_thread.making.made
    if made is not None:
        frame = sys._getframe(2)  # the caller of the factory that called us: the workflow's code
        made.append((command, frame.f_code, frame.f_lasti))  # not the frame: it would keep its locals alive
    return command


class Command(Generic[T_co]):
    """Base class of all commands. ``kind`` and ``name`` are what replay checks.

    ``T_co`` is what ``yield``/``await`` of the command gives back to the workflow.
    """

    __slots__ = ()
    kind: ClassVar[str]

    @property
    def name(self) -> str:
        return ""

    def deadline(self, now: float) -> float | None:
        """When this command times out (or fires), given the workflow's current time."""
        return None

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}" if self.name else self.kind

    def __await__(self) -> Generator[Command[Any], Any, T_co]:
        value: T_co = yield self
        return value


@attrs.frozen(repr=False)
class ActivityCall(Command[R]):
    """Run ``activity`` with these arguments; made by calling an ``@rk.activity`` function."""

    kind: ClassVar[str] = ACTIVITY
    activity: Activity[..., R]
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.activity.name

    def describe(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"activity {self.activity.name}({', '.join(parts)})"

    __repr__ = describe

    def _misuse(self) -> str:
        fn = getattr(self.activity.fn, "__name__", self.activity.name)
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return (
            f"{fn}({', '.join(parts)}) is a replaykit command made by calling the activity {fn}, not its "
            f"result: calling an activity does not run it. In a workflow, yield it: `result = yield {fn}(...)` "
            f"(`await` in an async def workflow); to run the function directly (a test, a script), call "
            f"`{fn}.fn(...)`"
        )

    def _misused(self, *_: Any) -> NoReturn:
        raise InvalidCommandError(self._misuse() + ".")

    if not TYPE_CHECKING:  # for people; type checkers report the misuse themselves
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            raise AttributeError(f"{self._misuse()}. It has no attribute {name!r}.", name=name, obj=self)


# Using an activity's command as if it were the result says what went wrong (not "not iterable").
for _dunder in ("iter contains getitem int float index complex round neg pos abs lt le gt ge add radd sub rsub "
                "mul rmul truediv rtruediv floordiv rfloordiv mod rmod pow rpow matmul rmatmul").split():
    setattr(ActivityCall, f"__{_dunder}__", ActivityCall._misused)


@attrs.frozen(repr=False)
class Sleep(Command[None]):
    """A durable timer that fires ``seconds`` after the workflow's current time."""

    kind: ClassVar[str] = TIMER
    seconds: float = attrs.field(converter=seconds)

    def deadline(self, now: float) -> float:
        return now + self.seconds

    def describe(self) -> str:
        return f"sleep({timedelta(seconds=self.seconds)})"

    __repr__ = describe


def _aware(when: datetime) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(
            f"sleep_until needs a timezone-aware datetime (e.g. datetime(..., tzinfo=timezone.utc)), got {when!r}"
        )
    return when


@attrs.frozen(repr=False)
class SleepUntil(Command[None]):
    """A durable timer that fires at an absolute, timezone-aware time."""

    kind: ClassVar[str] = TIMER
    when: datetime = attrs.field(converter=_aware)

    def deadline(self, now: float) -> float:
        return self.when.timestamp()

    def describe(self) -> str:
        return f"sleep_until({self.when.isoformat()})"

    __repr__ = describe


@attrs.frozen(repr=False)
class WaitSignal(Command[Any]):
    """Wait for the next signal called ``signal``; ``None`` if ``timeout`` passes first."""

    kind: ClassVar[str] = SIGNAL
    signal: str
    timeout: float | None = attrs.field(default=None, converter=optional_seconds)

    @property
    def name(self) -> str:
        return self.signal

    def deadline(self, now: float) -> float | None:
        return None if self.timeout is None else now + self.timeout

    def describe(self) -> str:
        timeout = "" if self.timeout is None else f", timeout={timedelta(seconds=self.timeout)}"
        return f"wait_signal({self.signal!r}{timeout})"

    __repr__ = describe


@attrs.frozen(repr=False)
class SideEffect(Command[R]):
    """Run a small non-deterministic function once and record its value."""

    kind: ClassVar[str] = SIDE_EFFECT
    fn: Callable[[], R]

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__qualname__)

    def describe(self) -> str:
        return f"side_effect({self.name})"

    __repr__ = describe


@attrs.frozen(repr=False)
class Group(Command[R]):
    """Commands run in parallel: ``all`` waits for every one, ``any`` for the first to finish.

    Each leaf gets its own step number, in argument order (depth first), when the
    group is yielded; completions are recorded in the order they happen.
    """

    kind: ClassVar[str] = GROUP
    mode: str
    commands: tuple[Command[Any], ...]

    def __attrs_post_init__(self) -> None:
        for c in self.commands:
            if not isinstance(c, Command):
                raise InvalidCommandError(f"rk.{self.mode}(...) takes replaykit commands, got {c!r}")
        if self.mode == "any" and not self.commands:
            raise ValueError("rk.any() needs at least one command: with none, nothing could ever finish first")

    def describe(self) -> str:
        return f"{self.mode}({', '.join(c.describe() for c in self.commands)})"

    __repr__ = describe


@attrs.frozen(repr=False)
class ChildWorkflow(Command[R]):
    """Run another workflow as a child, with its own id and history; yields its result."""

    kind: ClassVar[str] = CHILD
    workflow: Workflow[..., R]
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    workflow_id: str | None = None

    @property
    def name(self) -> str:
        return str(self.workflow.name)

    def describe(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"child_workflow {self.name}({', '.join(parts)})"

    __repr__ = describe


@attrs.frozen(repr=False)
class ContinueAsNew(Command[NoReturn]):
    """End this run and start the workflow afresh, same id, new (empty) history."""

    kind: ClassVar[str] = CONTINUE_AS_NEW
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        return f"continue_as_new{self.args!r}"

    __repr__ = describe


def all_of(*commands: Command[Any]) -> Group[list[Any]]:
    """``results = yield rk.all(a(), b(), c())``: run in parallel; a list of results in argument order.

    The first failure (in the order outcomes arrive) is raised at the yield and
    the other commands still running are cancelled.
    """
    return noted(Group("all", commands))


def any_of(*commands: Command[Any]) -> Group[tuple[int, Any]]:
    """``index, value = yield rk.any(a(), b())``: the first to finish wins; the others are cancelled.

    If the first to finish failed, its exception is raised at the yield.
    """
    return noted(Group("any", commands))


# Typed by arity, like temporalio's start_workflow: Python cannot check ``*args`` against the
# workflow's parameters when keyword-only options sit between them and ``**kwargs`` (PEP 612).
# Up to six positional arguments are checked; arguments by keyword are accepted unchecked.
@overload
def child_workflow(workflow: Takes0[R], /, *,
                   workflow_id: str | None = None) -> ChildWorkflow[R]: ...
@overload
def child_workflow(workflow: Takes1[A1, R], a1: A1, /, *,
                   workflow_id: str | None = None) -> ChildWorkflow[R]: ...
@overload
def child_workflow(workflow: Takes2[A1, A2, R], a1: A1, a2: A2, /, *,
                   workflow_id: str | None = None) -> ChildWorkflow[R]: ...
@overload
def child_workflow(workflow: Takes3[A1, A2, A3, R], a1: A1, a2: A2, a3: A3, /, *,
                   workflow_id: str | None = None) -> ChildWorkflow[R]: ...
@overload
def child_workflow(workflow: Takes4[A1, A2, A3, A4, R], a1: A1, a2: A2, a3: A3, a4: A4, /, *,
                   workflow_id: str | None = None) -> ChildWorkflow[R]: ...
@overload
def child_workflow(workflow: Takes5[A1, A2, A3, A4, A5, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, /, *,
                   workflow_id: str | None = None) -> ChildWorkflow[R]: ...
@overload
def child_workflow(workflow: Takes6[A1, A2, A3, A4, A5, A6, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, /, *,
                   workflow_id: str | None = None) -> ChildWorkflow[R]: ...
@overload
def child_workflow(workflow: Workflow[..., R], /, *, workflow_id: str | None = None,
                   **kwargs: Any) -> ChildWorkflow[R]: ...


def child_workflow(workflow: Any, /, *args: Any, workflow_id: str | None = None, **kwargs: Any) -> ChildWorkflow[Any]:
    """``result = yield rk.child_workflow(pipeline_stage, item, workflow_id=...)``.

    The id defaults to ``<parent id>/<step>``, stable across replays.
    """
    from .starting import check_workflow_id
    from .workflow import as_workflow

    if workflow_id is not None:
        check_workflow_id(workflow_id)
    return noted(ChildWorkflow(as_workflow(workflow), args, tuple(kwargs.items()), workflow_id))


def continue_as_new(*args: Any, **kwargs: Any) -> ContinueAsNew:
    """``yield rk.continue_as_new(state)``: restart with these arguments and an empty history."""
    return noted(ContinueAsNew(args, tuple(kwargs.items())))


def sleep(duration: timedelta | float) -> Sleep:
    """Durable timer: ``yield rk.sleep(timedelta(days=1))`` survives restarts."""
    return noted(Sleep(duration))


def sleep_until(when: datetime) -> SleepUntil:
    """Durable timer to an absolute, timezone-aware time."""
    return noted(SleepUntil(when))


def wait_signal(name: str, timeout: timedelta | float | None = None) -> WaitSignal:
    """Wait for a signal; returns its payload, or ``None`` when ``timeout`` passes first."""
    check_text(name, "the signal's name", 'rk.wait_signal("approved")')
    return noted(WaitSignal(name, timeout))


def side_effect(fn: Callable[[], R]) -> SideEffect[R]:
    """``value = yield rk.side_effect(fn)`` runs ``fn`` once, live, and replays its recorded value."""
    if inspect.iscoroutinefunction(fn):
        raise InvalidCommandError(f"rk.side_effect runs a plain function, and {getattr(fn, '__qualname__', fn)!r} "
                                  "is an async def: make it an async def activity (@rk.activity), which the "
                                  "engine awaits")
    return noted(SideEffect(fn))


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
