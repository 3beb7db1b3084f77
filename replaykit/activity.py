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
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import attrs

from .commands import ActivityCall

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen
class ActivityInfo:
    """What an activity knows about the step it runs for; see :func:`activity_info`.

    ``idempotency_key`` is ``"<workflow id>:<seq>:<attempt>"``. It is the same on
    every execution of the same step and attempt, including the re-execution
    after a crash, so a side effect keyed on it happens at most once.
    """

    workflow_id: str
    seq: int
    attempt: int
    activity: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.workflow_id}:{self.seq}:{self.attempt}"


# Holds the fields of ActivityInfo, not the object: built only when asked for.
_current: contextvars.ContextVar[tuple[str, int, int, str]] = contextvars.ContextVar("replaykit_activity")


def activity_info() -> ActivityInfo:
    """The :class:`ActivityInfo` of the activity running in this thread or task.

    Raises ``LookupError`` outside an activity (for instance when a test calls
    ``.fn`` directly).
    """
    try:
        return ActivityInfo(*_current.get())
    except LookupError:
        raise LookupError("activity_info() called outside a running activity") from None


@attrs.frozen(repr=False)
class Activity(Generic[F]):
    """A decorated activity: call it to get a command, or ``.fn`` to run the function."""

    fn: F
    name: str
    is_async: bool = attrs.field(init=False, eq=False)

    @is_async.default
    def _is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> ActivityCall:
        return ActivityCall(self, args, tuple(kwargs.items()))

    def __repr__(self) -> str:
        return f"<activity {self.name}>"


@overload
def activity(fn: F, /) -> Activity[F]: ...
@overload
def activity(*, name: str | None = None) -> Callable[[F], Activity[F]]: ...


def activity(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a function (sync or ``async def``) as an activity.

    ``name`` is what histories record (default: the function's ``__qualname__``);
    set it to keep old histories replaying after a rename.
    """

    def wrap(f: F) -> Activity[F]:
        if not callable(f):
            raise TypeError(f"@rk.activity needs a function, got {f!r}")
        return Activity(f, name or f.__qualname__)

    return wrap if fn is None else wrap(fn)
