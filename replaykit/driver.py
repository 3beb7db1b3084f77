"""The driver thread: its loop, group commit, and noticing what other processes wrote.

Mixed into :class:`~replaykit.runtime.Engine`. One thread takes jobs from the
engine's inbox (posted by the public API, activity threads and timers), fires
due timers, polls the store's change counter, and commits the turn's writes as
one batch (group commit); what would let the outside see them (activity starts,
results, released locks) waits for that commit (``_later``). With a clock that
skips (tests), the idle driver lets it jump to the next deadline.
"""

from __future__ import annotations

import functools
import logging
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import control
from .errors import StoreError, WorkflowNotFoundError
from .runstate import EngineState

if TYPE_CHECKING:
    from .clock import SkippingClock
    from .runstate import _Run

log = logging.getLogger("replaykit")

_JOBS_PER_TURN = 256  # then the turn's batch is committed, however many jobs still wait


class Driver(EngineState):
    """The driver thread's loop and group commit (everything here runs on the driver thread)."""

    if TYPE_CHECKING:
        def _take_controls(self, workflow_id: str) -> None: ...
        def _wake(self, workflow_id: str) -> None: ...
        def _deliver_signals(self, workflow_id: str) -> None: ...
        def _child_ended(self, child_id: str) -> None: ...
        def _evict_parked(self) -> None: ...
        def _abort(self, run: _Run, error: BaseException) -> None: ...

    def _post(self, job: Callable[[], None]) -> None:
        self._inbox.put(job)

    def _tell(self, kind: str, workflow_id: str, workflow: str, at: float | None = None, **details: Any) -> None:
        """Tell the lifecycle subscribers (``engine.on``) about ``kind`` once it is committed (``at``:
        when it happened, if it is recorded; else now)."""
        hooks = self._hooks
        if hooks is not None and hooks.wants(kind):
            from .hooks import HookEvent

            run = self._runs.get(workflow_id)
            if run is not None:
                details["generation"], details["run_started_at"] = run.generation, run.started_at
            when = self._clock.now() if at is None else at
            self._later(functools.partial(hooks.emit, HookEvent(kind, workflow_id, workflow, when, **details)))

    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            self._closed = True
            self._shut_down()

    def _serve(self) -> None:
        if self._group_commit:
            self.store.batch()
        while not self._closed:
            try:
                job = self._inbox.get(timeout=self._wait_time())
            except queue.Empty:
                job = None
            handled = 0
            while job is not None and not self._closed:
                self._guarded(job)
                handled += 1
                if handled == _JOBS_PER_TURN:  # a busy inbox must not hold the commit back forever
                    break
                try:
                    job = self._inbox.get_nowait()
                except queue.Empty:
                    job = None
            if self._closed:
                break
            self._fire_due_timers()
            if (self._runs or self._children or self._evicted) and self.store.changed():
                self._guarded(self._poll_store)
            if self._skipping is not None and self._idle():
                self._skip_time(self._skipping)
            if self._parked:
                self._evict_parked()
            if self._unmarking:
                self._guarded(self._clear_marks)
            self._flush()

    def _shut_down(self) -> None:
        """The driver stops: commit what was recorded, then give up every run (and only then)."""
        if self._retention is not None:
            self._retention.stop()  # no further prune starts; waited for below, after the commit
        try:
            self._flush()
        finally:
            if self._group_commit:
                self.store.unbatch()
            self._executor.close()
            for run in list(self._runs.values()):
                for execution in run.executions.values():
                    execution.cancelled = True
                run.machine.discard()
                self.store.unlock(run.workflow_id)
                run.handle._follow()  # the run goes on elsewhere, later: result() watches the store
            self._runs.clear()
            for evicted in self._evicted.values():
                evicted.handle._follow()
            self._evicted.clear()
            try:
                self.store.let_go(self._keeper)  # the runs it kept evicted are anyone's now
            except StoreError as exc:  # the store's own close (or this process's end) lets it go
                log.warning("replaykit could not let go of the runs this engine kept: %s", exc)
            self._marked.clear()
            self._retrying.clear()
            for workflow_id in [*self._releasing, *self._continuing, *self._unmarking]:  # a next generation never
                self.store.unlock(workflow_id)  # opened is left for a rerun, or another engine, to resume
            self._releasing.clear()
            self._continuing.clear()
            self._unmarking.clear()
            if self._retention is not None:
                self._retention.join()
            if self._hooks is not None:
                self._hooks.close()  # what was committed is told first
            if self._own_store:
                self.store.close()

    def _flush(self) -> None:
        """Commit the batch, then let out what was waiting for it (activity starts, results)."""
        try:
            self.store.commit()
        except StoreError as exc:
            self._batch_lost(exc)
            return
        while self._after_commit:
            actions, self._after_commit = self._after_commit, []
            for action, _ in actions:
                self._guarded(action)

    def _later(self, action: Callable[[], None], lost: Callable[[StoreError], None] | None = None) -> None:
        """Do ``action`` once what was recorded so far is committed; ``lost`` instead if the batch
        was rolled back (nothing of it recorded)."""
        if self._group_commit:
            self._after_commit.append((action, lost))
        else:
            action()

    def _batch_lost(self, error: StoreError) -> None:
        """The store rolled the turn's batch back (a full disk, an I/O error): every run in memory may be
        ahead of its recorded history, so stop driving them all; ``result()`` raises ``error``, and a
        rerun (or another engine) replays what was committed. Nothing that waited for the commit happens.
        Evicted runs hold nothing in memory: when their timer is due they replay what was committed;
        but those evicted (or kept paused) in this batch lost their mark with it, and are ahead of their
        history too: they stop as well, as do runs that continued as new in it (their next generation's
        start is lost). A run given up here may have had this engine's mark cleared in the batch (taken
        back): the rollback restored it, so it is cleared again before its lock goes; if that commit is lost
        too, the runs stay locked (``_unmarking``) until a later turn commits their marks cleared."""
        log.error("replaykit could not commit; every run of this engine stops: %s", error)
        for run in list(self._runs.values()):
            self._abort(run, error)
        for workflow_id in [w for w in self._evicted if w in self._releasing]:  # set aside in this batch
            evicted = self._evicted.pop(workflow_id)
            self._marked.discard(workflow_id)
            self._paused_here.discard(workflow_id)
            evicted.handle._fail(error)
        continuing, self._continuing = self._continuing, {}  # a next generation whose start was lost: not
        for workflow_id, handle in continuing.items():  # opened; what was committed goes on, in a rerun or elsewhere
            handle._fail(error)
            self._unlock(workflow_id)
        releasing = list(self._releasing)
        for workflow_id in releasing:  # locked during the batch, its release waits below
            self._clear_mark(workflow_id)  # committed just below, before the lock goes
        try:  # committed now: left for the next turn, the batch these writes opened would hold SQLite's write
            self.store.commit()  # lock while the driver waits, idle (no run, no timer), for a job
        except StoreError as exc:  # the marks are back: let go now, the runs would be refused by every engine
            log.warning("replaykit could not clear its marks on the runs it gave up (tried again): %s", exc)
            self._releasing.difference_update(releasing)  # their unlocks, below, wait (_unlock_now)
            self._unmarking.update(releasing)  # for _clear_marks, at the next turn
        self._children.clear()
        while self._after_commit:
            actions, self._after_commit = self._after_commit, []
            for _, lost in actions:
                if lost is not None:
                    self._guarded(functools.partial(lost, error))

    def _clear_mark(self, workflow_id: str) -> None:
        try:
            self.store.keep(workflow_id, None)
        except WorkflowNotFoundError:  # created in the lost batch: there is no row to clear
            pass
        except StoreError as exc:
            log.warning("replaykit could not clear its mark on workflow %r: %s", workflow_id, exc)

    def _clear_marks(self) -> None:
        """Runs given up in a lost batch whose marks could not be cleared (the commit that cleared them was
        lost too): cleared in this turn's batch, and let go once it is committed (if it is lost as well,
        ``_batch_lost`` keeps them again)."""
        unmarking, self._unmarking = self._unmarking, set()
        for workflow_id in unmarking:
            self._unlock(workflow_id)
            self._clear_mark(workflow_id)

    def _unlock(self, workflow_id: str) -> None:
        """Give up driving a run once everything recorded for it is committed: released earlier,
        another process could replay a shorter history and run a completed step again."""
        self._releasing.add(workflow_id)
        unlock = functools.partial(self._unlock_now, workflow_id)
        self._later(unlock, lambda _: unlock())

    def _unlock_now(self, workflow_id: str) -> None:
        if workflow_id in self._releasing:  # not taken back meanwhile (see _lock)
            self._releasing.discard(workflow_id)
            self.store.unlock(workflow_id)

    def _wait_time(self) -> float | None:
        wait = None
        deadline = self._timers.next_deadline()
        if self._skipping is not None:
            wait = 0.0 if self._idle() and self._skipping.can_skip(deadline) else None
        elif deadline is not None:
            wait = max(0.0, deadline - self._clock.now())
        if self._runs or self._children or self._evicted or self._unmarking:
            wait = self._poll if wait is None else min(wait, self._poll)
        return wait

    def _guarded(self, job: Callable[[], None]) -> None:
        try:
            job()
        except StoreError as exc:  # the store unreachable or refusing: said once per job, no traceback
            log.warning("replaykit driver job failed: %s", exc)
        except Exception:  # a bug in replaykit; keep serving the other runs
            log.exception("replaykit driver job failed")

    def _fire_due_timers(self) -> None:
        while (callback := self._timers.pop_due(self._clock.now())) is not None:
            self._guarded(callback)

    def _poll_store(self) -> None:
        """Something was committed elsewhere: act on the runs it concerns (two indexed queries; the
        runs parked meanwhile are not visited, however many there are). An evicted run is woken if it
        was paused, or asked to terminate or cancel (it waits only on timers: a signal can wait)."""
        with_mail = self.store.inbox()  # ids with unconsumed signals, cancellation requests among them
        paused = self.store.paused()
        asked: set[str] | None = None  # evicted runs' ids with mail: which of them hold a request
        ending: set[str] | None = None  # paused ones' ids with mail: which of them are asked to terminate
        for workflow_id in with_mail | paused | self._paused_here:
            run = self._runs.get(workflow_id)
            if run is None:
                evicted = self._evicted.get(workflow_id)
                if evicted is None:
                    self._paused_here.discard(workflow_id)
                elif workflow_id in paused:
                    if workflow_id in with_mail and ending is None:
                        ending = self.store.inbox_of([control.TERMINATE_REQUEST])
                    if workflow_id not in self._paused_here or workflow_id in (ending or ()):
                        self._wake(workflow_id)  # locked and read first: still ours? (kept out, or ended)
                elif workflow_id in self._paused_here:  # resumed
                    self._paused_here.discard(workflow_id)
                    self._wake(workflow_id)
                else:
                    if asked is None:
                        asked = self.store.inbox_of(control.REQUESTS)
                    if workflow_id in asked:
                        self._wake(workflow_id)
                continue
            if run.paused != (workflow_id in paused) or workflow_id in with_mail:
                self._take_controls(workflow_id)
            if workflow_id in with_mail:
                self._deliver_signals(workflow_id)
        for child_id in list(self._children):
            if child_id not in self._runs and child_id not in self._evicted:  # an evicted one ends here, woken
                self._child_ended(child_id)

    # -- time skipping (with a SkippingClock: see replaykit/testing/timeskip.py) ------

    def _idle(self) -> bool:
        """Nothing can progress without time passing: no activity runs, no job waits."""
        return self._in_flight == 0 and self._inbox.empty()

    def _skip_time(self, clock: SkippingClock) -> None:
        """Let the clock jump to the next deadline it may reach, or finish an explicit sleep."""
        clock.skip(self._timers.next_deadline(), self._fire_due_timers,
                   lambda done: self._later(done, lambda _: done()))  # the sleeper reads the store: after the commit
