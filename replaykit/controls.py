"""Controls of a run driven here: pause, resume, cancel, the run's timeout, cancelling children.

Mixed into :class:`~replaykit.runtime.Engine`; everything here runs on its driver
thread. Requests arrive through the store (from this process or any other, see
:mod:`replaykit.control`) and are applied at the run's current yield.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import control
from .errors import Cancelled, Terminated, TimedOut
from .history import CANCEL, ERROR, Event, Status
from .interpreter import Step, Waiting
from .runstate import EngineState

if TYPE_CHECKING:
    from .interpreter import Leaf
    from .runstate import _Run


class _RunTimeout:
    """A run's timeout in the engine's heap. Like a workflow timer it names the run by id, so that an
    evicted run does not stay alive in the heap: when it is due, an evicted run is woken to take it."""

    __slots__ = ("engine", "workflow_id", "deadline")

    def __init__(self, engine: Controls, workflow_id: str, deadline: float) -> None:
        self.engine, self.workflow_id, self.deadline = engine, workflow_id, deadline

    def __call__(self) -> None:
        self.engine._timeout_due(self.workflow_id, self.deadline)

    def alive(self) -> bool:
        return self.engine._timeout_alive(self.workflow_id, self.deadline)


class Controls(EngineState):
    """Applying pause, resume and cancellation requests, and run timeouts."""

    if TYPE_CHECKING:
        def _advance(self, run: _Run, step: Step) -> None: ...
        def _abort(self, run: _Run, error: BaseException) -> None: ...
        def _tell(self, kind: str, workflow_id: str, workflow: str, at: float | None = None,
                  **details: Any) -> None: ...
        def _finish(self, run: _Run, outcome: str, encoded: tuple[str, str | bytes], status: Status | None = None,
                    error: BaseException | None = None, consume_signal: int | None = None) -> None: ...
        def _wake(self, workflow_id: str) -> None: ...
        def _answered_at(self, run: _Run, leaf: Leaf) -> float | None: ...

    def _take_controls(self, workflow_id: str) -> None:
        """Apply what other processes (or this one) asked of a run: terminate, pause, resume, cancel."""
        run = self._runs.get(workflow_id)
        if run is None:
            if workflow_id in self._evicted:
                self._wake(workflow_id)  # replayed, then its controls are taken (_replay)
            return
        request = self.store.next_signal(workflow_id, control.TERMINATE_REQUEST)
        if request is not None:
            reason = self.store.codec.decode(request.encoding, request.payload, "terminate reason")
            self._terminate(run, Terminated(reason), request.id)
            return
        info = self.store.info(workflow_id)
        if info is not None and info.status is Status.PAUSED and not run.paused:
            run.paused = True
            self._paused_here.add(workflow_id)
            self._tell("run_paused", workflow_id, run.workflow.name)
        elif info is not None and info.status is Status.RUNNING and run.paused:
            run.paused = False
            self._paused_here.discard(workflow_id)
            self._tell("run_resumed", workflow_id, run.workflow.name)
            parked, run.parked = run.parked, ()
            self._step_safely(run, Waiting(parked))
            if self._runs.get(workflow_id) is not run:
                return
        request = self.store.next_signal(workflow_id, control.CANCEL_REQUEST)
        if request is not None and not run.paused:
            reason = self.store.codec.decode(request.encoding, request.payload, "cancel reason")
            self._deliver_cancel(run, Cancelled(reason), request.id)

    def _deliver_cancel(self, run: _Run, error: Cancelled, request_id: int | None) -> None:
        self._step_safely(run, self._record_cancel(run, error, request_id))

    def _record_cancel(self, run: _Run, error: Cancelled, request_id: int | None) -> Step:
        """Record a cancellation (or the run's timeout) and throw it at the current yield: the run's next step."""
        at = self._clock.now()
        event = Event(run.next_seq, 0, CANCEL, type(error).__name__, at, ERROR, *self.store.codec.encode_error(error))
        self.store.record(run.workflow_id, event, consume_signal=request_id)
        run.next_seq += 1
        return run.machine.cancel(at, error)

    def _terminate(self, run: _Run, error: Terminated, request_id: int) -> None:
        """End the run as it stands: it takes no further step. Its generator is closed as when an engine
        drops a run (``finally`` blocks run with ``ctx.is_replaying`` true; nothing they yield runs)."""
        self._finish(run, ERROR, self.store.codec.encode_error(error), Status.CANCELLED, error,
                     consume_signal=request_id)
        control.drop_requests(self.store, run.workflow_id, control.TERMINATE_REQUEST)  # other calls' too
        run.machine.discard()

    # -- the run's timeout -----------------------------------------------------------------

    def _watch_deadline(self, run: _Run) -> None:
        """Put the run's timeout in the heap, once per deadline: a run evicted and woken again keeps
        the entry it had (overdue, it fires at the driver's next look at its timers)."""
        deadline = run.deadline
        if deadline is not None and self._timeouts.get(run.workflow_id) != deadline:
            self._timeouts[run.workflow_id] = deadline
            entry = _RunTimeout(self, run.workflow_id, deadline)
            self._timers.push(deadline, entry, entry.alive)

    def _timeout_alive(self, workflow_id: str, deadline: float) -> bool:
        if self._timeouts.get(workflow_id) != deadline:
            return False  # delivered, or replaced by a later generation's
        run = self._runs.get(workflow_id)
        if (run is not None and run.deadline == deadline) or workflow_id in self._evicted:
            return True
        del self._timeouts[workflow_id]  # the run ended or went elsewhere: its entry leaves the heap now
        return False

    def _timeout_due(self, workflow_id: str, deadline: float) -> None:
        if self._timeouts.get(workflow_id) == deadline:
            del self._timeouts[workflow_id]  # fired: a replay past the deadline delivers it (Lifecycle._carry)
        if workflow_id in self._evicted:
            self._wake(workflow_id)  # replayed past its deadline: it times out at its current yield
            return
        run = self._runs.get(workflow_id)
        if run is not None and run.deadline == deadline:
            self._step_safely(run, self._past_deadline(run))

    def _too_late(self, run: _Run, deadline: float, leaf: Leaf) -> bool:
        """Has the run's deadline passed before ``leaf``'s answer came? Then the leaf does not start. A
        run taken up after its deadline (it crashed, or was evicted) still gets what came before it: a
        timer due earlier, a signal sent earlier, a child that ended earlier."""
        if deadline > self._clock.now():
            return False
        answered = self._answered_at(run, leaf)
        return answered is None or answered >= deadline

    def _past_deadline(self, run: _Run) -> Step | None:
        """The run's deadline came before what it waits on answered: what it gets at its current yield
        is the first of a terminate or cancel asked before the deadline, and its timeout. ``None``: it
        was terminated. Told once: its deadline is cleared."""
        deadline = run.deadline
        assert deadline is not None
        for kind in control.REQUESTS:
            request = self.store.next_signal(run.workflow_id, kind)
            if request is not None and request.sent_at < deadline:
                what = "terminate reason" if kind == control.TERMINATE_REQUEST else "cancel reason"
                reason = self.store.codec.decode(request.encoding, request.payload, what)
                if kind == control.TERMINATE_REQUEST:
                    self._terminate(run, Terminated(reason), request.id)
                    return None
                return self._record_cancel(run, Cancelled(reason), request.id)  # the deadline still holds
        run.deadline = None
        if self._timeouts.get(run.workflow_id) == deadline:
            del self._timeouts[run.workflow_id]
        return self._record_cancel(run, TimedOut(f"workflow {run.workflow_id!r} ran past its timeout"), None)

    def _cancel_child(self, child_id: str) -> None:
        self._children.pop(child_id, None)
        info = self.store.info(child_id)
        if info is not None and not info.status.is_terminal:
            control.cancel(self.store, child_id, "parent cancelled or closed", at=self._clock.now())
            self._take_controls(child_id)

    def _step_safely(self, run: _Run, step: Step | None) -> None:
        if step is None:
            return
        try:
            self._advance(run, step)
        except BaseException as exc:
            self._abort(run, exc)
