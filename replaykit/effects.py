"""Carrying out the leaves a workflow waits on, one small method per command kind.

Mixed into :class:`~replaykit.runtime.Engine`; everything here runs on its
driver thread. A starter either answers at once (a due timer, a signal already
in the inbox, a side effect, an inline activity) by returning the outcome, or
arranges for the outcome to arrive later through the driver's inbox or timers
and returns ``None``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import payloads
from .activity import Execution
from .commands import ACTIVITY, CHILD, SIDE_EFFECT, SIGNAL, ActivityCall, ChildWorkflow, SideEffect, WaitSignal
from .errors import ActivityTimeoutError, SerializationError, StoreError, WorkflowConflictError
from .executor import NotStarted, Outcome
from .handle import ended_with, recorded_outcome
from .history import ERROR, OK, TIMEOUT, Event
from .interpreter import Leaf
from .runstate import EngineState
from .starting import start_payload, started_by

if TYPE_CHECKING:
    from collections.abc import Callable

    from .handle import WorkflowHandle
    from .runstate import _Run
    from .store.work import Placement
    from .workflow import Workflow

# (outcome, encoded payload, value for the workflow, signal id to consume)
Answer = tuple[str, tuple[str, str | bytes], Any, int | None]
NULL = (payloads.JSON, "null")


class _WorkflowTimer:
    """A timer of a run, for the engine's heap: fired by calling it. It names the run by id, not by
    its object, so that an evicted run does not stay alive in the heap; one small object per timer
    (a parked run's memory is mostly what it waits on)."""

    __slots__ = ("engine", "workflow_id", "leaf")

    def __init__(self, engine: Effects, workflow_id: str, leaf: Leaf) -> None:
        self.engine, self.workflow_id, self.leaf = engine, workflow_id, leaf

    def __call__(self) -> None:
        self.engine._timer_due(self.workflow_id, self.leaf)

    def alive(self) -> bool:
        return self.engine._timer_alive(self.workflow_id, self.leaf)


def _signal_named(workflow_id: str, name: str) -> Callable[[], str]:
    return lambda: f"payload of signal {name!r} to {workflow_id!r}"


def _default_child_id(run: _Run, step: int) -> str:
    """``<parent id>/<step>``; after the parent continued as new, ``<parent id>#<n>/<step>`` in its
    n-th run, so that each run of the parent has children of its own."""
    if run.generation == 1:
        return f"{run.workflow_id}/{step}"
    return f"{run.workflow_id}#{run.generation}/{step}"


class Effects(EngineState):
    """The per-kind starters and completion handlers of the engine."""

    if TYPE_CHECKING:
        def _post(self, job: Callable[[], None]) -> None: ...
        def _flush(self) -> None: ...
        def _wake(self, workflow_id: str) -> None: ...
        @staticmethod
        def _unsaved_status(run: _Run) -> dict[str, Any]: ...
        def _later(self, action: Callable[[], None], lost: Callable[[StoreError], None] | None = None) -> None: ...
        def _settle(self, run: _Run, leaf: Leaf, answer: Answer, began: float | None = None) -> None: ...
        def _new_handle(self, workflow_id: str) -> WorkflowHandle: ...
        def _create(self, wf: Workflow[Any], workflow_id: str, start_payload: tuple[str, str | bytes],
                    pending: bool = False, placement: Placement | None = None) -> Event | None: ...
        def _open(self, wf: Workflow[Any], workflow_id: str, call: Any, handle: WorkflowHandle,
                  lock_deadline: float) -> None: ...
        def _opened(self, wf: Workflow[Any], workflow_id: str, call: Any, handle: WorkflowHandle,
                    created: Event | None = None) -> None: ...
        def _create_locked(self, wf: Workflow[Any], workflow_id: str, payload: tuple[str, str | bytes], *,
                           pending: bool = False, placement: Placement | None = None,
                           lock: bool = True) -> tuple[bool, Event | None]: ...
        def _unlock(self, workflow_id: str) -> None: ...
        def _abort(self, run: _Run, error: BaseException) -> None: ...

    def _start_leaf(self, run: _Run, leaf: Leaf, more_to_start: bool) -> Answer | None:
        kind = leaf.command.kind
        if kind == ACTIVITY:
            return self._start_activity(run, leaf, more_to_start)
        if kind == SIGNAL:
            return self._start_signal_wait(run, leaf)
        if kind == SIDE_EFFECT:
            effect: SideEffect = leaf.command  # type: ignore[assignment]
            try:
                value = effect.fn()
            except Exception as exc:
                return self._answer(run, leaf, (False, exc))
            return self._answer(run, leaf, (True, value))  # a value it cannot record is the code's error: raised
        if kind == CHILD:
            return self._start_child(run, leaf)
        return self._start_timer(run, leaf)

    def _answered_at(self, run: _Run, leaf: Leaf) -> float | None:
        """When ``leaf``'s answer came, if it is known before the leaf starts (a due timer, a signal in
        the inbox, the wait's own timeout, an ended child); ``None`` if only running it would tell (a
        side effect runs now). A child that exists and runs counts as answered long ago: it is found
        again, so that what cancels its parent cancels it too."""
        kind = leaf.command.kind
        if kind == SIGNAL:
            wait: WaitSignal = leaf.command  # type: ignore[assignment]
            signal = self.store.next_signal(run.workflow_id, wait.signal)
            times = [t for t in (None if signal is None else signal.sent_at, leaf.deadline) if t is not None]
            return min(times) if times else None
        if kind == SIDE_EFFECT:
            return None
        if kind == ACTIVITY:
            limit = leaf.command.activity.schedule_to_close  # type: ignore[attr-defined]
            return None if limit is None else leaf.scheduled + limit
        if kind == CHILD:
            command: ChildWorkflow = leaf.command  # type: ignore[assignment]
            child_id = command.workflow_id or _default_child_id(run, leaf.step)
            info = self.store.info(child_id)
            if info is None:
                return None
            last = ended_with(self.store, child_id) if info.status.is_terminal else None
            return last.at if last is not None else float("-inf")
        return leaf.deadline  # a timer
    # -- timers -------------------------------------------------------------------

    def _start_timer(self, run: _Run, leaf: Leaf) -> Answer | None:
        assert leaf.deadline is not None
        if leaf.deadline <= self._clock.now():
            return OK, NULL, None, None
        self._push_timer(run, leaf)
        return None

    def _push_timer(self, run: _Run, leaf: Leaf) -> None:
        # By id, not by run object: an evicted run must not stay alive in the heap.
        assert leaf.deadline is not None
        timer = _WorkflowTimer(self, run.workflow_id, leaf)
        self._timers.push(leaf.deadline, timer, timer.alive)

    def _timer_alive(self, workflow_id: str, leaf: Leaf) -> bool:
        run = self._runs.get(workflow_id)
        if run is not None:
            return run.machine.outstanding.get(leaf.step) is leaf
        evicted = self._evicted.get(workflow_id)
        return evicted is not None and any(timer is leaf for timer in evicted.timers)

    def _timer_due(self, workflow_id: str, leaf: Leaf) -> None:
        if workflow_id in self._evicted:
            self._wake(workflow_id)  # replayed; its own timers then fire at once
            return
        run = self._runs.get(workflow_id)
        if run is not None:
            self._timer_fired(run, leaf)

    def _still_waiting(self, run: _Run, leaf: Leaf) -> bool:
        """Is ``run`` still driven here and waiting on this very leaf (step and attempt)?"""
        return self._runs.get(run.workflow_id) is run and run.machine.outstanding.get(leaf.step) is leaf

    def _timer_fired(self, run: _Run, leaf: Leaf) -> None:
        """A timer, or a signal wait's timeout, is due."""
        if self._still_waiting(run, leaf):
            outcome = TIMEOUT if leaf.command.kind == SIGNAL else OK
            self._settle(run, leaf, (outcome, NULL, None, None))

    # -- signals ---------------------------------------------------------------------

    def _start_signal_wait(self, run: _Run, leaf: Leaf) -> Answer | None:
        wait: WaitSignal = leaf.command  # type: ignore[assignment]
        signal = self.store.next_signal(run.workflow_id, wait.signal)
        timed_out = leaf.deadline if leaf.deadline is not None and leaf.deadline <= self._clock.now() else None
        if signal is not None and (timed_out is None or signal.sent_at < timed_out):  # not one sent after it timed out
            value = self.store.codec.decode(signal.encoding, signal.payload,
                                            _signal_named(run.workflow_id, signal.name))
            return OK, (signal.encoding, signal.payload), value, signal.id
        if timed_out is not None:
            return TIMEOUT, NULL, None, None
        if leaf.deadline is not None:
            self._push_timer(run, leaf)
        return None

    def _deliver_signals(self, workflow_id: str) -> None:
        """Hand waiting ``wait_signal`` leaves of a run the signals now in its inbox."""
        run = self._runs.get(workflow_id)
        if run is None:
            return
        waits = [leaf for _, leaf in sorted(run.machine.outstanding.items())
                 if leaf.command.kind == SIGNAL and leaf not in run.parked]  # parked waits have not started
        for leaf in waits:
            if not self._still_waiting(run, leaf):
                continue  # answered or cancelled by what the previous signal set off
            wait: WaitSignal = leaf.command  # type: ignore[assignment]
            signal = self.store.next_signal(workflow_id, wait.signal)
            if signal is not None:
                value = self.store.codec.decode(signal.encoding, signal.payload,
                                                _signal_named(workflow_id, signal.name))
                self._settle(run, leaf, (OK, (signal.encoding, signal.payload), value, signal.id))
                if self._runs.get(workflow_id) is not run:
                    return

    # -- activities -----------------------------------------------------------------

    def _start_activity(self, run: _Run, leaf: Leaf, more_to_start: bool) -> Answer | None:
        call: ActivityCall = leaf.command  # type: ignore[assignment]
        activity = call.activity
        limit = activity.schedule_to_close
        if limit is not None and leaf.scheduled + limit <= self._clock.now():  # no attempt could end in time
            error = ActivityTimeoutError("schedule_to_close", activity.name, limit)
            return ERROR, self.store.codec.encode_error(error), error, None
        execution = Execution(run.workflow_id, leaf.step, leaf.attempt, activity.name, self._clock, run.generation)
        executor = self._executor
        if executor.serial or (executor.inline and not self._in_flight and not more_to_start
                               and not activity.has_timeouts):
            return self._answer(run, leaf, self._executor.run_inline(call, execution))
        now = self._clock.now()
        run.executions[leaf.step] = execution
        execution.last_heartbeat = now
        self._in_flight += 1
        self._later(functools.partial(self._submit, call, execution,
                                      functools.partial(self._post_activity_done, run, leaf, execution)),
                    self._submit_lost)
        limits = [("start_to_close", activity.timeout, now),
                  ("schedule_to_close", activity.schedule_to_close, leaf.scheduled),
                  ("heartbeat", activity.heartbeat_timeout, now)]
        for kind, seconds, since in limits:
            if seconds is not None:
                self._timers.push(since + seconds,
                                  functools.partial(self._activity_overdue, run, leaf, execution, kind, seconds),
                                  functools.partial(self._still_waiting, run, leaf))
        return None

    def _submit(self, call: ActivityCall, execution: Execution, done: Callable[[Outcome], None]) -> None:
        if not self._closed:  # the engine stopped meanwhile: the activity runs when the run is resumed
            self._executor.submit(call, execution, done)

    def _submit_lost(self, error: StoreError) -> None:
        """The batch that recorded the activity's start was rolled back: it is never submitted."""
        self._in_flight -= 1

    def _post_activity_done(self, run: _Run, leaf: Leaf, execution: Execution, outcome: Outcome) -> None:
        """Called on an activity thread: hand the outcome to the driver."""
        self._post(functools.partial(self._activity_done, run, leaf, execution, outcome))

    def _activity_done(self, run: _Run, leaf: Leaf, execution: Execution, outcome: Outcome) -> None:
        self._in_flight -= 1
        if run.executions.get(leaf.step) is execution:
            del run.executions[leaf.step]
        if not outcome[0] and isinstance(outcome[1], NotStarted):  # a worker that may have lost the run
            if self._runs.get(run.workflow_id) is run:
                self._abort(run, outcome[1])
            return
        if self._still_waiting(run, leaf) and not execution.cancelled:
            try:
                answer = self._answer(run, leaf, outcome)
            except BaseException as exc:  # a result it cannot record (SerializationError): nothing is recorded
                self._abort(run, exc)
                return
            self._settle(run, leaf, answer, execution.started or None)

    def _activity_overdue(self, run: _Run, leaf: Leaf, execution: Execution, kind: str,
                          seconds: float) -> None:
        if not self._still_waiting(run, leaf) or execution.cancelled:
            return
        if kind == "heartbeat":
            quiet_since = execution.last_heartbeat
            if self._clock.now() < quiet_since + seconds:  # it did beat: check again later
                self._timers.push(quiet_since + seconds,
                                  functools.partial(self._activity_overdue, run, leaf, execution, kind, seconds),
                                  functools.partial(self._still_waiting, run, leaf))
                return
        execution.cancelled = True  # cooperative: rk.heartbeat() raises Cancelled in the activity
        error = ActivityTimeoutError(kind, execution.activity, seconds)
        self._settle(run, leaf, (ERROR, self.store.codec.encode_error(error), error, None),
                     execution.started or None)  # never begun (queued past its deadline): the step's yield

    def _answer(self, run: _Run, leaf: Leaf, outcome: Outcome) -> Answer:
        """Encode an activity or side effect outcome for recording."""
        ok, value = outcome
        if ok:
            try:
                return OK, self.store.codec.encode(value, None), value, None
            except SerializationError:  # again, to say where the value came from
                where = f"result of {leaf.command.describe()} (step {leaf.step} of {run.workflow_id!r})"
                self.store.codec.encode(value, where)
                raise
        encoded = self.store.codec.encode_error(value)  # the workflow gets what a replay gets: the recorded copy
        return ERROR, encoded, self.store.codec.decode_error(*encoded), None

    # -- child workflows ---------------------------------------------------------------

    def _start_child(self, run: _Run, leaf: Leaf) -> Answer | None:
        command: ChildWorkflow = leaf.command  # type: ignore[assignment]
        child_id = command.workflow_id or _default_child_id(run, leaf.step)
        payload = start_payload(self.store.codec, command.workflow, command.args, dict(command.kwargs),
                                parent=(run.workflow_id, leaf.step))
        placement = self._child_placement(run)
        locked, created = self._create_locked(command.workflow, child_id, payload, placement=placement,
                                              lock=placement is None)  # a queued child: whoever claims it locks
        if locked and created is not None:
            self._children[child_id] = (run, leaf)
            self._opened(command.workflow, child_id, None, self._new_handle(child_id), created)
            return None
        if locked:
            self._unlock(child_id)  # it existed: opened below like any run that exists (see _lock)
        if created is None:
            conflict = self._not_our_child(run, leaf, command, child_id)
            if conflict is not None:  # recorded as the leaf's outcome: the parent replays the same
                return ERROR, self.store.codec.encode_error(conflict), conflict, None
        self._children[child_id] = (run, leaf)
        answer = self._child_answer(child_id)
        if answer is not None:
            return answer
        if child_id not in self._runs and placement is None:  # a queued child is claimed by whoever is free
            self._open(command.workflow, child_id, None, self._new_handle(child_id), 0.0)
        return None

    def _child_placement(self, run: _Run) -> Placement | None:
        """Where a child of ``run`` waits to be driven: ``None``, here (a worker queues it)."""
        return None

    def _not_our_child(self, run: _Run, leaf: Leaf, command: ChildWorkflow,
                       child_id: str) -> WorkflowConflictError | None:
        """The run ``child_id`` exists. It is this leaf's child (a parent resumed after starting it
        finds it again) if this parent started it at this step, for this workflow, with these
        arguments; otherwise the parent gets this error and the other run is left alone."""
        info = self.store.info(child_id)
        start = started_by(child_id, "?" if info is None else info.name, next(iter(self.store.events(child_id)), None))
        recorded = start.value(self.store.codec, child_id)
        parent = recorded.get("parent")
        args, kwargs = list(command.args), dict(command.kwargs)
        if start.name == command.workflow.name:
            if recorded.get("continued"):  # its arguments are those of its latest continue_as_new
                if parent is None or parent == [run.workflow_id, leaf.step]:  # (older stores: no parent)
                    return None
            elif parent == [run.workflow_id, leaf.step] and (recorded["args"], recorded["kwargs"]) == (args, kwargs):
                return None
        name = info.name if info is not None else "?"
        owner = f"started by step {parent[1]} of {parent[0]!r}" if parent else "started on its own, not as a child"
        return WorkflowConflictError(
            f"workflow {run.workflow_id!r} (step {leaf.step}) starts child {command.workflow.name!r} with "
            f"args={args!r} kwargs={kwargs!r} under the id {child_id!r}, but that id belongs to another run: "
            f"{name!r} with args={recorded['args']!r} kwargs={recorded['kwargs']!r}, {owner}. "
            f"Run {child_id!r} was left as it is. Give the child a free id: "
            "rk.child_workflow(..., workflow_id=...)."
        )

    def _child_answer(self, child_id: str) -> Answer | None:
        """The child's outcome, if it has ended, as its parent records it."""
        info = self.store.info(child_id)
        if info is None or not info.status.is_terminal:
            return None
        last = ended_with(self.store, child_id)
        if last is None:  # restarted since it was seen ended
            return None
        ok, value = recorded_outcome(self.store.codec, child_id, last)
        if ok:
            return OK, (last.encoding, last.payload), value, None
        return ERROR, self.store.codec.encode_error(value), value, None

    def _child_ended(self, child_id: str) -> None:
        """A child this engine knows of ended: settle its parent's leaf."""
        waiting = self._children.get(child_id)
        if waiting is None:
            return
        run, leaf = waiting
        answer = self._child_answer(child_id)
        if answer is None:
            return
        del self._children[child_id]
        if self._still_waiting(run, leaf):
            self._settle(run, leaf, answer)

    def _record_answer(self, run: _Run, leaf: Leaf, answer: Answer) -> tuple[float, Any]:
        """Record one leaf's outcome: one commit. Returns (time, value) to feed the machine."""
        outcome, encoded, value, signal_id = answer
        at = self._clock.now()
        event = Event(run.next_seq, leaf.step, leaf.command.kind, leaf.command.name, at, outcome, *encoded)
        if run.status_unsaved:  # one commit for the step and the custom status set since the last one
            self.store.record(run.workflow_id, event, consume_signal=signal_id, **self._unsaved_status(run))
        elif signal_id is None:  # confirmed by _advance before the run's next leaf starts
            self.store.send(run.workflow_id, event)
        else:
            self.store.record(run.workflow_id, event, consume_signal=signal_id)
        run.next_seq += 1
        return at, value

