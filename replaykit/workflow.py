"""``@rk.workflow``: generator functions and ``async def`` coroutines that yield commands."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import attrs

from .errors import NotAWorkflowError, UnknownWorkflowError

F = TypeVar("F", bound=Callable[..., Any])

_registry: dict[str, Workflow[Any]] = {}


@attrs.frozen(repr=False)
class Workflow(Generic[F]):
    """A registered workflow. Calling it calls the function, giving a generator or coroutine."""

    fn: F
    name: str
    retry: Any = None  # the default RetryPolicy of its activities

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


def _check(fn: Any) -> None:
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn):
        return
    what = "a plain function" if callable(fn) else f"a {type(fn).__name__}"
    if inspect.isasyncgenfunction(fn):
        what = "an async generator function"
    raise NotAWorkflowError(
        f"{getattr(fn, '__qualname__', fn)!r} is {what}; a workflow must be a generator "
        "function (it uses `yield`) or an `async def` coroutine that yields or awaits replaykit commands"
    )


@overload
def workflow(fn: F, /) -> Workflow[F]: ...
@overload
def workflow(*, name: str | None = None, retry: Any = None) -> Callable[[F], Workflow[F]]: ...


def workflow(fn: Any = None, /, *, name: str | None = None, retry: Any = None) -> Any:
    """Mark a generator function or ``async def`` as a workflow and register it by name.

    ``name`` is what histories record (default: the function's ``__qualname__``);
    ``retry`` is the default :class:`RetryPolicy` of the activities it calls.
    """

    def wrap(f: F) -> Workflow[F]:
        _check(f)
        wf = Workflow(f, name or f.__qualname__, retry)
        _registry[wf.name] = wf
        return wf

    return wrap if fn is None else wrap(fn)


def register(wf: Workflow[Any]) -> None:
    """Make ``wf`` findable by name (decorated workflows already are)."""
    _registry.setdefault(wf.name, wf)


def as_workflow(obj: Any) -> Workflow[Any]:
    """Accept a ``Workflow`` or an undecorated generator function / coroutine function."""
    if isinstance(obj, Workflow):
        return obj
    _check(obj)
    return Workflow(obj, obj.__qualname__)


def lookup(name: str, extra: dict[str, Workflow[Any]] | None = None) -> Workflow[Any]:
    """Find a workflow by the name a history recorded."""
    if extra and name in extra:
        return extra[name]
    if name in _registry:
        return _registry[name]
    known = sorted(set(_registry) | set(extra or ()))
    raise UnknownWorkflowError(
        f"the store holds a run of workflow {name!r}, but no workflow of that name is registered "
        f"in this process (known: {', '.join(known) or 'none'}). Import the module that defines it, "
        "or pass it to Engine(workflows=[...])."
    )
