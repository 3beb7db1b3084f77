"""Runs an engine drives without holding them in memory: evicted beyond ``max_cached_runs``
while they wait only on timers, or given up paused; and what wakes them.

Mixed into :class:`~replaykit.runtime.Engine`; everything here runs on its driver thread. An
evicted run keeps nothing alive but its entries in the timer heap (by id): its first timer due,
its run timeout, a control reaching it (``Controls._take_controls``, the store poll) or a second
start replays it from its history. A paused one stays out until its resume wakes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .commands import TIMER
from .runstate import EngineState, _Evicted

if TYPE_CHECKING:
    from .handle import WorkflowHandle
    from .runstate import _Run
    from .workflow import Workflow


class Eviction(EngineState):
    """Evicting parked runs, waking them, keeping paused ones out."""

    if TYPE_CHECKING:
        def _open(self, wf: Workflow[Any], workflow_id: str, call: Any, handle: WorkflowHandle,
                  lock_deadline: float, *, woken: bool = False) -> None: ...
        def _unlock(self, workflow_id: str) -> None: ...
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
            run.machine.discard()  # its timers stay in the heap, by id: the first due wakes it
            del self._runs[workflow_id]
            self._unlock(workflow_id)
            self._evicted[workflow_id] = _Evicted(run.workflow, run.handle, tuple(waits), run.started_at)
            run.handle._follow()  # its end may come from elsewhere (a terminate): result() watches the store

    def _wake(self, workflow_id: str) -> None:
        """An evicted run's timer or timeout is due, or a control reached it: replay it from its history
        and go on (if it was paused meanwhile, it stays out: ``_keep_paused``)."""
        evicted = self._evicted.pop(workflow_id, None)
        if evicted is not None:
            self._open(evicted.workflow, workflow_id, None, evicted.handle, 0.0, woken=True)

    def _keep_paused(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> None:
        """A run this engine drives is paused while it is not in memory (evicted, or paused as it
        continued as new): it stays out, and the store poll wakes it when it is resumed (or asked
        to end). Held paused in memory instead, a fleet-wide pause would hold every run and lock."""
        handle._follow()
        self._evicted[workflow_id] = _Evicted(wf, handle)
        if workflow_id not in self._paused_here:
            self._paused_here.add(workflow_id)
            self._tell("run_paused", workflow_id, wf.name)
