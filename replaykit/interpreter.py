"""The pure heart: drive one workflow generator or coroutine, live or from history.

:class:`Machine` does no I/O and reads no clock. The runtime feeds it outcomes
(``resolve``, ``cancel``) or recorded events (``replay``); it answers with what
to start next (:class:`Waiting`) or how the workflow ended (:class:`Returned`,
:class:`Raised`, :class:`Continued`). ``replay`` first checks the recorded
event against what the code is waiting on, raising :class:`NonDeterminismError`
on a mismatch.

Every yielded command becomes a tree: a leaf per command, a node per
``rk.all``/``rk.any`` group. Leaves get consecutive step numbers in argument
order when the yield happens; completions may then arrive in any order, each
recorded with its step. A failed activity with a retry policy turns into a
durable backoff timer, then into its next attempt, under the same step.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, NoReturn, TypeVar

import attrs

from . import determinism, guard, payloads
from .commands import ACTIVITY, CONTINUE_AS_NEW, GROUP, TIMER, ActivityCall, Command, Group, per_thread
from .context import Context
from .errors import ActivityTimeoutError, NonDeterminismError
from .history import CANCEL, ERROR, PATCH, TIMEOUT, Event
from .keys import Keyring
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .workflow import Workflow


@attrs.frozen(repr=False)
class Backoff(Command):
    """The durable wait between two attempts of a failed activity (recorded as timer 'retry')."""

    kind: ClassVar[str] = TIMER
    seconds: float
    call: Command  # the activity call to try again afterwards

    @property
    def name(self) -> str:
        return "retry"

    def deadline(self, now: float) -> float:
        return now + self.seconds

    def describe(self) -> str:
        return f"retry backoff of {self.seconds:g}s"

    __repr__ = describe


# Leaf and Waiting are plain slotted classes, not NamedTuples: one of each is built for every step,
# live or replayed, and a NamedTuple's __new__ costs a second Python call. Both are compared by identity.
T = TypeVar("T")


class Leaf:
    """A command to carry out now, for ``step``."""

    __slots__ = ("step", "command", "deadline", "attempt", "scheduled", "node")

    def __init__(self, step: int, command: Command, deadline: float | None, attempt: int, scheduled: float,
                 node: _Node | None = None) -> None:
        self.step = step
        self.command = command
        self.deadline = deadline
        self.attempt = attempt
        self.scheduled = scheduled  # workflow time the step was first yielded
        self.node = node  # its place in an rk.all/rk.any group; None: a lone command, the root of its yield

    def __repr__(self) -> str:
        return f"Leaf(step={self.step}, {self.command.describe()}, attempt={self.attempt})"


class Waiting:
    """The workflow waits; ``started`` are leaves to start now (often one, sometimes none)."""

    __slots__ = ("started",)

    def __init__(self, started: tuple[Leaf, ...]) -> None:
        self.started = started

    def __repr__(self) -> str:
        return f"Waiting({self.started!r})"


class Returned(NamedTuple):
    value: Any


class Raised(NamedTuple):
    error: Exception


class Continued(NamedTuple):
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


Step = Waiting | Returned | Raised | Continued


class _Node:
    """A leaf (``command`` set) or a group (``mode`` set) of the tree of the current yield."""

    __slots__ = ("parent", "index", "command", "leaf", "mode", "children", "results", "remaining")

    def __init__(self, parent: _Node | None, index: int) -> None:
        self.parent = parent
        self.index = index
        self.command: Command | None = None
        self.leaf: Leaf | None = None
        self.mode = ""
        self.children: list[_Node] = []
        self.results: list[Any] = []
        self.remaining = 0


def yield_site(gen: Any) -> str:
    """``file:line`` where a suspended generator/coroutine (or what it delegates to) waits,
    in the user's code (not in replaykit's or asyncio's)."""
    site = None
    while gen is not None:
        frame = getattr(gen, "gi_frame", None) or getattr(gen, "cr_frame", None)
        if frame is None or guard.is_library(frame.f_code.co_filename):
            break
        site = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        gen = getattr(gen, "gi_yieldfrom", None) or getattr(gen, "cr_await", None)
    return site or "<unknown location>"


class Feed:
    """The recorded events still to replay, with one of lookahead; counts what it gave out."""

    __slots__ = ("_events", "_next", "count", "timed_out")

    def __init__(self, events: Iterator[Event]) -> None:
        self._events = events
        self._next = next(events, None)
        self.count = 0
        self.timed_out = False  # a run timeout is among the events given out

    def peek(self) -> Event | None:
        return self._next

    def pop(self) -> Event | None:
        event, self._next = self._next, next(self._events, None)
        if event is not None:
            self.count += 1
            if event.kind == CANCEL and event.name == "TimedOut":
                self.timed_out = True
        return event


_LOCAL = payloads.Codec(Keyring.ephemeral())  # a machine given no codec reads only what this process signed


class Machine:
    """One workflow run as a state machine whose transitions are recorded outcomes."""

    __slots__ = ("ctx", "_watch", "_default_retry", "_gen", "seq", "outstanding", "_cancel_pending",
                 "_patches", "_new_markers", "_cancelled", "feed", "_loop", "_codec", "_context")
    # Containers a parked run rarely fills start as None or (): a parked run keeps only what it waits on.

    def __init__(self, fn: Callable[..., Any], ctx: Context, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                 watch: bool = False, retry: RetryPolicy | None = None, codec: payloads.Codec | None = None) -> None:
        self.ctx = ctx
        self._codec = codec or _LOCAL  # decodes the recorded outcomes: the store's, which checks signatures
        self._watch = watch
        self._default_retry = retry
        self._gen = fn(ctx, *args, **kwargs)
        # An async def workflow steps with a running "loop" that refuses asyncio (see guard.py).
        self._loop = guard.RefusingLoop(ctx.workflow_id) if hasattr(self._gen, "cr_frame") else None
        # ... and in a context of its own, as an asyncio task would: a ContextVar it sets is not another run's
        self._context = contextvars.Context() if self._loop is not None else None
        self.seq = 0  # the last step number handed out
        self.outstanding: dict[int, Leaf] = {}
        self._cancel_pending: BaseException | None = None
        self._patches: dict[str, bool] | None = None
        self._new_markers: tuple[str, ...] = ()
        self._cancelled: tuple[int, ...] = ()
        self.feed: Feed | None = None
        ctx._patching = self

    # -- driving ----------------------------------------------------------------

    def start(self) -> Step:
        return self._advance(self._gen.send, None)

    def resolve(self, step: int, outcome: str, value: Any, at: float) -> Step:
        """Feed the outcome of leaf ``step`` (``value`` is the exception for ``error``), at time ``at``."""
        return self._settle(self.outstanding.pop(step), outcome, value, at)

    def _settle(self, leaf: Leaf, outcome: str, value: Any, at: float) -> Step:
        """Feed the outcome of ``leaf``, already taken out of ``outstanding``."""
        self.ctx._time = at
        node = leaf.node
        if leaf.command.kind == ACTIVITY:
            if outcome != ERROR:
                return self._advance(self._gen.send, value) if node is None else self._complete(node, True, value)
            wait = self._retry_wait(leaf, value, at)
            if wait is not None:
                backoff = Leaf(leaf.step, Backoff(wait, leaf.command), at + wait, leaf.attempt, leaf.scheduled, node)
                self._register(backoff)
                return Waiting((backoff,))
        if isinstance(leaf.command, Backoff):
            retry = Leaf(leaf.step, leaf.command.call, None, leaf.attempt + 1, leaf.scheduled, node)
            self._register(retry)
            return Waiting((retry,))
        ok, result = (False, value) if outcome == ERROR else (True, None if outcome == TIMEOUT else value)
        return self._complete(node, ok, result)

    def cancel(self, at: float, error: BaseException) -> Step:
        """Deliver a cancellation (or run timeout) at the current yield; deferred while shielded."""
        self.ctx._time = at
        if self.ctx._shield_depth > 0:
            self._cancel_pending = error
            return Waiting(())
        self._drop_all()
        return self._advance(self._gen.throw, error)

    def replay(self, event: Event) -> Step:
        """Check ``event`` against what the code waits on, then feed it its recorded outcome."""
        _, step, kind, name, at, outcome, encoding, payload = event
        if kind == CANCEL:
            return self.cancel(at, self._codec.decode_error(encoding, payload, self._named(event)))
        leaf = self.outstanding.pop(step, None)  # a mismatch or an unreadable value ends the replay anyway
        if leaf is None or kind != leaf.command.kind or name != leaf.command.name:
            self._refuse(event, leaf)
        if outcome == ERROR:
            return self._settle(leaf, ERROR, self._codec.decode_error(encoding, payload, self._named(event)), at)
        value = None if outcome == TIMEOUT else self._codec.decode(encoding, payload, self._named(event))
        return self._settle(leaf, outcome, value, at)

    def _named(self, event: Event) -> Callable[[], str]:
        return lambda: f"{event.describe()} of step {event.step} (event {event.seq}) of {self.ctx.workflow_id!r}"

    def check(self, event: Event) -> None:
        """Raise ``NonDeterminismError`` unless ``event`` answers a command the code waits on."""
        leaf = self.outstanding.get(event.step)
        if leaf is None or event.kind != leaf.command.kind or event.name != leaf.command.name:
            self._refuse(event, leaf)

    def _refuse(self, event: Event, leaf: Leaf | None) -> NoReturn:
        """The ``NonDeterminismError`` of ``event``, which does not answer ``leaf`` (of its step)."""
        if event.kind == PATCH:
            now = f"no ctx.patched({event.name!r}) call here (remove a patch only after ctx.deprecate_patch)"
        elif leaf is not None:
            now = leaf.command.describe()
        elif self.outstanding:
            now = ", ".join(f"step {s}: {lf.command.describe()}" for s, lf in sorted(self.outstanding.items()))
        else:
            now = "nothing (the workflow has already ended)"
        raise NonDeterminismError(self.ctx.workflow_id, event.step, event.describe(), now, self.where())

    def drain_markers(self) -> tuple[str, ...]:
        """Patch markers the live code asked for since the last call, to record in order."""
        markers, self._new_markers = self._new_markers, ()
        return markers

    def drain_cancelled(self) -> tuple[int, ...]:
        """Steps no longer wanted since the last call (their activities should be told)."""
        cancelled, self._cancelled = self._cancelled, ()
        return cancelled

    def where(self) -> str:
        return yield_site(self._gen)

    def discard(self) -> None:
        """Drop a suspended workflow quietly.

        Closing a generator runs its ``finally`` blocks; that happens here, with
        the logger silenced, instead of at some random garbage collection.
        """
        self.ctx.is_replaying = True
        try:
            self.in_context(self._gen.close)
        except Exception:  # a finally block that yields or raises: nothing to record
            pass

    def in_context(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the run's own context (an ``async def`` run's: what its code set in a
        ContextVar), as its steps are: its ``finally`` blocks at close, a query handler."""
        if self._context is None:
            return fn(*args, **kwargs)
        return self._context.run(fn, *args, **kwargs)

    # -- internals ------------------------------------------------------------------

    def _patch(self, change_id: str, deprecated: bool) -> bool:
        if self._patches is None:
            self._patches = {}
        elif change_id in self._patches:
            return self._patches[change_id]
        upcoming = self.feed.peek() if self.feed is not None else None
        if upcoming is None:  # live: take the new path and record that we did
            self._new_markers += (change_id,)
            result = True
        elif upcoming.kind == PATCH and upcoming.name == change_id:
            assert self.feed is not None
            self.feed.pop()
            result = True
        else:  # this history passed here before the change
            result = deprecated
        self._patches[change_id] = result
        return result

    def _retry_wait(self, leaf: Leaf, error: BaseException, at: float) -> float | None:
        """Seconds until the next attempt of a failed activity, or ``None`` to let the error through."""
        call = leaf.command
        assert isinstance(call, ActivityCall)
        policy = call.activity.retry or self._default_retry
        if policy is None or (isinstance(error, ActivityTimeoutError) and error.kind == "schedule_to_close"):
            return None
        return policy.next_wait(error, leaf.attempt, leaf.scheduled, at, self.ctx.seed, leaf.step)

    def _register(self, leaf: Leaf) -> None:
        if leaf.node is not None:
            leaf.node.leaf = leaf
        self.outstanding[leaf.step] = leaf

    def _build_node(self, command: Command, parent: _Node | None, index: int, started: list[Leaf]) -> _Node:
        """Number the leaves of a yielded group in argument order and register what they wait on."""
        node = _Node(parent, index)
        if isinstance(command, Group):
            node.mode = command.mode
            node.results = [None] * len(command.commands)
            node.remaining = len(command.commands)
            node.children = [self._build_node(c, node, i, started) for i, c in enumerate(command.commands)]
        else:
            self.seq += 1
            node.command = command
            leaf = Leaf(self.seq, command, command.deadline(self.ctx._time), 1, self.ctx._time, node)
            self._register(leaf)
            started.append(leaf)
        return node

    def _drop(self, node: _Node) -> None:
        """Cancel every leaf still outstanding under ``node`` (in the order of the group's arguments)."""
        dropped: list[int] = []
        under = [node]
        while under:
            node = under.pop()
            if node.leaf is not None and self.outstanding.pop(node.leaf.step, None) is not None:
                dropped.append(node.leaf.step)
            under.extend(reversed(node.children))
        self._cancelled += tuple(dropped)

    def _drop_all(self) -> None:
        self._cancelled += tuple(self.outstanding)
        self.outstanding.clear()

    def _complete(self, node: _Node | None, ok: bool, value: Any) -> Step:
        """A node finished; settle its groups upwards, and resume the workflow when the root does."""
        while node is not None and node.parent is not None:
            group, index = node.parent, node.index
            if group.mode == "all" and ok:
                group.results[index] = value
                group.remaining -= 1
                if group.remaining:
                    return Waiting(())
                value = list(group.results)
            else:  # a failure in `all`, or the first to finish in `any`
                self._drop(group)
                if ok:
                    value = (index, value)
            node = group
        if ok:
            return self._advance(self._gen.send, value)
        return self._advance(self._gen.throw, value)

    def _advance(self, resume: Callable[[Any], Any], arg: Any) -> Step:
        tracking, loop, context = per_thread.making, self._loop, self._context
        made: list[guard.Made]
        while True:
            # Commands made during this step note themselves here (a machine stepped inside
            # another's step, e.g. rk.query from workflow code, puts the outer one's list back).
            outer, tracking.made = tracking.made, (made := [])
            previous = loop.enter() if loop is not None else None
            try:
                if self._watch and not self.ctx.is_replaying:  # live steps only: replaying stays cheap
                    with determinism.watching():
                        command = resume(arg) if context is None else context.run(resume, arg)
                else:
                    command = resume(arg) if context is None else context.run(resume, arg)
            except StopIteration as stop:
                self._check_end(made, stop.value, None)
                return Returned(stop.value)
            except Exception as exc:
                self._check_end(made, None, exc, raised_here=exc is not arg)
                return Raised(exc)
            finally:
                tracking.made = outer
                if loop is not None:
                    loop.leave(previous)
            if ((made and (len(made) > 1 or made[0][0] is not command)) or not isinstance(command, Command)
                    or (loop is not None and loop.error is not None)):
                self._check_step(made, command)
            if self._cancel_pending is not None and self.ctx._shield_depth == 0:
                resume, arg, self._cancel_pending = self._gen.throw, self._cancel_pending, None
                continue
            # Told apart by kind, read once: an isinstance() that fails reads the command's __class__,
            # which for an ActivityCall goes through its __getattr__ (the misuse message), every step.
            kind = command.kind
            if kind == GROUP:
                if not command.commands:  # rk.all() of nothing
                    resume, arg = self._gen.send, []
                    continue
                started: list[Leaf] = []
                self._build_node(command, None, 0, started)
                return Waiting(tuple(started))
            if kind == CONTINUE_AS_NEW:
                return Continued(command.args, dict(command.kwargs))
            seq = self.seq = self.seq + 1  # a lone command: the common case, kept lean
            now = self.ctx._time
            deadline = None if kind == ACTIVITY else command.deadline(now)
            leaf = self.outstanding[seq] = Leaf(seq, command, deadline, 1, now)
            return Waiting((leaf,))

    def _check_step(self, made: list[guard.Made], command: Any) -> None:
        """After a yield: refuse asyncio, what is not a command, and commands dropped unyielded."""
        if self._loop is not None:
            self._loop.check()
        if not isinstance(command, Command):
            raise guard.not_a_command(self.ctx.workflow_id, command, self.where(), self._loop is not None)
        lost = guard.dropped(made, command)
        if lost:
            raise guard.forgotten_yield(self.ctx.workflow_id, lost, f"before its next yield (at {self.where()})")

    def _check_end(self, made: list[guard.Made], value: Any, error: Exception | None, *,
                   raised_here: bool = False) -> None:
        """When the workflow returns ``value`` or raises ``error``: the same refusals, and returning a
        command or misusing one. (An error ``raised_here``, not thrown in at the yield and let through,
        can be the code's mistake rather than the workflow's failure.)"""
        if self._loop is not None:
            self._loop.check(error if raised_here else None)
        if isinstance(value, Command):
            raise guard.returned_command(self.ctx.workflow_id, value, made)
        if error is not None and raised_here and (misuse := guard.misused(self.ctx.workflow_id, error, made)):
            raise misuse from error
        lost = guard.dropped(made, None) if made else []
        if lost:
            then = "before it returned" if error is None else f"before it raised {type(error).__name__}: {error}"
            raise guard.forgotten_yield(self.ctx.workflow_id, lost, then) from error


def new_machine(workflow: Workflow[Any], workflow_id: str, start: Event, *, codec: payloads.Codec,
                watch: bool = False, recorded: dict[str, Any] | None = None) -> Machine:
    """A fresh machine for a run, from its start event (``recorded``: that event's payload, if
    already decoded). Arguments, seed, start time and the workflow's default retry policy all
    come from here, so every replay of the run is built the same way."""
    if recorded is None:
        recorded = codec.decode(start.encoding, start.payload, lambda: f"arguments of {workflow_id!r}")
    ctx = Context(workflow_id, seed=recorded["seed"], start_time=max(start.at, recorded.get("start_at", 0)))
    return Machine(workflow.fn, ctx, tuple(recorded["args"]), recorded["kwargs"], watch=watch,
                   retry=workflow.retry, codec=codec)


def replay_history(workflow: Workflow[Any], workflow_id: str, start: Event, events: Iterator[Event] | Feed, *,
                   codec: payloads.Codec, watch: bool = False, quiet: bool = False,
                   recorded: dict[str, Any] | None = None) -> tuple[Machine, Step]:
    """Build a fresh machine from a start event and feed it the recorded events, in one pass.

    ``ctx.is_replaying`` is true while code runs that an event after it already
    covers; code after the last event runs live. Returns the machine and the
    step it reached: where a live run continues. Leaves started during replay
    that are still outstanding at the end are in ``machine.outstanding``.
    """
    machine = new_machine(workflow, workflow_id, start, codec=codec, watch=watch, recorded=recorded)
    ctx = machine.ctx
    feed = machine.feed = events if isinstance(events, Feed) else Feed(events)
    ctx.is_replaying = quiet or feed.peek() is not None
    step = machine.start()
    while (event := feed.pop()) is not None:
        if not isinstance(step, Waiting):  # it ended: an event after the end refuses itself
            machine.check(event)
        ctx.is_replaying = quiet or feed.peek() is not None
        step = machine.replay(event)
    machine.feed = None
    ctx.is_replaying = quiet
    return machine, step
