"""``@rk.activity``: functions with real side effects, run live once and recorded.

Calling a decorated activity does not run it; it returns an
:class:`~replaykit.commands.ActivityCall` for the workflow to yield. The plain
function stays reachable as ``.fn`` for unit tests::

    >>> import replaykit as rk
    >>> @rk.activity
    ... def add(a: int, b: int) -> int:
    ...     return a + b
    >>> add.fn(2, 3)
    5
    >>> add(2, 3)
    activity add(2, 3)

Types: ``Activity[P, R]`` is called with ``P`` and makes an ``ActivityCall[R]``,
which a workflow's ``await`` (or annotated ``yield``) turns into an ``R``, for
``def f(...) -> R`` and ``async def f(...) -> R`` alike.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, Generic, ParamSpec, Protocol, overload

import attrs

from .clock import optional_seconds
from .commands import ActivityCall, R, noted
from .converters import note_annotations
from .errors import Cancelled
from .retry import RetryPolicy
from .text import check_text

P = ParamSpec("P")


class Execution:
    """One execution of an activity: what it runs for, and how the engine reaches it."""

    __slots__ = ("workflow_id", "step", "attempt", "activity", "cancelled", "clock", "last_heartbeat", "details",
                 "generation", "started")

    def __init__(self, workflow_id: str, step: int, attempt: int, activity: str, clock: Any = None,
                 generation: int = 1) -> None:
        self.generation = generation  # of the workflow id's run: 1, then one more per continue-as-new or restart
        self.workflow_id = workflow_id
        self.step = step
        self.attempt = attempt
        self.activity = activity
        self.cancelled = False  # set by the engine; read by heartbeat() and is_cancelled()
        self.clock = clock  # the engine's: heartbeats are timed on the clock that times them out
        self.last_heartbeat = 0.0  # set when started, for activities with a heartbeat timeout
        self.details: Any = None
        self.started = 0.0  # when it began to run (on the engine's clock); 0.0 until then


@attrs.frozen
class ActivityInfo:
    """What an activity knows about the step it runs for; see :func:`activity_info`.

    ``idempotency_key`` is ``"<workflow id>:<step>:<attempt>"`` (``"<workflow
    id>#<generation>:<step>:<attempt>"`` in the runs after a continue-as-new or a
    restart, whose steps count from 1 again). It is the same on every execution of
    the same step and attempt, including the re-execution after a crash, so a side
    effect keyed on it happens at most once; it is never the same in two runs.
    """

    workflow_id: str
    seq: int
    attempt: int
    activity: str
    generation: int = 1

    @property
    def idempotency_key(self) -> str:
        run = self.workflow_id if self.generation == 1 else f"{self.workflow_id}#{self.generation}"
        return f"{run}:{self.seq}:{self.attempt}"


_current: contextvars.ContextVar[Execution] = contextvars.ContextVar("replaykit_activity")


def _execution(what: str) -> Execution:
    try:
        return _current.get()
    except LookupError:
        raise LookupError(f"{what} called outside a running activity (or in a thread the activity started "
                          "itself, which does not carry its context: use asyncio.to_thread, or "
                          "contextvars.copy_context().run, to call it there)") from None


def activity_info() -> ActivityInfo:
    """The :class:`ActivityInfo` of the activity running in this thread or task.

    Raises ``LookupError`` outside an activity (for instance when a test calls
    ``.fn`` directly).
    """
    e = _execution("activity_info()")
    return ActivityInfo(e.workflow_id, e.step, e.attempt, e.activity, e.generation)


def heartbeat(details: Any = None) -> None:
    """Tell the engine a long activity is alive; raises :class:`Cancelled` if its result is no longer wanted.

    Call it regularly from activities with a ``heartbeat_timeout``, and from any
    long activity that should stop early when its workflow is cancelled or its
    ``rk.any`` race is lost.
    """
    e = _execution("heartbeat()")
    e.last_heartbeat = e.clock.now() if e.clock is not None else time.time()
    e.details = details
    if e.cancelled:
        raise Cancelled(f"activity {e.activity!r} (step {e.step} of {e.workflow_id!r}) was cancelled")


def is_cancelled() -> bool:
    """Inside an activity: has the engine stopped wanting its result? (Check it, or call heartbeat().)"""
    return _execution("is_cancelled()").cancelled


@attrs.frozen(repr=False)
class Activity(Generic[P, R]):
    """A decorated activity: call it to get a command, or ``.fn`` to run the function.

    ``.fn`` returns an ``R``, or for an ``async def`` a coroutine of one; type checkers see it as
    returning ``Any`` (one class serves both, and a sync function returning ``Any`` must stay sync).
    """

    fn: Callable[P, Any]
    name: str
    retry: RetryPolicy | None = attrs.field(default=None)
    timeout: float | None = attrs.field(default=None, converter=optional_seconds)
    schedule_to_close: float | None = attrs.field(default=None, converter=optional_seconds)
    heartbeat_timeout: float | None = attrs.field(default=None, converter=optional_seconds)
    is_async: bool = attrs.field(init=False, eq=False)
    has_timeouts: bool = attrs.field(init=False, eq=False)

    @retry.validator
    def _retry(self, _: attrs.Attribute[RetryPolicy | None], value: RetryPolicy | None) -> None:
        if value is not None and not isinstance(value, RetryPolicy):
            raise TypeError(f"activity {self.name!r}: retry= takes an rk.RetryPolicy "
                            f"(retry=rk.RetryPolicy(max_attempts=3)), not {value!r}")

    @is_async.default
    def _is_async(self) -> bool:  # (a sync function returning a coroutine is awaited too: executor._call)
        return inspect.iscoroutinefunction(self.fn)

    @has_timeouts.default
    def _has_timeouts(self) -> bool:
        return self.timeout is not None or self.schedule_to_close is not None or self.heartbeat_timeout is not None

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> ActivityCall[R]:  # `self=` is the function's
        return noted(ActivityCall(self, args, tuple(kwargs.items()) if kwargs else ()))

    def __repr__(self) -> str:
        return f"<activity {self.name}>"


class _Decorator(Protocol):
    """``@rk.activity(...)`` with options: a decorator for sync and ``async def`` functions."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Activity[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Activity[P, R]: ...


@overload
def activity(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Activity[P, R]: ...
@overload
def activity(fn: Callable[P, R], /) -> Activity[P, R]: ...
@overload
def activity(*, name: str | None = None, retry: RetryPolicy | None = None,
             timeout: timedelta | float | None = None, schedule_to_close: timedelta | float | None = None,
             heartbeat_timeout: timedelta | float | None = None) -> _Decorator: ...


def activity(fn: Any = None, /, *, name: str | None = None, retry: RetryPolicy | None = None,
             timeout: timedelta | float | None = None, schedule_to_close: timedelta | float | None = None,
             heartbeat_timeout: timedelta | float | None = None) -> Any:
    """Mark a function (sync or ``async def``) as an activity.

    ``name`` is what histories record (default: the function's ``__qualname__``);
    set it to keep old histories replaying after a rename. ``retry`` is a
    :class:`RetryPolicy` (default: the workflow's, else no retries).
    ``timeout`` bounds each attempt (start to close), ``schedule_to_close`` all
    attempts together, ``heartbeat_timeout`` the time between ``rk.heartbeat()``
    calls; an overrun raises :class:`ActivityTimeoutError` at the yield (after
    retries, if the policy allows them).
    """

    if name is not None:
        check_text(name, "@rk.activity(name=...) is what histories record", 'name="charge-card"')

    def wrap(f: Callable[..., Any]) -> Activity[..., Any]:
        if not callable(f):
            raise TypeError(f"@rk.activity needs a function, got {f!r}")
        note_annotations(f)  # the classes its arguments and result are annotated with read back typed
        return Activity(f, name or f.__qualname__, retry, timeout, schedule_to_close, heartbeat_timeout)

    return wrap if fn is None else wrap(fn)
