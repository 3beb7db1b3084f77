"""The engine: drives workflow runs, carries out their commands, records outcomes.

One driver thread owns every run's state machine and every history write of
its engine; activities run inline (``activity_threads=0``) or on a thread pool
and report back through the driver's inbox. Timers live in a heap. Signals,
cancellations, pauses and finished children arrive through the store (from
this process or any other) and are noticed by polling its cheap change counter.

This module holds the :class:`Engine`'s constructor and public API; its parts live
in ``driver.py`` (the driver loop, group commit), ``lifecycle.py`` (opening,
advancing, ending runs), ``controls.py`` (pause, resume, cancel, timeouts) and
``effects.py`` (one starter per command kind), working on ``runstate.py``'s runs.
Time skipping (tests) is the clock's: ``testing/timeskip.py``.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from . import control
from .clock import Clock, SkippingClock, SystemClock, instant, monotonic, seconds
from .commands import A1, A2, A3, A4, A5, A6, R
from .controls import Controls
from .driver import Driver
from .effects import Effects
from .errors import EngineClosedError, StoreError, Terminated, UnknownWorkflowError
from .eviction import Eviction
from .executor import Executor
from .handle import WorkflowHandle
from .history import Status
from .interpreter import Leaf
from .lifecycle import Lifecycle, Payload
from .runstate import _Evicted, _Run
from .starting import check_same_stored_run, check_workflow_id, start_payload
from .store import Store
from .store.base import Secrets
from .store.keepers import new_keeper
from .store.open import store_for
from .timers import TimerQueue
from .workflow import Workflow, as_workflow, check_arguments, lookup, register

if TYPE_CHECKING:
    from .hooks import HookEvent, Hooks
    from .retention import Retention
    from .workflow import Takes0, Takes1, Takes2, Takes3, Takes4, Takes5, Takes6

log = logging.getLogger("replaykit")


class Engine(Controls, Lifecycle, Eviction, Driver, Effects):
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
    replayed from its history when its timer or its timeout is due, or a cancel,
    terminate or resume reaches it (docs/durability.md, "Memory"). An evicted run stays
    this engine's: other engines and processes leave it while this one lives. The
    default, 1000, is what Temporal's Python workers cache; ``None`` keeps all. Each
    run kept holds a lock, and every lock an engine holds slows the others it takes.

    ``retention`` (a timedelta or seconds; ``None``: keep every history) deletes the
    histories of runs that ended longer ago than that, from the engine's start and then
    every ``retention_interval`` seconds, on a thread of its own, as
    :func:`replaykit.prune` does (never a run that has not ended; families kept whole).
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
        max_cached_runs: int | None = 1000,
        secret: Secrets = None,
        pickle: str = "signed",
        retention: timedelta | float | None = None,
        retention_interval: float = 3600.0,
    ) -> None:
        self.store: Store = store_for(db, durability=durability, secret=secret, pickle=pickle)
        self._own_store = not isinstance(db, Store)
        self._workflows = {w.name: w for w in map(as_workflow, workflows)}
        self._clock = clock or SystemClock()
        # A clock that skips ahead while the driver is idle (the testing tools' FakeClock), if it is one.
        self._skipping = self._clock if isinstance(self._clock, SkippingClock) else None
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
        self._evicted: dict[str, _Evicted] = {}
        self._keeper = new_keeper()
        self._marked: set[str] = set()  # runs this engine marked as kept and has not taken back
        self._retrying: set[str] = set()  # evicted runs whose wake waits for their lock (Eviction._wake)
        self._timeouts: dict[str, float] = {}
        self._parked: set[str] = set()  # runs that parked this turn: candidates for eviction
        self._paused_here: set[str] = set()  # runs seen paused (run.paused): those a poll checks for a resume
        self._releasing: set[str] = set()  # runs given up, still locked until the commit (see _unlock)
        self._unmarking: set[str] = set()  # given up, this engine's mark back on them: cleared next turn
        self._continuing: dict[str, WorkflowHandle] = {}  # runs whose next generation opens next turn (handles)
        self._closed = False
        self._hooks: Hooks | None = None  # made by the first engine.on()
        self._retention: Retention | None = None
        if retention is not None:
            from .retention import Retention  # loaded only by engines that prune

            own = not isinstance(db, Store)  # then the prune thread reads through a store of its own
            pruned = store_for(db, durability=durability, secret=secret, pickle=pickle) if own else self.store
            self._retention = Retention(pruned, retention, retention_interval, own_store=own)
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
        check_workflow_id(workflow_id)
        wf = as_workflow(workflow)
        self._workflows.setdefault(wf.name, wf)
        begin = None
        if start_at is not None:
            begin = instant(start_at, "start_at")
        elif start_delay is not None:
            begin = self._clock.now() + seconds(start_delay)
        check_arguments(wf, args, kwargs)
        payload = start_payload(self.store.codec, wf, args, kwargs, start_at=begin,
                                timeout=None if timeout is None else seconds(timeout, "a run's timeout"))
        handle = self._new_handle(workflow_id)
        deadline = monotonic() + lock_timeout
        if self._closed:
            raise EngineClosedError(f"{self!r} is closed: it starts no run. Start {workflow_id!r} with an open engine.")
        if not (self._group_commit and self.store.batched_starts):  # no batch to join: the caller records it
            if self._create(wf, workflow_id, payload, begin is not None) is not None:
                if begin is not None:  # nothing to open before it is due (and no lock in a cancel's way)
                    self._post(lambda: self._start_when_due(wf, workflow_id, handle, begin))
                else:
                    self._post(lambda: self._open(wf, workflow_id, None, handle, deadline))
                return handle
        elif self._created_by_driver(wf, workflow_id, payload, begin, handle, deadline):
            return handle  # and opened, in the same batch
        info = self.store.info(workflow_id)
        if info is not None and info.queue is not None:  # started for workers: they drive it
            check_same_stored_run(self.store, workflow_id, wf, args, kwargs)
            return WorkflowHandle(workflow_id, self.store, self._poll)
        self._post(lambda: self._open(wf, workflow_id, (args, kwargs), handle, deadline))
        return handle

    def _created_by_driver(self, wf: Workflow[Any], workflow_id: str, payload: Payload, begin: float | None,
                           handle: WorkflowHandle, lock_deadline: float) -> bool:
        """Record a run's start in the driver's next commit, open it there, and return once that
        commit is done (``False``: the run existed already). Its start joins the batch of the steps of
        other runs, instead of a transaction of its own racing the driver's for SQLite's write lock
        (the busy wait cost milliseconds at the 99th percentile). A signal sent after this returns
        finds the run, and comes after the run's first step started (its first step is in the same
        commit). Without group commit, the caller records the start instead (``start``): there is no
        batch to join."""
        answer: list[Any] = []  # [created] once committed, or [the error]
        done = threading.Lock()  # held until the answer is in: a latch, lighter than an Event (no Condition)
        done.acquire()

        def settle(result: Any) -> None:
            if not answer:  # said once: a bug's error (job, below) may come before the commit's answer
                answer.append(result)
                done.release()

        def create() -> bool:
            try:
                locked, created = self._create_locked(wf, workflow_id, payload, pending=begin is not None,
                                                      lock=begin is None)
            except BaseException as exc:  # noqa: BLE001 - the caller of start() gets it
                settle(exc)
                raise
            self._later(lambda: settle(created is not None), settle)
            if locked and created is not None:
                self._opened(wf, workflow_id, None, handle, created)
            else:
                if locked:
                    self._unlock(workflow_id)
                if created is not None and begin is not None:
                    self._start_when_due(wf, workflow_id, handle, begin)
                elif created is not None:
                    self._open(wf, workflow_id, None, handle, lock_deadline)
            return created is not None

        if threading.current_thread() is self._thread:  # a start from code the driver runs: no waiting on itself
            return create()

        def job() -> None:
            try:
                create()
            except Exception as exc:
                if not answer:  # not said to the caller yet (a bug): say it, or start() waits for ever
                    settle(exc)
                elif answer[0] is not exc:
                    log.exception("replaykit: opening a run started here failed")

        self._post(job)
        while not done.acquire(timeout=0.5):  # the driver may stop (close(), a lost store) before it takes the job
            if not self._thread.is_alive():
                raise EngineClosedError(f"{self!r} closed before it recorded the start of {workflow_id!r}; nothing "
                                        "was started. Start it with an open engine.")
        if isinstance(answer[0], BaseException):
            raise answer[0]
        return bool(answer[0])

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
        after = instant(start_after, "start_after") if start_after is not None else self._clock.now()
        return self.start(run_schedule, wf.name, cron, list(args), kwargs, after,
                          workflow_id=f"schedule:{schedule_id}")

    def on(self, event: str, callback: Callable[[HookEvent], object]) -> Callable[[], None]:
        """Call ``callback(rk.HookEvent)`` each time ``event`` happens to a run this engine drives
        (``"*"``: every event); returns a function that unsubscribes it. The events, and when they
        are told (once each, after they are committed, never on replay): ``docs/hooks.md``."""
        if self._hooks is None:
            from .hooks import Hooks

            self._hooks = Hooks()
        return self._hooks.on(event, callback)

    def subscribe(self, subscriber: object) -> Callable[[], None]:
        """Subscribe each method of ``subscriber`` named after a lifecycle event (``run_completed``,
        ``step_failed``...: each takes the ``rk.HookEvent``), as :meth:`on` does; returns a function
        that unsubscribes them all."""
        from .hooks import subscribe

        return subscribe(self, subscriber)

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

    def terminate(self, workflow_id: str, reason: str = "terminated", *, wait: float = 30.0) -> None:
        """End the run now, without running more of its steps (see :func:`replaykit.terminate`)."""
        from .terminating import request, wait_ended

        at = self._clock.now()
        on_driver = threading.current_thread() is self._thread  # an inline activity's call: never wait here
        evicted = self._evicted.get(workflow_id)  # read here (one atomic get): the poll may wake it meanwhile
        if request(self.store, workflow_id, reason, at, self._keeper):
            self._post(lambda: self._ended_elsewhere(workflow_id, reason, at, evicted))
        elif on_driver:
            self._take_controls(workflow_id)  # held here: ended now; held elsewhere: by its holder's next poll
        else:
            self._post(lambda: self._take_controls(workflow_id))  # if this engine holds it: now, not at a poll
            wait_ended(self.store, workflow_id, reason, at, wait, self._keeper)
            self._post(lambda: self._ended_elsewhere(workflow_id, reason, at, evicted))

    def _ended_elsewhere(self, workflow_id: str, reason: str, at: float, seen: _Evicted | None) -> None:
        """A run this engine evicted (``seen`` by the caller) was terminated without being replayed (under
        its lock, by this call or by ``Eviction._ended_if_asked``): its handle and the hooks learn it now,
        not at its timer; once, if the store poll woke it meanwhile and found it ended."""
        evicted = self._evicted.pop(workflow_id, None) or seen
        self._marked.discard(workflow_id)  # its mark, if any, went with its lock's last taker
        if evicted is not None and not evicted.handle._end_told:  # the poll's take-up may have told it
            evicted.handle._end_told = True
            self._paused_here.discard(workflow_id)
            self._tell("run_cancelled", workflow_id, evicted.workflow.name, at, error=Terminated(reason))
            evicted.handle._finish()

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
        info = self.store.info(workflow_id)
        if info is not None and info.queue is not None:  # workers drive it: follow it
            return WorkflowHandle(workflow_id, self.store, self._poll)
        handle = self._new_handle(workflow_id)
        if info is None or info.status.is_terminal:
            handle._finish()
            return handle
        wf = lookup(info.name, self._workflows)
        self._post(lambda: self._control_or_reopen(wf, workflow_id, handle))
        return handle

    def _control_or_reopen(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> None:
        if workflow_id in self._runs:  # driven here under its first handle: this one follows the store
            handle._follow()
            self._take_controls(workflow_id)
        else:
            self._reopen(wf, workflow_id, handle)

    def _reopen(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> None:
        """Drive a run this engine does not hold in memory (if it evicted it, its first handle follows
        once it is replayed: see ``_replay``)."""
        self._open(wf, workflow_id, None, handle, 0.0)

    def restart(self, workflow_id: str, *, from_step: int | None = None) -> WorkflowHandle:
        """Start a failed, cancelled or timed-out run again (see :func:`replaykit.restart`) and drive it."""
        from .restarting import restart_run  # what a plain run never needs, loaded when asked

        restart_run(self.store, workflow_id, from_step=from_step, now=self._clock.now(), workflows=self._workflows)
        return self._drive(workflow_id)

    def fork(self, workflow_id: str, new_id: str, *, step: int) -> WorkflowHandle:
        """Copy a run into ``new_id`` from ``step`` (see :func:`replaykit.fork`) and drive the copy."""
        from .restarting import fork_run

        fork_run(self.store, workflow_id, new_id, step=step, now=self._clock.now(), workflows=self._workflows)
        return self._drive(new_id)

    def query(self, workflow_id: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Answer a query from the run's replayed state, without advancing it."""
        return control.query(self.store, workflow_id, name, *args, workflows=self._workflows, **kwargs)

    def recover(self) -> list[WorkflowHandle]:
        """Resume every unfinished run in the store that no live process drives
        (``running`` ones now, ``pending`` ones at their start time; not ``paused`` ones, nor
        runs started for workers through a queue: workers drive those).

        Raises :class:`UnknownWorkflowError` (after resuming the others) if a
        run's workflow is not registered here.
        """
        handles, unknown = [], []
        for info in self.store.list(Status.RUNNING) + self.store.list(Status.PENDING):
            evicted = self._evicted.get(info.workflow_id)
            if evicted is not None and evicted.started_at not in (None, info.created_at):
                evicted = None  # evicted here, then ended and restarted elsewhere: a run nobody drives
            if info.workflow_id in self._runs or evicted is not None or info.queue is not None:
                continue  # driven here (an evicted run is replayed when its timer is due), or by workers
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
        if self._skipping is not None:
            handle._on_wait = self._waiting_for_result
        return handle

    def _waiting_for_result(self, delta: int) -> None:
        """With a fake clock, time may skip ahead while somebody waits for a result."""
        assert self._skipping is not None
        self._skipping.waiting(delta)
        self._post(lambda: None)  # wake the driver to reconsider skipping

    def _call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the driver thread once the engine's clock reaches ``when``."""
        self._post(lambda: self._timers.push(when, callback))
