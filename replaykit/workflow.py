"""``@rk.workflow``: generator functions and ``async def`` coroutines that yield commands.

Types: ``Workflow[P, R]`` takes the parameters ``P`` (after ``ctx``) and ends with
an ``R``. A generator workflow is annotated ``-> rk.Flow[R]``; an ``async def``
workflow is annotated ``-> R``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

import attrs

from .activity import Activity
from .commands import Command, R
from .converters import note_annotations
from .errors import NotAWorkflowError, UnknownWorkflowError
from .text import check_text

if TYPE_CHECKING:
    from .context import Context
    from .retry import RetryPolicy

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)
A1 = TypeVar("A1", contravariant=True)
A2 = TypeVar("A2", contravariant=True)
A3 = TypeVar("A3", contravariant=True)
A4 = TypeVar("A4", contravariant=True)
A5 = TypeVar("A5", contravariant=True)
A6 = TypeVar("A6", contravariant=True)

Flow = Generator[Command[Any], Any, R]
"""The return annotation of a generator workflow that ends with an ``R``: ``-> rk.Flow[str]``.

Python gives every ``yield`` of a generator one type, so ``x = yield cmd`` is
``Any``: annotate what you keep (``receipt: str = yield charge_card(...)``), or
write the workflow as ``async def``, where each ``await`` has its command's type.
"""

# What a workflow function returns when called: a generator or a coroutine that ends with an R.
_Body = Generator[Any, Any, R_co] | Coroutine[Any, Any, R_co]

_registry: dict[str, Workflow[Any]] = {}


@attrs.frozen(repr=False)
class Workflow(Generic[P, R]):
    """A registered workflow taking ``ctx`` and then ``P``, ending with an ``R``.

    Calling it calls the function, giving a generator or coroutine (to step by
    hand in a test).
    """

    fn: Callable[Concatenate[Context, P], _Body[R]]
    name: str
    retry: RetryPolicy | None = None  # the default RetryPolicy of its activities

    def __call__(self, ctx: Context, /, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(ctx, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


# a workflow function's signature, and how many arguments it takes after ctx if each is a plain positional
# parameter without a default (None if not: then only Signature.bind can tell)
_signatures: dict[Any, tuple[inspect.Signature, int | None]] = {}


def check_arguments(wf: Workflow[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a start whose arguments the workflow cannot take (a ``TypeError`` naming what it takes),
    before anything is recorded: otherwise the run would be recorded and fail on its first step."""
    known = _signatures.get(wf.fn)
    if known is None:
        signature = inspect.signature(wf.fn)
        known = _signatures[wf.fn] = (signature, _plain_arity(signature))
    signature, arity = known
    if not kwargs and len(args) == arity:  # what bind would accept, without its 5 µs
        return
    try:
        signature.bind(None, *args, **kwargs)  # None stands for ctx
    except TypeError as exc:
        raise TypeError(f"workflow {wf.name!r} cannot be started with these arguments ({exc}): it takes "
                        f"{signature}") from None


def _plain_arity(signature: inspect.Signature) -> int | None:
    """The number of arguments after ctx, if ctx and each of them is a positional parameter without a default."""
    params = list(signature.parameters.values())
    if params and all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params):
        return len(params) - 1
    return None


def _check(fn: Any) -> None:
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn):
        return
    if isinstance(fn, Activity):
        call = f"{getattr(fn.fn, '__name__', fn.name)}(...)"
        raise NotAWorkflowError(
            f"{fn!r} is an @rk.activity, not a workflow: an activity runs inside a workflow, which yields its "
            f"call (`result = yield {call}`, or `await {call}` in an `async def` workflow). Run a workflow that "
            "calls it, or decorate a generator function with @rk.workflow")
    what = "a plain function" if callable(fn) else f"a {type(fn).__name__}"
    if inspect.isasyncgenfunction(fn):
        what = "an async generator function"
    raise NotAWorkflowError(
        f"{getattr(fn, '__qualname__', fn)!r} is {what}; a workflow must be a generator "
        "function (it uses `yield`) or an `async def` coroutine that yields or awaits replaykit commands"
    )


@overload
def workflow(fn: Callable[Concatenate[Context, P], _Body[R]], /) -> Workflow[P, R]: ...
@overload
def workflow(*, name: str | None = None, retry: RetryPolicy | None = None
             ) -> Callable[[Callable[Concatenate[Context, P], _Body[R]]], Workflow[P, R]]: ...


def workflow(fn: Any = None, /, *, name: str | None = None, retry: RetryPolicy | None = None) -> Any:
    """Mark a generator function or ``async def`` as a workflow and register it by name.

    ``name`` is what histories record (default: the function's ``__qualname__``);
    ``retry`` is the default :class:`RetryPolicy` of the activities it calls.
    """

    if name is not None:
        check_text(name, "@rk.workflow(name=...) is what histories record", 'name="orders.checkout"')

    def wrap(f: Any) -> Workflow[Any]:
        _check(f)
        wf = Workflow(f, name or f.__qualname__, retry)
        _registry[wf.name] = wf
        note_annotations(f)  # the classes its arguments and result are annotated with read back typed
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


_BUILT_IN = {"replaykit.schedule": "replaykit.schedule"}  # workflows replaykit defines: name -> module


def lookup(name: str, extra: dict[str, Workflow[Any]] | None = None) -> Workflow[Any]:
    """Find a workflow by the name a history recorded."""
    if extra and name in extra:
        return extra[name]
    if name in _BUILT_IN and name not in _registry:
        importlib.import_module(_BUILT_IN[name])  # registers it
    if name in _registry:
        return _registry[name]
    known = sorted(set(_registry) | set(extra or ()))
    raise UnknownWorkflowError(
        f"the store holds a run of workflow {name!r}, but no workflow of that name is registered "
        f"in this process (known: {', '.join(known) or 'none'}). Import the module that defines it, "
        "or pass it to Engine(workflows=[...]); from the replaykit command line, name it with -m MODULE."
    )


# Workflows by what they take after ``ctx``: what ``rk.run``, ``Engine.start`` and
# ``rk.child_workflow`` check positional arguments against (see their overloads).
class Takes0(Protocol[R_co]):
    @property
    def fn(self) -> Callable[[Context], _Body[R_co]]: ...


class Takes1(Protocol[A1, R_co]):
    @property
    def fn(self) -> Callable[[Context, A1], _Body[R_co]]: ...


class Takes2(Protocol[A1, A2, R_co]):
    @property
    def fn(self) -> Callable[[Context, A1, A2], _Body[R_co]]: ...


class Takes3(Protocol[A1, A2, A3, R_co]):
    @property
    def fn(self) -> Callable[[Context, A1, A2, A3], _Body[R_co]]: ...


class Takes4(Protocol[A1, A2, A3, A4, R_co]):
    @property
    def fn(self) -> Callable[[Context, A1, A2, A3, A4], _Body[R_co]]: ...


class Takes5(Protocol[A1, A2, A3, A4, A5, R_co]):
    @property
    def fn(self) -> Callable[[Context, A1, A2, A3, A4, A5], _Body[R_co]]: ...


class Takes6(Protocol[A1, A2, A3, A4, A5, A6, R_co]):
    @property
    def fn(self) -> Callable[[Context, A1, A2, A3, A4, A5, A6], _Body[R_co]]: ...
