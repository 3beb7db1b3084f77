"""The engine inside a worker: it drives the runs its worker claimed, and hands each back when it parks.

A claimed run is opened (replayed) and driven like any run of an :class:`Engine`, with
three differences. It is not pinned: once it waits only on timers, signals or children
(no activity of it runs here), it is handed back to the store, ready again at its next
deadline or when something wakes it, so any worker with room may take it then. Its
children are queued, not driven here. And when it cannot be driven under this code (the
replay check fails, its workflow conflicts), the problem is recorded with the worker's
code version: workers of that version leave it, a new deploy tries it again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .commands import ACTIVITY, SIDE_EFFECT
from .control import CANCEL_REQUEST
from .errors import ReplayKitError, StoreError, WorkflowLockedError
from .executor import NotStarted
from .history import Status
from .runtime import Engine
from .store.work import Placement
from .workflow import lookup

if TYPE_CHECKING:
    from .effects import Answer
    from .handle import WorkflowHandle
    from .interpreter import Leaf
    from .runstate import _Run
    from .store import Store
    from .store.base import Opening
    from .worker import Worker
    from .workflow import Workflow

log = logging.getLogger("replaykit")

_RETRY_AFTER_STORE_ERROR = 1.0  # seconds before a run given up on a store error is ready again


def _nothing() -> None:
    pass


class WorkerEngine(Engine):
    """An :class:`Engine` whose runs come from its worker's claims (see the module's docstring)."""

    def __init__(self, store: Store, worker: Worker, **options: Any) -> None:
        self._worker = worker
        self._claimed: set[str] = set()  # claimed, about to be opened: their lock is already ours
        self._fresh: set[str] = set()  # claimed; then, once opened, those with a cancellation waiting
        self._wake_at: dict[str, float | None] = {}  # when a run handed back is ready again
        self._problems: dict[str, str] = {}  # why a run could not be driven here
        self._ending: set[str] = set()  # runs whose result is being recorded
        super().__init__(store, **options)

    # -- claimed runs in ----------------------------------------------------------------

    def open_claimed(self, workflow_id: str, name: str) -> None:
        """Drive a run the worker claimed (a driver job)."""
        try:
            wf = self._workflows.get(name) or lookup(name, self._workflows)
        except ReplayKitError as exc:
            self._note_problem(workflow_id, exc)
            self._unlock(workflow_id)
            return
        self._claimed.add(workflow_id)
        self._fresh.add(workflow_id)
        self._open(wf, workflow_id, None, self._new_handle(workflow_id), 0.0)

    def _lock(self, workflow_id: str, *, new: bool = False) -> bool:
        if workflow_id in self._claimed:
            self._claimed.discard(workflow_id)
            return True
        return super()._lock(workflow_id, new=new)

    def _open_locked(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
                     handle: WorkflowHandle, *, woken: bool = False) -> None:
        try:
            super()._open_locked(wf, workflow_id, call, handle, woken=woken)
        except BaseException as exc:
            self._note_problem(workflow_id, exc)
            raise

    def _read_opening(self, workflow_id: str) -> Opening:
        """A fresh claim also asks whether a cancellation waits (in the same round trip); one
        requested after this read is noticed by the driver's poll, as for any run it drives."""
        if workflow_id not in self._fresh:
            return super()._read_opening(workflow_id)
        opening = self.store.opening(workflow_id, CANCEL_REQUEST)
        if not opening.signal_waits:
            self._fresh.discard(workflow_id)
        return opening

    def _abort(self, run: _Run, error: BaseException) -> None:
        self._ending.discard(run.workflow_id)  # its end was not recorded (or is lost with its batch)
        self._note_problem(run.workflow_id, error)
        super()._abort(run, error)

    def _note_problem(self, workflow_id: str, error: BaseException) -> None:
        if workflow_id in self._problems or workflow_id in self._wake_at:
            return
        now = self._clock.now()
        if isinstance(error, WorkflowLockedError):  # another worker took it over: nothing to hand back
            return
        if isinstance(error, NotStarted):  # taken over meanwhile (then the hand-back changes nothing), or not
            log.warning("replaykit worker %s: %s (workflow %r); it is handed back, ready at once",
                        self._worker.worker_id, error, workflow_id)
            self._wake_at[workflow_id] = now
            return
        if isinstance(error, StoreError):  # the store, not the code: any worker may try again soon
            self._wake_at[workflow_id] = now + _RETRY_AFTER_STORE_ERROR
            return
        problem = self._problems[workflow_id] = f"{type(error).__name__}: {error}"
        log.error("replaykit worker %s cannot drive workflow %r under code version %s; workers of this version "
                  "leave it, workers of another version will try it: %s",
                  self._worker.worker_id, workflow_id, self._worker.version, problem)
        self._wake_at[workflow_id] = now  # for workers of another code version

    # -- runs handed back ---------------------------------------------------------------

    def _maybe_evict(self, run: _Run) -> None:
        """The run parked: hand it back unless an activity of it runs here."""
        workflow_id = run.workflow_id
        if workflow_id in self._fresh:  # a cancellation was requested while nobody drove it
            self._fresh.discard(workflow_id)
            self._take_controls(workflow_id)
            if self._runs.get(workflow_id) is not run:
                return  # it ended, or was handed back, meanwhile
        if run.executions:
            return
        waits = run.machine.outstanding.values()
        wake: float | None = None
        if self._worker.stopping:  # its next steps were not started here: whoever takes it starts them
            wake = self._clock.now()
        deadlines = [leaf.deadline for leaf in waits if leaf.deadline is not None]
        if run.deadline is not None:
            deadlines.append(run.deadline)
        if deadlines:
            wake = min(deadlines) if wake is None else min(wake, *deadlines)
        self._wake_at[workflow_id] = None if run.paused else wake
        for child_id, (parent, _) in list(self._children.items()):
            if parent is run:
                del self._children[child_id]
        run.machine.discard()
        self._release(run)

    def _keep_paused(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> None:
        """Paused as it continued as new: handed back, its resume makes it ready in the queue again."""
        handle._follow()

    def _finish(self, run: _Run, outcome: str, encoded: tuple[str, str | bytes], status: Status | None = None,
                error: BaseException | None = None, consume_signal: int | None = None) -> None:
        self._ending.add(run.workflow_id)  # its result, once recorded, also hands it back (store: ended)
        super()._finish(run, outcome, encoded, status, error, consume_signal)

    def _unlock(self, workflow_id: str) -> None:
        """Give a claimed run back in the store (in the batch, so with what was recorded), then its lock.
        If the batch is lost, the run is handed back again, ready at once: what was committed replays."""
        if self._worker.holds(workflow_id):
            wake = self._wake_at.pop(workflow_id, None)
            problem = self._problems.pop(workflow_id, None)
            self._fresh.discard(workflow_id)
            if workflow_id in self._ending:  # its recorded end handed it back in the same transaction
                self._ending.discard(workflow_id)
            else:
                self._hand_back(workflow_id, wake, problem)
            self._later(_nothing, lambda _: self._hand_back_again(workflow_id))
        super()._unlock(workflow_id)

    def _hand_back_again(self, workflow_id: str) -> None:
        """The batch that handed the run back was lost (``_batch_lost``, after it committed the marks it
        cleared): handed back again and committed at once, before its lock goes. Left for the next turn,
        this write's batch would hold SQLite's write lock while the driver waits, idle, for a job (the
        worker's own claims and heartbeats, and every other writer, failed with 'database is locked')."""
        self._hand_back(workflow_id, self._clock.now(), None)
        try:
            self.store.commit()
        except StoreError as exc:  # it stays marked as ours until the worker's next heartbeat releases it
            log.warning("replaykit worker %s could not hand back %r: %s", self._worker.worker_id, workflow_id, exc)
            self._worker.hand_back_failed(workflow_id)

    def _hand_back(self, workflow_id: str, wake: float | None, problem: str | None) -> None:
        try:
            self.store.release(workflow_id, self._worker.worker_id, wake, problem, self._worker.version)
        except StoreError as exc:  # it stays marked as ours until the worker's next heartbeat releases it
            log.warning("replaykit worker %s could not hand back %r: %s", self._worker.worker_id, workflow_id, exc)
            self._worker.hand_back_failed(workflow_id)

    def _unlock_now(self, workflow_id: str) -> None:
        if workflow_id in self._releasing:  # forgotten before the lock goes: a claim made after it counts
            self._worker.forget(workflow_id)
        super()._unlock_now(workflow_id)

    def _child_placement(self, run: _Run) -> Placement | None:
        return Placement(self._worker.queue_of(run.workflow_id), parent=run.workflow_id)

    def _start_leaf(self, run: _Run, leaf: Leaf, more_to_start: bool) -> Answer | None:
        if self._worker.stopping:  # start nothing new; the run is handed back when it parks
            return None
        kind = leaf.command.kind
        if kind == SIDE_EFFECT or (kind == ACTIVITY and self._executor.inline):
            gate = self._executor.gate  # code run here, on the driver: the gate a thread would pass, now
            if gate is not None and not gate(run.workflow_id)():
                raise NotStarted("step")  # the run is aborted, as for any error of its step, and handed back
        return super()._start_leaf(run, leaf, more_to_start)

    def _shut_down(self) -> None:
        """Stopping: hand back every run still here (activities still running are abandoned: their
        results are not recorded, and they run again wherever the run goes on)."""
        try:
            now = self._clock.now()
            for run in list(self._runs.values()):
                for execution in run.executions.values():
                    execution.cancelled = True
                run.executions.clear()
                self._wake_at[run.workflow_id] = now
                run.machine.discard()
                self._release(run)
        finally:
            super()._shut_down()
