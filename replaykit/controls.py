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
    from .runstate import _Run


class Controls(EngineState):
    """Applying pause, resume and cancellation requests, and run timeouts."""

    if TYPE_CHECKING:
        def _advance(self, run: _Run, step: Step) -> None: ...
        def _abort(self, run: _Run, error: BaseException) -> None: ...
        def _tell(self, kind: str, workflow_id: str, workflow: str, at: float | None = None,
                  **details: Any) -> None: ...
        def _finish(self, run: _Run, outcome: str, encoded: tuple[str, str | bytes], status: Status | None = None,
                    error: BaseException | None = None, consume_signal: int | None = None) -> None: ...

    def _take_controls(self, workflow_id: str) -> None:
        """Apply what other processes (or this one) asked of a run: terminate, pause, resume, cancel."""
        run = self._runs.get(workflow_id)
        if run is None:
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
        at = self._clock.now()
        event = Event(run.next_seq, 0, CANCEL, type(error).__name__, at, ERROR, *self.store.codec.encode_error(error))
        self.store.record(run.workflow_id, event, consume_signal=request_id)
        run.next_seq += 1
        self._step_safely(run, run.machine.cancel(at, error))

    def _terminate(self, run: _Run, error: Terminated, request_id: int) -> None:
        """End the run as it stands: it takes no further step. Its generator is closed as when an engine
        drops a run (``finally`` blocks run with ``ctx.is_replaying`` true; nothing they yield runs)."""
        self._finish(run, ERROR, self.store.codec.encode_error(error), Status.CANCELLED, error,
                     consume_signal=request_id)
        control.drop_requests(self.store, run.workflow_id, control.TERMINATE_REQUEST)  # other calls' too
        run.machine.discard()

    def _run_timed_out(self, run: _Run) -> None:
        if self._runs.get(run.workflow_id) is run:
            self._deliver_cancel(run, TimedOut(f"workflow {run.workflow_id!r} ran past its timeout"), None)

    def _cancel_child(self, child_id: str) -> None:
        self._children.pop(child_id, None)
        info = self.store.info(child_id)
        if info is not None and not info.status.is_terminal:
            control.cancel(self.store, child_id, "parent cancelled or closed", at=self._clock.now())
            self._take_controls(child_id)

    def _step_safely(self, run: _Run, step: Step) -> None:
        try:
            self._advance(run, step)
        except BaseException as exc:
            self._abort(run, exc)
