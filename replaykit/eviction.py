"""Runs an engine drives without holding them in memory: evicted beyond ``max_cached_runs``
while they wait only on timers, or given up paused; and what wakes them.

Mixed into :class:`~replaykit.runtime.Engine`; everything here runs on its driver thread. An
evicted run keeps nothing alive but its entries in the timer heap (by id): its first timer due,
its run timeout, a control reaching it (``Controls._take_controls``, the store poll) or a second
start replays it from its history. A paused one stays out until its resume wakes it. Either is
marked as this engine's before its lock is given up (``store/keepers.py``): nobody else takes it.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from . import control
from .commands import TIMER
from .errors import StoreError
from .runstate import EngineState, _Evicted

log = logging.getLogger("replaykit")

if TYPE_CHECKING:
    from .handle import WorkflowHandle
    from .runstate import _Run
    from .workflow import Workflow


class Eviction(EngineState):
    """Evicting parked runs, waking them, keeping paused ones out."""

    if TYPE_CHECKING:
        def _opened(self, wf: Workflow[Any], workflow_id: str, call: Any, handle: WorkflowHandle,
                    created: Any = None, *, woken: bool = False, kept: _Evicted | None = None) -> None: ...
        def _lock(self, workflow_id: str) -> bool: ...
        def _post(self, job: Any) -> None: ...
        def _unlock(self, workflow_id: str) -> None: ...
        def _ended_elsewhere(self, workflow_id: str, reason: str, at: float, seen: _Evicted | None) -> None: ...
        def _tell(self, kind: str, workflow_id: str, workflow: str, at: float | None = None,
                  **details: Any) -> None: ...

    def _maybe_evict(self, run: _Run) -> None:
        """A run parked: with a cache limit, consider evicting it at the end of the driver's turn
        (not now: controls that opened it, a cancel or a pause, are applied first)."""
        if self._max_cached is not None and len(self._runs) > self._max_cached:
            self._parked.add(run.workflow_id)

    def _evict_parked(self) -> None:
        """Over the cache limit, drop runs that only wait on timers; each is replayed when one is due."""
        parked, self._parked = self._parked, set()
        for workflow_id in parked:
            run = self._runs.get(workflow_id)
            if run is None or self._max_cached is None or len(self._runs) <= self._max_cached:
                continue
            waits = run.machine.outstanding.values()
            if not waits or run.executions or run.paused or any(leaf.command.kind != TIMER for leaf in waits):
                continue
            if not self._set_aside(workflow_id, "it stays in memory"):
                continue
            run.machine.discard()  # its timers stay in the heap, by id: the first due wakes it
            del self._runs[workflow_id]
            self._unlock(workflow_id)
            self._evicted[workflow_id] = _Evicted(run.workflow, run.handle, tuple(waits), run.started_at)
            run.handle._follow()  # its end may come from elsewhere (a terminate): result() watches the store

    def _set_aside(self, workflow_id: str, otherwise: str) -> bool:
        """Mark a run this engine is about to unlock as still its own (store/keepers.py): other engines
        and processes refuse it while this engine lives. ``False`` (and ``otherwise`` logged: what
        follows) if the store could not record the mark."""
        try:
            self.store.keep(workflow_id, self._keeper)
        except StoreError as exc:
            log.warning("replaykit could not mark workflow %r as this engine's (%s); %s", workflow_id, exc, otherwise)
            return False
        self._marked.add(workflow_id)
        return True

    def _wake(self, workflow_id: str) -> None:
        """An evicted run's timer or timeout is due, or a control reached it: replay it from its history
        and go on (if it was paused meanwhile, it stays out: ``_keep_paused``). If its lock is busy (another
        process holds it for a moment, to read that this engine keeps it) or the store fails, the run
        waits, evicted, and is tried again after a poll interval, until it is this engine's again, has
        ended elsewhere, or another live engine keeps it (if this engine lost its keeper lock)."""
        evicted = self._evicted.get(workflow_id)
        if evicted is None or workflow_id in self._runs or workflow_id in self._retrying:
            return  # a retry is already on its way
        try:
            locked = self._lock(workflow_id)
        except StoreError as exc:
            log.warning("replaykit could not take back workflow %r, which it keeps (%s); it tries again",
                        workflow_id, exc)
            locked = False
        if locked:
            del self._evicted[workflow_id]
            self._opened(evicted.workflow, workflow_id, None, evicted.handle, woken=True, kept=evicted)
        elif self._kept_elsewhere(workflow_id):
            del self._evicted[workflow_id]  # its handle watches the store (see _evict_parked, _keep_paused)
            self._marked.discard(workflow_id)
            self._paused_here.discard(workflow_id)
        else:
            self._retry_wake_later(workflow_id)

    def _retry_wake_later(self, workflow_id: str) -> None:
        self._retrying.add(workflow_id)
        retry = threading.Timer(self._poll, self._post, (functools.partial(self._retry_wake, workflow_id),))
        retry.daemon = True  # a retry posted after the engine closed is dropped anyway
        retry.start()

    def _kept_after_all(self, workflow_id: str, evicted: _Evicted) -> bool:
        """A kept run woken and locked (its mark cleared) could not be opened: the store failed reading
        it. It stays this engine's, as when its lock could not be taken: marked again, its lock given up
        after the commit, and woken again after a poll interval. ``False`` if it could not be marked."""
        if workflow_id in self._runs or workflow_id in self._evicted:
            return False
        if not self._set_aside(workflow_id, "it is given up"):
            return False
        self._evicted[workflow_id] = evicted
        self._unlock(workflow_id)
        self._retry_wake_later(workflow_id)
        return True

    def _retry_wake(self, workflow_id: str) -> None:
        self._retrying.discard(workflow_id)
        self._wake(workflow_id)

    def _kept_elsewhere(self, workflow_id: str) -> bool:
        """Does another live engine keep the run (one that took it up after this engine lost its keeper
        lock)? Then it is that engine's, and this one stops trying to take it back."""
        try:
            keeper = self.store.keeper_of(workflow_id)
        except StoreError:
            return False
        return keeper is not None and keeper != self._keeper

    def _ended_if_asked(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> bool:
        """A paused run this engine keeps, woken and locked: if it was asked to terminate (it is not
        replayed for that), end it here, as ``rk.terminate`` ends a run nobody keeps."""
        from .terminating import end_locked

        request = self.store.next_signal(workflow_id, control.TERMINATE_REQUEST)
        if request is None:
            return False
        reason, at = self.store.codec.decode(request.encoding, request.payload, "terminate reason"), self._clock.now()
        end_locked(self.store, workflow_id, reason, at)
        self._unlock(workflow_id)
        self._ended_elsewhere(workflow_id, reason, at, _Evicted(wf, handle))  # told as engine.terminate tells it
        return True

    def _keep_paused(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> None:
        """A run this engine drives is paused while it is not in memory (evicted, or paused as it
        continued as new): it stays out, and the store poll wakes it when it is resumed (or asked
        to end). Held paused in memory instead, a fleet-wide pause would hold every run and lock."""
        handle._follow()
        self._set_aside(workflow_id, "another process may take it up when it is resumed")
        self._evicted[workflow_id] = _Evicted(wf, handle)
        if workflow_id not in self._paused_here:
            self._paused_here.add(workflow_id)
            self._tell("run_paused", workflow_id, wf.name)
