"""The engine: drives workflow runs, carries out their commands, records outcomes.

One driver thread owns every run's state machine and every history write of
its engine; activities run inline (``activity_threads=0``) or on a thread pool
and report back through the driver's inbox. Timers live in a heap. Signals,
cancellations, pauses and finished children arrive through the store (from
this process or any other) and are noticed by polling its cheap change counter.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from . import control, payloads
from .activity import Execution
from .clock import Clock, FakeClock, SystemClock, monotonic
from .commands import A1, A2, A3, A4, A5, A6, TIMER, R
from .effects import NULL, Answer, Effects
from .errors import (
    Cancelled,
    NonDeterminismError,
    ReplayKitError,
    StoreError,
    TimedOut,
    UnknownWorkflowError,
    WorkflowConflictError,
    WorkflowLockedError,
    WorkflowPausedError,
)
from .executor import Executor
from .handle import WorkflowHandle
from .history import CANCEL, CONTINUED, ERROR, OK, PATCH, RESULT, RULES_VERSION, START, Event, Status
from .interpreter import Continued, Feed, Leaf, Machine, Raised, Returned, Step, Waiting, replay_history
from .replaycheck import check_history
from .restart import fork_run, restart_run
from .store import Store, open_store
from .timers import TimerQueue
from .workflow import Workflow, as_workflow, lookup, register

if TYPE_CHECKING:
    from .workflow import Takes0, Takes1, Takes2, Takes3, Takes4, Takes5, Takes6

log = logging.getLogger("replaykit")

Payload = tuple[str, str | bytes]
_NOTHING: dict[str, Any] = {}
_JOBS_PER_TURN = 256  # then the turn's batch is committed, however many jobs still wait


class _Run:
    """A run this engine drives: its machine and what it is waiting on."""

    __slots__ = ("workflow_id", "workflow", "machine", "handle", "next_seq", "parent", "generation", "executions",
                 "paused", "parked", "custom_status", "status_unsaved", "warned_size")

    def __init__(self, workflow_id: str, workflow: Workflow[Any], machine: Machine, handle: WorkflowHandle,
                 next_seq: int, start: dict[str, Any]) -> None:
        self.workflow_id = workflow_id
        self.workflow = workflow
        self.machine = machine
        self.handle = handle
        self.next_seq = next_seq  # position of the next event in its history
        parent = start.get("parent")  # [parent id, step] of a child workflow
        self.parent: tuple[str, int] | None = None if parent is None else (parent[0], parent[1])
        self.generation: int = start.get("generation", 1)  # 1 + how many times the id continued as new
        self.executions: dict[int, Execution] = {}  # running activities, by step
        self.paused = False
        self.parked: list[Leaf] = []  # leaves not started because the run is paused
        self.custom_status: Any = None
        self.status_unsaved = False  # ctx.set_status changed it; saved with the next event, or on parking
        self.warned_size = False


class Engine(Effects):
    """Runs many workflows in one process against one store.

    >>> import replaykit as rk
    >>> @rk.workflow
    ... def hello(ctx, name):
    ...     yield rk.sleep(0)
    ...     return f"hello {name}"
    ...
    >>> with rk.Engine(rk.MemoryStore()) as engine:
    ...     engine.start(hello, "ada", workflow_id="greet-ada").result(timeout=5)
    'hello ada'

    ``db`` is a path (an SQLite file, created if absent) or a :class:`Store`.
    ``activity_threads`` activities run concurrently; ``0`` runs them inline
    on the driver thread when nothing else runs (what :func:`replaykit.run`
    does: fastest for one workflow). ``poll_interval`` is how often the store is
    checked for signals, cancellations and pauses from other processes.

    ``warn_nondeterminism`` (on by default) makes workflow code that calls the
    wall clock, ``random``, ``uuid`` or does I/O directly emit a
    ``NonDeterminismWarning`` naming the line. It watches live steps with a profile
    hook (a few microseconds of CPU a step, nothing for replayed steps: see
    ``docs/benchmarks.md``); ``warn_nondeterminism=False`` turns it off.
    ``strict_replay`` replays each run's whole history after every step and
    checks the code reaches the same point (tests only: cost grows with length).
    ``history_warning`` logs a warning when a run's history passes that many
    events (loops that never end should ``continue_as_new``).

    ``group_commit`` (default on, with an activity thread pool) lets the steps of
    all runs that progress in one turn of the driver share one commit. Nothing
    outside the engine happens on uncommitted state: activities start, and results
    are reported, only after the commit. The price: an activity that finished
    within the last turn before a crash (well under a millisecond) may run once
    more, as at-least-once allows. Inline activities (``activity_threads=0``, as
    in :func:`replaykit.run`) always commit every step.

    ``max_cached_runs`` bounds how many runs stay in memory: beyond it, a run that
    waits only on timers is evicted (its generator is closed, quietly: ``finally``
    blocks run with the logger silenced and any command they yield ignored) and
    replayed from its history when its timer is due. ``None``: keep all.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Store,
        *,
        durability: str = "crash",
        workflows: Iterable[Any] = (),
        activity_threads: int = 16,
        poll_interval: float = 0.05,
        clock: Clock | None = None,
        executor: Executor | None = None,
        warn_nondeterminism: bool = True,
        strict_replay: bool = False,
        history_warning: int = 10_000,
        group_commit: bool = True,
        max_cached_runs: int | None = None,
    ) -> None:
        self.store: Store = db if isinstance(db, Store) else open_store(db, durability=durability)
        self._own_store = not isinstance(db, Store)
        self._workflows = {w.name: w for w in map(as_workflow, workflows)}
        self._clock = clock or SystemClock()
        self._poll = poll_interval
        self._executor = executor or Executor(activity_threads)
        self._watch = warn_nondeterminism
        self._strict = strict_replay
        self._history_warning = history_warning
        # Inline activities (rk.run) commit every step: a finished activity is never run twice.
        self._group_commit = group_commit and not self._executor.inline
        # External effects held back until the commit, each with what to do instead if the batch is lost.
        self._after_commit: list[tuple[Callable[[], None], Callable[[StoreError], None] | None]] = []
        self._in_flight = 0  # activities submitted and not yet reported back
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._runs: dict[str, _Run] = {}
        self._children: dict[str, tuple[_Run, Leaf]] = {}  # child id -> the parent leaf waiting on it
        self._timers = TimerQueue()
        self._max_cached = max_cached_runs
        self._evicted: dict[str, tuple[Workflow[Any], WorkflowHandle]] = {}
        self._releasing: set[str] = set()  # runs given up, still locked until the commit (see _unlock)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="replaykit-driver", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------

    # Typed by arity (see child_workflow in commands.py): positional arguments are checked against
    # the workflow's parameters, arguments by keyword are not.
    @overload
    def start(self, workflow: Takes0[R], /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes1[A1, R], a1: A1, /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes2[A1, A2, R], a1: A1, a2: A2, /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes3[A1, A2, A3, R], a1: A1, a2: A2, a3: A3, /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes4[A1, A2, A3, A4, R], a1: A1, a2: A2, a3: A3, a4: A4, /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes5[A1, A2, A3, A4, A5, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes6[A1, A2, A3, A4, A5, A6, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Workflow[..., R], /, *,
              workflow_id: str, lock_timeout: float = 0.0, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None,
              **kwargs: Any) -> WorkflowHandle[R]: ...

    def start(self, workflow: Any, /, *args: Any, workflow_id: str, lock_timeout: float = 0.0,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None, **kwargs: Any) -> WorkflowHandle[Any]:
        """Start the run ``workflow_id``, or resume it if it exists; returns once it is recorded.

        A rerun with the same id continues from its history (or returns the
        recorded result). ``lock_timeout`` is how long to wait while another
        live process drives the same id before ``result()`` raises
        :class:`WorkflowLockedError`. ``timeout`` bounds the whole run:
        :class:`TimedOut` is raised at its current yield when it passes.
        ``start_at`` / ``start_delay`` create the run now (status ``pending``)
        and start it later, durably.
        """
        wf = as_workflow(workflow)
        self._workflows.setdefault(wf.name, wf)
        begin = None
        if start_at is not None:
            begin = start_at.timestamp()
        elif start_delay is not None:
            begin = self._clock.now() + _seconds(start_delay)
        start_payload = self._start_payload(wf, args, kwargs, timeout=timeout, start_at=begin)
        # Created here, not on the driver, so that signal() right after start() finds the run.
        self._create(wf, workflow_id, start_payload, pending=begin is not None)
        handle = self._new_handle(workflow_id)
        deadline = monotonic() + lock_timeout
        self._post(lambda: self._open(wf, workflow_id, (args, kwargs), handle, deadline))
        return handle

    def schedule(self, schedule_id: str, workflow: Any, cron: str, *args: Any, start_after: datetime | None = None,
                 **kwargs: Any) -> WorkflowHandle:
        """Start ``workflow`` at every fire time of a cron expression (see :mod:`replaykit.schedule`).

        The schedule runs as the workflow ``schedule:<schedule_id>``; cancel that id to stop it.
        Fires are counted from ``start_after`` (default: now); each starts a child run with id
        ``schedule:<schedule_id>@<fire time>``.
        """
        from .schedule import check_cron, run_schedule

        check_cron(cron)
        wf = as_workflow(workflow)
        self._workflows.setdefault(wf.name, wf)
        register(wf)  # the schedule workflow finds its target by name
        after = start_after.timestamp() if start_after is not None else self._clock.now()
        return self.start(run_schedule, wf.name, cron, list(args), kwargs, after,
                          workflow_id=f"schedule:{schedule_id}")

    def handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle on an existing run, whoever drives it (``result()`` polls the store)."""
        return WorkflowHandle(workflow_id, self.store, self._poll)

    def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Deliver a signal; it waits in the run's inbox until a ``wait_signal(name)`` takes it."""
        control.send_signal(self.store, workflow_id, name, payload, at=self._clock.now())
        self._post(lambda: self._deliver_signals(workflow_id))

    def cancel(self, workflow_id: str, reason: str = "cancelled") -> None:
        """Raise :class:`Cancelled` at the run's current yield (see :func:`replaykit.cancel`).

        If no live process drives the run, this engine does, to deliver it.
        """
        control.cancel(self.store, workflow_id, reason, at=self._clock.now())
        self._drive(workflow_id)

    def pause(self, workflow_id: str) -> None:
        """Stop the run at its next yield, durably, until :meth:`resume`."""
        control.pause(self.store, workflow_id, at=self._clock.now())
        self._post(lambda: self._take_controls(workflow_id))

    def resume(self, workflow_id: str) -> WorkflowHandle:
        """Let a paused run go on; this engine drives it if nobody else does."""
        control.resume(self.store, workflow_id, at=self._clock.now())
        return self._drive(workflow_id)

    def _drive(self, workflow_id: str) -> WorkflowHandle:
        """Apply controls to a run this engine drives, or start driving it (if nobody else does)."""
        handle = self._new_handle(workflow_id)
        info = self.store.info(workflow_id)
        if info is None or info.status.is_terminal:
            handle._finish()
            return handle
        wf = lookup(info.name, self._workflows)
        self._post(lambda: self._take_controls(workflow_id) if workflow_id in self._runs
                   else self._open(wf, workflow_id, None, handle, 0.0))
        return handle

    def restart(self, workflow_id: str, *, from_step: int | None = None) -> WorkflowHandle:
        """Start a failed, cancelled or timed-out run again (see :func:`replaykit.restart`) and drive it."""
        restart_run(self.store, workflow_id, from_step=from_step, now=self._clock.now(), workflows=self._workflows)
        return self._drive(workflow_id)

    def fork(self, workflow_id: str, new_id: str, *, step: int) -> WorkflowHandle:
        """Copy a run into ``new_id`` from ``step`` (see :func:`replaykit.fork`) and drive the copy."""
        fork_run(self.store, workflow_id, new_id, step=step, now=self._clock.now(), workflows=self._workflows)
        return self._drive(new_id)

    def query(self, workflow_id: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Answer a query from the run's replayed state, without advancing it."""
        return control.query(self.store, workflow_id, name, *args, workflows=self._workflows, **kwargs)

    def recover(self) -> list[WorkflowHandle]:
        """Resume every unfinished run in the store that no live process drives
        (``running`` ones now, ``pending`` ones at their start time; not ``paused`` ones).

        Raises :class:`UnknownWorkflowError` (after resuming the others) if a
        run's workflow is not registered here.
        """
        handles, unknown = [], []
        for info in self.store.list(Status.RUNNING) + self.store.list(Status.PENDING):
            if info.workflow_id in self._runs or info.workflow_id in self._evicted:
                continue  # driven here (an evicted run is replayed when its timer is due)
            try:
                wf = lookup(info.name, self._workflows)
            except UnknownWorkflowError:
                unknown.append(info.name)
                continue
            handle = self._new_handle(info.workflow_id)
            self._post(functools.partial(self._open, wf, info.workflow_id, None, handle, 0.0))
            handles.append(handle)
        if unknown:
            lookup(unknown[0], self._workflows)
        return handles

    def run_forever(self, rescan: float = 1.0) -> None:
        """Serve: resume unfinished runs, and keep looking for new ones, until ``close()``."""
        while not self._closed:
            try:
                self.recover()
            except UnknownWorkflowError as exc:
                log.warning("%s", exc)
            time.sleep(rescan)

    def close(self) -> None:
        """Stop driving, at the next step boundary; unfinished runs stay recorded and a later engine
        resumes them.

        No new step starts once ``close()`` is called. An activity that runs on the driver thread
        (inline, ``activity_threads=0``) finishes and is recorded; activities running on the pool are
        abandoned (their results are not recorded, so they run again when the run is resumed).
        Called from another thread, ``close()`` returns once the engine has stopped; called from
        workflow or activity code, the engine stops when the current step ends.
        """
        if self._closed:
            return
        self._closed = True
        self._post(lambda: None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Engine {self.store!r} runs={len(self._runs)}>"

    def _new_handle(self, workflow_id: str) -> WorkflowHandle:
        handle = WorkflowHandle(workflow_id, self.store, self._poll, driven_here=True)
        if isinstance(self._clock, FakeClock):
            handle._on_wait = self._waiting_for_result
        return handle

    def _waiting_for_result(self, delta: int) -> None:
        """With a fake clock, time may skip ahead while somebody waits for a result."""
        assert isinstance(self._clock, FakeClock)
        self._clock.waiting(delta)
        self._post(lambda: None)  # wake the driver to reconsider skipping

    def _call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the driver thread once the engine's clock reaches ``when``."""
        self._post(lambda: self._timers.push(when, callback))

    # -- the driver loop (everything below runs on the driver thread) ----------

    def _post(self, job: Callable[[], None]) -> None:
        self._inbox.put(job)

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
            if (self._runs or self._children) and self.store.changed():
                self._guarded(self._poll_store)
            if isinstance(self._clock, FakeClock) and self._idle():
                self._skip_time(self._clock)
            self._flush()

    def _shut_down(self) -> None:
        """The driver stops: commit what was recorded, then give up every run (and only then)."""
        try:
            self._flush()
        finally:
            self._executor.close()
            for run in list(self._runs.values()):
                for execution in run.executions.values():
                    execution.cancelled = True
                run.machine.discard()
                self.store.unlock(run.workflow_id)
            self._runs.clear()
            for workflow_id in list(self._releasing):
                self.store.unlock(workflow_id)
            self._releasing.clear()
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
        """SQLite rolled the turn's batch back (a full disk, an I/O error): every run driven here may be
        ahead of its recorded history, so stop driving them all; ``result()`` raises ``error``, and a
        rerun (or another engine) replays what was committed. Nothing that waited for the commit happens."""
        log.error("replaykit could not commit; every run of this engine stops: %s", error)
        for run in list(self._runs.values()):
            for execution in run.executions.values():
                execution.cancelled = True
            run.machine.discard()
            del self._runs[run.workflow_id]
            self._unlock(run.workflow_id)
            run.handle._fail(error)
        self._children.clear()
        while self._after_commit:
            actions, self._after_commit = self._after_commit, []
            for _, lost in actions:
                if lost is not None:
                    self._guarded(functools.partial(lost, error))

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
        if isinstance(self._clock, FakeClock):
            wait = 0.0 if self._idle() and self._can_skip(self._clock) else None
        elif deadline is not None:
            wait = max(0.0, deadline - self._clock.now())
        if self._runs or self._children:
            wait = self._poll if wait is None else min(wait, self._poll)
        return wait

    def _guarded(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # a bug in replaykit; keep serving the other runs
            log.exception("replaykit driver job failed")

    def _fire_due_timers(self) -> None:
        while (callback := self._timers.pop_due(self._clock.now())) is not None:
            self._guarded(callback)

    def _poll_store(self) -> None:
        """Something was committed elsewhere: act on the runs it concerns (two queries, not two per run)."""
        with_mail = self.store.inbox()  # ids with unconsumed signals, cancellation requests among them
        paused = {info.workflow_id for info in self.store.list(Status.PAUSED)}
        for workflow_id, run in list(self._runs.items()):
            if run.paused != (workflow_id in paused) or workflow_id in with_mail:
                self._take_controls(workflow_id)
            if workflow_id in with_mail:
                self._deliver_signals(workflow_id)
        for child_id in list(self._children):
            if child_id not in self._runs:
                self._child_ended(child_id)

    # -- time skipping (FakeClock only) -------------------------------------------

    def _idle(self) -> bool:
        """Nothing can progress without time passing: no activity runs, no job waits."""
        return self._in_flight == 0 and self._inbox.empty()

    def _can_skip(self, clock: FakeClock) -> bool:
        limit = clock.skip_limit()
        deadline = self._timers.next_deadline()
        return limit is not None and (clock.target() is not None or (deadline is not None and deadline <= limit))

    def _skip_time(self, clock: FakeClock) -> None:
        """Jump to the next deadline the clock may reach; or finish an explicit sleep."""
        limit = clock.skip_limit()
        if limit is None:
            return
        deadline = self._timers.next_deadline()
        if deadline is not None and deadline <= limit:
            clock.advance_to(deadline)
            self._fire_due_timers()
        elif clock.target() is not None:
            reached = clock.reach_target()
            self._later(reached.set, lambda _: reached.set())  # the sleeper reads the store: after the commit

    # -- opening a run: create, lock, replay ------------------------------------------

    def _start_payload(self, wf: Workflow[Any], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       timeout: timedelta | float | None = None, start_at: float | None = None,
                       parent: tuple[str, int] | None = None, continued: bool = False,
                       generation: int = 1) -> Payload:
        start: dict[str, Any] = {"args": list(args), "kwargs": kwargs, "seed": random.getrandbits(63),
                                 "rules": RULES_VERSION}
        if continued:
            start["continued"] = True
        if generation > 1:
            start["generation"] = generation
        if timeout is not None:
            start["timeout"] = _seconds(timeout)
        if start_at is not None:
            start["start_at"] = start_at
        if parent is not None:
            start["parent"] = list(parent)
        return payloads.encode(start, f"arguments of workflow {wf.name!r}")

    def _create(self, wf: Workflow[Any], workflow_id: str, start_payload: Payload, pending: bool = False) -> bool:
        """Record the start event unless the run exists (an atomic insert: no lock needed); ``False``
        if it existed."""
        start = Event(0, 0, START, wf.name, self._clock.now(), OK, *start_payload)
        return self.store.create(workflow_id, wf.name, start, Status.PENDING if pending else Status.RUNNING)

    def _open(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
              handle: WorkflowHandle, lock_deadline: float) -> None:
        """Lock a run that exists in the store, and replay it (``call``: the arguments a rerun passed)."""
        if workflow_id in self._runs or not self._lock(workflow_id):
            if monotonic() < lock_deadline:
                retry = lambda: self._open(wf, workflow_id, call, handle, lock_deadline)  # noqa: E731
                threading.Timer(self._poll, self._post, (retry,)).start()
                return
            owner = "this engine" if workflow_id in self._runs else (self.store.lock_owner(workflow_id) or "?")
            handle._fail(WorkflowLockedError(
                f"workflow {workflow_id!r} is being driven by another live process or engine ({owner}). "
                "It continues there; wait for it with engine.handle(id).result(), or stop that process: "
                "its lock is released the moment it exits, and a rerun resumes from the last recorded step."
            ))
            return
        try:
            self._open_locked(wf, workflow_id, call, handle)
        except BaseException as exc:
            run = self._runs.pop(workflow_id, None)
            if run is not None:
                run.machine.discard()
            self._unlock(workflow_id)
            handle._fail(exc)

    def _lock(self, workflow_id: str) -> bool:
        """Take the run's lock; if the holder vanished between our try and our asking who it is, try again."""
        if workflow_id in self._releasing:  # still ours: its release waits for the commit
            self._releasing.discard(workflow_id)
            return True
        return self.store.try_lock(workflow_id) or (
            self.store.lock_owner(workflow_id) is None and self.store.try_lock(workflow_id))

    def _open_locked(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
                     handle: WorkflowHandle) -> None:
        info = self.store.info(workflow_id)
        if info is None:
            raise ReplayKitError(f"workflow {workflow_id!r} vanished from the store")
        if info.name != wf.name:
            raise WorkflowConflictError(
                f"workflow id {workflow_id!r} belongs to a run of workflow {info.name!r}, not {wf.name!r}. "
                "Use another id for the new run."
            )
        events: Iterator[Event] = self.store.events(workflow_id)
        start = next(events)
        recorded = start.value()
        args, kwargs = tuple(recorded["args"]), recorded["kwargs"]
        if call is not None and (call[0], call[1]) != (args, kwargs) and not recorded.get("continued"):
            raise WorkflowConflictError(
                f"workflow {workflow_id!r} was started with args={args!r} kwargs={kwargs!r}; this call "
                f"passes args={call[0]!r} kwargs={call[1]!r}. A rerun must pass the same arguments "
                "(or use another workflow id)."
            )
        if info.status.is_terminal:
            self._unlock(workflow_id)
            handle._finish()
            return
        if info.status is Status.PAUSED:
            raise WorkflowPausedError(
                f"workflow {workflow_id!r} is paused; resume it (engine.resume, rk.resume or "
                "`replaykit resume`) to let it go on"
            )
        if info.status is Status.PENDING:
            begin = recorded["start_at"]
            if begin > self._clock.now():
                self._unlock(workflow_id)  # whoever holds the lock when it is due starts it
                self._timers.push(begin, lambda: self._open(wf, workflow_id, None, handle, 0.0))
                return
            self.store.set_status(workflow_id, Status.RUNNING, self._clock.now())
        self._replay(wf, workflow_id, start, recorded, events, handle)

    def _replay(self, wf: Workflow[Any], workflow_id: str, start: Event, recorded: dict[str, Any],
                events: Iterator[Event], handle: WorkflowHandle) -> None:
        """Rebuild the run's machine from its history: one pass, then carry on live."""
        counted = Feed(events)
        try:
            machine, step = replay_history(wf, workflow_id, start, counted, watch=self._watch, recorded=recorded)
        except NonDeterminismError:
            # Replay again, slowly, to explain the divergence side by side (one error, not two chained).
            try:
                check_history(wf, workflow_id, list(self.store.events(workflow_id)))
            except NonDeterminismError as explained:
                raise explained from None
            raise
        run = self._runs[workflow_id] = _Run(workflow_id, wf, machine, handle, counted.count + 1, recorded)
        # run.custom_status stays None: whatever the code set (before its first yield, or during the replay)
        # is saved with the next event.
        if "timeout" in recorded and not counted.timed_out:
            self._timers.push(start.at + recorded["timeout"], functools.partial(self._run_timed_out, run),
                              lambda: self._runs.get(workflow_id) is run)
        if isinstance(step, Waiting):  # leaves replay left outstanding are started again
            step = Waiting(tuple(machine.outstanding.values()))
        self._advance(run, step)
        if counted.count and self._runs.get(workflow_id) is run:
            # Requests that came while nobody drove it (a fresh run's come through the store poll).
            self._take_controls(workflow_id)

    # -- carrying runs forward ----------------------------------------------------------

    def _advance(self, run: _Run, step: Step) -> None:
        """Carry the run forward until it waits on something outside the driver."""
        todo: deque[Leaf] = deque()
        while True:
            if isinstance(step, Returned):
                self._finish(run, OK, payloads.encode(step.value, f"return value of workflow {run.workflow_id!r}"))
                return
            if isinstance(step, Raised):
                self._finish(run, ERROR, payloads.encode_error(step.error), _ending_status(step.error))
                return
            if isinstance(step, Continued):
                self._continue_as_new(run, step)
                return
            self._after_step(run)
            if self._strict:
                self._check_strict(run)
            todo.extend(step.started)
            waiting = run.machine.outstanding
            while todo:  # start leaves until one answers at once (or none does)
                leaf = todo.popleft()
                if waiting.get(leaf.step) is not leaf:
                    continue  # cancelled meanwhile (a sibling won an rk.any)
                if run.paused:
                    run.parked.append(leaf)
                    continue
                if self._closed:  # close() or Ctrl-C: no new step starts; a rerun resumes from here
                    return
                answer = self._start_leaf(run, leaf, bool(todo))
                if answer is not None:
                    break
            else:  # the run waits on something outside the driver
                if run.status_unsaved:  # no event to carry it: save it on its own
                    self.store.set_custom_status(run.workflow_id, self._unsaved_status(run)["custom_status"])
                self._maybe_evict(run)
                return
            at, value = self._record_answer(run, leaf, answer)
            step = run.machine.resolve(leaf.step, answer[0], value, at)

    def _maybe_evict(self, run: _Run) -> None:
        """Over the cache limit, drop a run that only waits on timers; it is replayed when one is due."""
        if self._max_cached is None or len(self._runs) <= self._max_cached:
            return
        if self._runs.get(run.workflow_id) is not run:
            return
        waits = run.machine.outstanding.values()
        if not waits or run.executions or run.paused or any(leaf.command.kind != TIMER for leaf in waits):
            return
        run.machine.discard()  # its timers stay in the heap, by id: the first due wakes it
        del self._runs[run.workflow_id]
        self._unlock(run.workflow_id)
        self._evicted[run.workflow_id] = (run.workflow, run.handle)

    def _wake(self, workflow_id: str) -> None:
        """An evicted run's timer is due: replay it from its history and go on."""
        evicted = self._evicted.pop(workflow_id, None)
        if evicted is not None:
            self._open(evicted[0], workflow_id, None, evicted[1], 0.0)

    def _settle(self, run: _Run, leaf: Leaf, answer: Answer) -> None:
        """Record an outcome that arrived later (activity, timer, signal, child) and go on."""
        try:
            at, value = self._record_answer(run, leaf, answer)
            self._advance(run, run.machine.resolve(leaf.step, answer[0], value, at))
        except BaseException as exc:
            self._abort(run, exc)

    def _after_step(self, run: _Run) -> None:
        """Bookkeeping after the workflow moved: patch markers, cancelled leaves, custom status."""
        machine = run.machine
        if not (machine._new_markers or machine._cancelled or machine.ctx.custom_status != run.custom_status
                or (run.next_seq > self._history_warning and not run.warned_size)):
            return  # the common case, on the hot path
        for change_id in machine.drain_markers():
            self.store.record(run.workflow_id, Event(run.next_seq, 0, PATCH, change_id, self._clock.now(), OK,
                                                     *NULL))
            run.next_seq += 1
        for step in machine.drain_cancelled():
            execution = run.executions.pop(step, None)
            if execution is not None:
                execution.cancelled = True  # cooperative: rk.heartbeat() raises Cancelled
            for child_id, (parent, leaf) in list(self._children.items()):
                if parent is run and leaf.step == step:
                    self._cancel_child(child_id)
        if machine.ctx.custom_status != run.custom_status:
            run.custom_status = machine.ctx.custom_status
            run.status_unsaved = True
        if run.next_seq > self._history_warning and not run.warned_size:
            run.warned_size = True
            log.warning("workflow %r has %d events in its history; consider rk.continue_as_new(...) to keep "
                        "replays fast", run.workflow_id, run.next_seq)

    @staticmethod
    def _unsaved_status(run: _Run) -> dict[str, Any]:
        """``custom_status=...`` for the next ``store.record``, if ``ctx.set_status`` changed it."""
        if not run.status_unsaved:
            return _NOTHING
        run.status_unsaved = False
        return {"custom_status": run.custom_status}

    def _check_strict(self, run: _Run) -> None:
        """Replay the whole history from scratch; it must wait on exactly what the live run waits on."""
        events = self.store.events(run.workflow_id)
        try:
            machine, _ = replay_history(run.workflow, run.workflow_id, next(events), events)
        except NonDeterminismError as exc:
            raise NonDeterminismError(exc.workflow_id, exc.seq, exc.recorded,
                                      f"{exc.now} (strict replay of the same history)", exc.where) from None
        replayed = {s: leaf.command for s, leaf in machine.outstanding.items()}
        machine.discard()
        live = {s: leaf.command for s, leaf in run.machine.outstanding.items()}
        if replayed != live:
            def show(commands: dict[int, Any]) -> str:
                return ", ".join(f"step {s}: {c.describe()}" for s, c in sorted(commands.items())) or "nothing"

            raise NonDeterminismError(run.workflow_id, run.machine.seq, f"live run waits on {show(live)}",
                                      f"{show(replayed)} (strict replay of the same history)", run.machine.where())

    def _finish(self, run: _Run, outcome: str, encoded: Payload, status: Status | None = None) -> None:
        status = status or (Status.COMPLETED if outcome == OK else Status.FAILED)
        for child_id, (parent, _) in list(self._children.items()):  # parent-close policy: cancel them
            if parent is run:
                self._cancel_child(child_id)
        self._after_step(run)
        event = Event(run.next_seq, 0, RESULT, "", self._clock.now(), outcome, *encoded)
        self.store.record(run.workflow_id, event, status=status, **self._unsaved_status(run))
        self._release(run)
        self._later(run.handle._finish, run.handle._fail)
        if run.parent is not None:
            self._post(functools.partial(self._child_ended, run.workflow_id))

    def _continue_as_new(self, run: _Run, step: Continued) -> None:
        self._after_step(run)
        start_payload = self._start_payload(run.workflow, step.args, step.kwargs, continued=True, parent=run.parent,
                                            generation=run.generation + 1)
        result = Event(run.next_seq, 0, RESULT, "", self._clock.now(), CONTINUED,
                       *payloads.encode({"args": list(step.args), "kwargs": step.kwargs}, "continue_as_new"))
        new_start = Event(0, 0, START, run.workflow.name, self._clock.now(), OK, *start_payload)
        self.store.continue_as_new(run.workflow_id, result, new_start)
        run.machine.discard()
        del self._runs[run.workflow_id]
        self._replay(run.workflow, run.workflow_id, new_start, new_start.value(), iter(()), run.handle)

    def _release(self, run: _Run) -> None:
        for execution in run.executions.values():
            execution.cancelled = True
        self._runs.pop(run.workflow_id, None)
        self._unlock(run.workflow_id)

    def _abort(self, run: _Run, error: BaseException) -> None:
        """Stop driving ``run`` without recording anything; ``result()`` raises ``error``."""
        run.machine.discard()
        self._release(run)
        run.handle._fail(error)

    # -- controls: cancel, pause, run timeout ------------------------------------------------

    def _take_controls(self, workflow_id: str) -> None:
        """Apply what other processes (or this one) asked of a run: pause, resume, cancel."""
        run = self._runs.get(workflow_id)
        if run is None:
            return
        info = self.store.info(workflow_id)
        if info is not None and info.status is Status.PAUSED and not run.paused:
            run.paused = True
        elif info is not None and info.status is Status.RUNNING and run.paused:
            run.paused = False
            parked, run.parked = run.parked, []
            self._step_safely(run, Waiting(tuple(parked)))
            if self._runs.get(workflow_id) is not run:
                return
        request = self.store.next_signal(workflow_id, control.CANCEL_REQUEST)
        if request is not None and not run.paused:
            reason = payloads.decode(request.encoding, request.payload)
            self._deliver_cancel(run, Cancelled(reason), request.id)

    def _deliver_cancel(self, run: _Run, error: Cancelled, request_id: int | None) -> None:
        at = self._clock.now()
        event = Event(run.next_seq, 0, CANCEL, type(error).__name__, at, ERROR, *payloads.encode_error(error))
        self.store.record(run.workflow_id, event, consume_signal=request_id)
        run.next_seq += 1
        self._step_safely(run, run.machine.cancel(at, error))

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


def _ending_status(error: BaseException) -> Status:
    if isinstance(error, TimedOut):
        return Status.TIMED_OUT
    if isinstance(error, Cancelled):
        return Status.CANCELLED
    return Status.FAILED


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)

