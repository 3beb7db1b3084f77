"""The engine: drives workflow runs, executes their commands, records outcomes.

One driver thread owns every run's state machine and every write of history;
activities run inline (``activity_threads=0``) or on a thread pool, and report
back through the driver's inbox. Timers live in a heap; signals arrive through
the store's inbox (from this process or any other) and are noticed by polling
the store's cheap change counter while some run waits for one.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import payloads
from .clock import Clock, FakeClock, SystemClock, monotonic
from .commands import ACTIVITY, SIDE_EFFECT, SIGNAL, TIMER, ActivityCall, SideEffect, WaitSignal
from .errors import (
    NonDeterminismError,
    ReplayKitError,
    UnknownWorkflowError,
    WorkflowConflictError,
    WorkflowLockedError,
)
from .executor import Executor, Outcome
from .handle import WorkflowHandle
from .history import ERROR, OK, RESULT, RULES_VERSION, START, TIMEOUT, Event, Status
from .interpreter import Machine, Pending, Raised, Returned, Step, replay_history
from .replaycheck import check_history
from .store import SqliteStore, Store
from .timers import TimerQueue
from .workflow import Workflow, as_workflow, lookup

log = logging.getLogger("replaykit")


class _Run:
    """A run this engine drives: its machine and what it waits on."""

    def __init__(self, workflow_id: str, workflow: Workflow[Any], machine: Machine, handle: WorkflowHandle) -> None:
        self.workflow_id = workflow_id
        self.workflow = workflow
        self.machine = machine
        self.handle = handle
        self.pending: Pending | None = None


class Engine:
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
    on the driver thread (what :func:`replaykit.run` does: fastest for one
    workflow). ``poll_interval`` is how often the store is checked for
    signals sent by other processes while a run waits for one.

    ``warn_nondeterminism`` makes workflow code that calls the wall clock,
    ``random``, ``uuid`` or does I/O directly emit a ``NonDeterminismWarning``
    (it costs a profile hook per step; the test environment turns it on).
    ``strict_replay`` replays each run's whole history after every step and
    checks the code reaches the same point (tests only: cost grows with length).
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
        warn_nondeterminism: bool = False,
        strict_replay: bool = False,
    ) -> None:
        self.store: Store = db if isinstance(db, Store) else SqliteStore(db, durability=durability)
        self._own_store = not isinstance(db, Store)
        self._workflows = {w.name: w for w in map(as_workflow, workflows)}
        self._clock = clock or SystemClock()
        self._poll = poll_interval
        self._executor = executor or Executor(activity_threads)
        self._watch = warn_nondeterminism
        self._strict = strict_replay
        self._in_flight = 0  # activities submitted and not yet reported back
        self._owner = f"pid {os.getpid()} on {socket.gethostname()}"
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._runs: dict[str, _Run] = {}
        self._timers = TimerQueue()
        self._waiting_signal: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="replaykit-driver", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------

    def start(self, workflow: Any, *args: Any, workflow_id: str, lock_timeout: float = 0.0,
              **kwargs: Any) -> WorkflowHandle:
        """Start the run ``workflow_id``, or resume it if it exists; returns at once.

        A rerun with the same id continues from its history (or returns the
        recorded result). ``lock_timeout`` is how long to wait while another
        live process drives the same id before ``result()`` raises
        :class:`WorkflowLockedError`.
        """
        wf = as_workflow(workflow)
        self._workflows.setdefault(wf.name, wf)
        start_payload = self._start_payload(wf, args, kwargs)
        handle = self._new_handle(workflow_id)
        deadline = monotonic() + lock_timeout
        self._post(lambda: self._open(wf, workflow_id, (args, kwargs), start_payload, handle, deadline))
        while not handle._created.wait(0.1):  # so that signal() right after start() finds the run
            if self._closed:
                break
        return handle

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

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the driver thread once the engine's clock reaches ``when``."""
        self._post(lambda: self._timers.push(when, callback))

    def handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle on an existing run, whoever drives it (``result()`` polls the store)."""
        return WorkflowHandle(workflow_id, self.store, self._poll)

    def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Deliver a signal; it waits in the run's inbox until a ``wait_signal(name)`` takes it."""
        send_signal(self.store, workflow_id, name, payload, at=self._clock.now())
        self._post(lambda: self._deliver_signals(workflow_id))

    def recover(self) -> list[WorkflowHandle]:
        """Resume every unfinished run in the store that no live process drives.

        Raises :class:`UnknownWorkflowError` (after resuming the others) if a
        run's workflow is not registered here.
        """
        handles, unknown = [], []
        for info in self.store.list(Status.RUNNING):
            if info.workflow_id in self._runs:
                continue
            try:
                wf = lookup(info.name, self._workflows)
            except UnknownWorkflowError:
                unknown.append(info.name)
                continue
            handle = self._new_handle(info.workflow_id)
            self._post(functools.partial(self._open, wf, info.workflow_id, None, None, handle, 0.0))
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
        """Stop driving. Unfinished runs stay recorded; a later engine resumes them."""
        if self._closed:
            return
        self._closed = True
        self._post(lambda: None)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._executor.close()
        for run in list(self._runs.values()):
            run.machine.discard()
            self.store.unlock(run.workflow_id)
        self._runs.clear()
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver loop (everything below runs on the driver thread) ----------

    def _post(self, job: Callable[[], None]) -> None:
        self._inbox.put(job)

    def _loop(self) -> None:
        while not self._closed:
            try:
                job = self._inbox.get(timeout=self._wait_time())
            except queue.Empty:
                job = None
            while job is not None and not self._closed:
                self._guarded(job)
                try:
                    job = self._inbox.get_nowait()
                except queue.Empty:
                    job = None
            if self._closed:
                return
            self._fire_due_timers()
            if self._waiting_signal and self.store.changed():
                for workflow_id in list(self._waiting_signal):
                    self._guarded(functools.partial(self._deliver_signals, workflow_id))
            if isinstance(self._clock, FakeClock) and self._idle():
                self._skip_time(self._clock)

    def _wait_time(self) -> float | None:
        wait = None
        deadline = self._timers.next_deadline()
        if isinstance(self._clock, FakeClock):
            wait = 0.0 if self._idle() and self._can_skip(self._clock) else None
        elif deadline is not None:
            wait = max(0.0, deadline - self._clock.now())
        if self._waiting_signal:
            wait = self._poll if wait is None else min(wait, self._poll)
        return wait

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
            clock.target_reached()

    def _guarded(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # a bug in replaykit; keep serving the other runs
            log.exception("replaykit driver job failed")

    def _abort(self, run: _Run, error: BaseException) -> None:
        """Stop driving ``run`` without recording anything; ``result()`` raises ``error``."""
        run.machine.discard()
        self._runs.pop(run.workflow_id, None)
        self._waiting_signal.discard(run.workflow_id)
        self.store.unlock(run.workflow_id)
        run.handle._fail(error)

    # -- opening a run: create or replay ----------------------------------------

    def _start_payload(self, wf: Workflow[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) \
            -> tuple[str, str | bytes]:
        start = {"args": list(args), "kwargs": kwargs, "seed": random.getrandbits(63), "rules": RULES_VERSION}
        return payloads.encode(start, f"arguments of workflow {wf.name!r}")

    def _open(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
              start_payload: tuple[str, str | bytes] | None, handle: WorkflowHandle, lock_deadline: float) -> None:
        if not handle._created.is_set():
            try:
                self._create(wf, workflow_id, start_payload)
            except BaseException as exc:
                handle._fail(exc)
                return
            finally:
                handle._created.set()
        if workflow_id in self._runs or not self.store.try_lock(workflow_id, self._owner):
            if monotonic() < lock_deadline:
                retry = lambda: self._open(wf, workflow_id, call, start_payload, handle, lock_deadline)  # noqa: E731
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
            self._open_locked(wf, workflow_id, call, start_payload, handle)
        except BaseException as exc:
            self._runs.pop(workflow_id, None)
            self.store.unlock(workflow_id)
            handle._fail(exc)

    def _create(self, wf: Workflow[Any], workflow_id: str, start_payload: tuple[str, str | bytes] | None) -> None:
        """Record the start event unless the run exists (an atomic insert: no lock needed)."""
        if start_payload is not None and self.store.info(workflow_id) is None:
            self.store.create(workflow_id, wf.name, Event(0, START, wf.name, self._clock.now(), OK, *start_payload))

    def _open_locked(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
                     start_payload: tuple[str, str | bytes] | None, handle: WorkflowHandle) -> None:
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
        if call is not None and (call[0], call[1]) != (args, kwargs):
            raise WorkflowConflictError(
                f"workflow {workflow_id!r} was started with args={args!r} kwargs={kwargs!r}; this call "
                f"passes args={call[0]!r} kwargs={call[1]!r}. A rerun must pass the same arguments "
                "(or use another workflow id)."
            )
        if info.status.is_terminal:
            self.store.unlock(workflow_id)
            handle._finish()
            return
        self._replay(wf, workflow_id, start, events, handle)

    def _replay(self, wf: Workflow[Any], workflow_id: str, start: Event, events: Iterator[Event],
                handle: WorkflowHandle) -> None:
        """Rebuild the run's machine from its history: one pass, then carry on live."""
        try:
            machine, step = replay_history(wf.fn, workflow_id, start, events, watch=self._watch)
        except NonDeterminismError:
            # Replay again, slowly, to explain the divergence side by side.
            check_history(wf.fn, workflow_id, list(self.store.events(workflow_id)))
            raise
        run = self._runs[workflow_id] = _Run(workflow_id, wf, machine, handle)
        self._advance(run, step)

    def _check_strict(self, run: _Run, live: Step) -> None:
        """Replay the whole history from scratch; it must reach the step the live run reached."""
        events = self.store.events(run.workflow_id)
        try:
            machine, replayed = replay_history(run.workflow.fn, run.workflow_id, next(events), events)
        except NonDeterminismError as exc:
            raise NonDeterminismError(exc.workflow_id, exc.seq, exc.recorded,
                                      f"{exc.now} (strict replay of the same history)", exc.where) from None
        machine.discard()
        if isinstance(live, Pending) and isinstance(replayed, Pending):
            if (live.seq, live.command) == (replayed.seq, replayed.command):
                return
        elif type(live) is type(replayed) and not isinstance(live, Pending):
            return
        def describe(step: Step) -> str:
            return step.command.describe() if isinstance(step, Pending) else type(step).__name__.lower()

        raise NonDeterminismError(run.workflow_id, run.machine.seq, f"live run: {describe(live)}",
                                  f"{describe(replayed)} (strict replay of the same history)",
                                  run.machine.where())

    # -- executing commands live ------------------------------------------------

    def _advance(self, run: _Run, step: Step) -> None:
        """Carry the run forward until it waits on something outside the driver."""
        while True:
            if self._strict:
                self._check_strict(run, step)
            if isinstance(step, Returned):
                self._finish(run, OK, payloads.encode(step.value, f"return value of workflow {run.workflow_id!r}"))
                return
            if isinstance(step, Raised):
                self._finish(run, ERROR, payloads.encode_error(step.error))
                return
            run.pending = step
            kind = step.command.kind
            if kind == ACTIVITY:
                call: ActivityCall = step.command  # type: ignore[assignment]
                info = (run.workflow_id, step.seq, 1, call.activity.name)
                if not self._executor.inline:
                    self._in_flight += 1
                    self._executor.submit(call, info, functools.partial(self._post_activity_done, run, step.seq))
                    return
                outcome = self._executor.run_inline(call, info)
            elif kind == SIDE_EFFECT:
                effect: SideEffect = step.command  # type: ignore[assignment]
                try:
                    outcome = (True, effect.fn())
                except Exception as exc:
                    outcome = (False, exc)
            elif kind == SIGNAL:
                nxt = self._take_signal(run, step)
                if nxt is None:
                    return
                step = nxt
                continue
            else:
                assert kind == TIMER
                assert step.deadline is not None
                if step.deadline > self._clock.now():
                    self._push_timer(run, step)
                    return
                step = self._resolve(run, OK, ("json", "null"), None)
                continue
            step = self._record_outcome(run, outcome)

    def _record_outcome(self, run: _Run, outcome: Outcome) -> Step:
        assert run.pending is not None
        ok, value = outcome
        pending = run.pending
        where = lambda: f"result of {pending.command.describe()} (step {pending.seq} of {run.workflow_id!r})"
        if ok:
            return self._resolve(run, OK, payloads.encode(value, where), value)
        encoded = payloads.encode_error(value)
        record = payloads.error_record(*encoded)
        thrown = value if record["pickle"] else payloads.decode_error(*encoded)
        return self._resolve(run, ERROR, encoded, thrown)

    def _resolve(self, run: _Run, outcome: str, encoded: tuple[str, str | bytes], value: Any,
                 consume_signal: int | None = None) -> Step:
        """Record the pending command's outcome (one commit), then resume the machine with it."""
        pending = run.pending
        assert pending is not None
        at = self._clock.now()
        cmd = pending.command
        self.store.record(run.workflow_id, Event(pending.seq, cmd.kind, cmd.name, at, outcome, *encoded),
                          consume_signal=consume_signal)
        run.pending = None
        if outcome == ERROR:
            return run.machine.throw(at, value)
        return run.machine.send(at, None if outcome == TIMEOUT else value)

    def _finish(self, run: _Run, outcome: str, encoded: tuple[str, str | bytes]) -> None:
        status = Status.COMPLETED if outcome == OK else Status.FAILED
        event = Event(run.machine.seq + 1, RESULT, "", self._clock.now(), outcome, *encoded)
        self.store.record(run.workflow_id, event, status=status)
        self._runs.pop(run.workflow_id, None)
        self.store.unlock(run.workflow_id)
        run.handle._finish()

    def _post_activity_done(self, run: _Run, seq: int, outcome: Outcome) -> None:
        """Called on an activity thread: hand the outcome to the driver."""
        self._post(functools.partial(self._activity_done, run, seq, outcome))

    def _activity_done(self, run: _Run, seq: int, outcome: Outcome) -> None:
        self._in_flight -= 1
        if self._runs.get(run.workflow_id) is not run or run.pending is None or run.pending.seq != seq:
            return  # the run was aborted or closed meanwhile
        self._step_safely(run, lambda: self._record_outcome(run, outcome))

    def _step_safely(self, run: _Run, step: Callable[[], Step]) -> None:
        try:
            self._advance(run, step())
        except BaseException as exc:
            self._abort(run, exc)

    # -- timers and signals -----------------------------------------------------

    def _fire_due_timers(self) -> None:
        while (callback := self._timers.pop_due(self._clock.now())) is not None:
            self._guarded(callback)

    def _push_timer(self, run: _Run, pending: Pending) -> None:
        assert pending.deadline is not None
        self._timers.push(pending.deadline, functools.partial(self._timer_fired, run, pending.seq),
                          functools.partial(self._still_waiting, run, pending.seq))

    def _still_waiting(self, run: _Run, seq: int) -> bool:
        """Is ``run`` still suspended at yield ``seq``? (Else its timer is stale.)"""
        return self._runs.get(run.workflow_id) is run and run.pending is not None and run.pending.seq == seq

    def _timer_fired(self, run: _Run, seq: int) -> None:
        """A timer, or a signal wait's timeout, is due."""
        if not self._still_waiting(run, seq):
            return
        assert run.pending is not None
        outcome = OK if run.pending.command.kind == TIMER else TIMEOUT
        self._waiting_signal.discard(run.workflow_id)
        self._step_safely(run, functools.partial(self._resolve, run, outcome, ("json", "null"), None))

    def _take_signal(self, run: _Run, pending: Pending) -> Step | None:
        """Resolve a ``wait_signal`` from the inbox if it can be; else park the run."""
        wait: WaitSignal = pending.command  # type: ignore[assignment]
        signal = self.store.next_signal(run.workflow_id, wait.signal)
        if signal is not None:
            self._waiting_signal.discard(run.workflow_id)
            value = payloads.decode(signal.encoding, signal.payload)
            return self._resolve(run, OK, (signal.encoding, signal.payload), value, consume_signal=signal.id)
        if pending.deadline is not None and pending.deadline <= self._clock.now():
            return self._resolve(run, TIMEOUT, ("json", "null"), None)
        if run.workflow_id not in self._waiting_signal:
            self._waiting_signal.add(run.workflow_id)
            if pending.deadline is not None:
                self._push_timer(run, pending)
        return None

    def _deliver_signals(self, workflow_id: str) -> None:
        run = self._runs.get(workflow_id)
        if run is None or run.pending is None or run.pending.command.kind != SIGNAL:
            return
        try:
            step = self._take_signal(run, run.pending)
            if step is not None:
                self._advance(run, step)
        except BaseException as exc:
            self._abort(run, exc)

    def __repr__(self) -> str:
        return f"<Engine {self.store!r} runs={len(self._runs)}>"


def send_signal(db: str | os.PathLike[str] | Store, workflow_id: str, name: str, payload: Any = None,
                *, at: float | None = None) -> None:
    """Send a signal from any process: ``rk.send_signal("orders.db", "order-o-42", "approved", True)``.

    The running engine (in this or another process) picks it up within its
    ``poll_interval``; if the run is not waiting yet, the signal waits in its inbox.
    """
    store = db if isinstance(db, Store) else SqliteStore(db)
    try:
        encoded = payloads.encode(payload, f"payload of signal {name!r} to {workflow_id!r}")
        store.send_signal(workflow_id, name, *encoded, time.time() if at is None else at)
    finally:
        if store is not db:
            store.close()
