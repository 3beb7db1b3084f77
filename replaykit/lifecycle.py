"""The life of a run driven here: opened (created, locked, replayed), advanced, finished.

Mixed into :class:`~replaykit.runtime.Engine`; everything here runs on its driver
thread. Opening locks the run and replays its history into a machine; advancing
starts the leaves it waits on (``effects.py``) until one must wait outside the
driver; a run ends by recording its result, by continuing as new, or by being
given up (aborted, evicted while it only waits on timers: ``eviction.py``, or
released). Strict replay checking happens here, after every step.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .clock import monotonic
from .commands import ACTIVITY, SIDE_EFFECT, TIMER
from .effects import NULL
from .errors import (
    Cancelled,
    NonDeterminismError,
    ReplayKitError,
    StoreError,
    TimedOut,
    WorkflowLockedError,
    WorkflowPausedError,
)
from .history import CONTINUED, ERROR, OK, PATCH, RESULT, START, Event, Status
from .interpreter import Continued, Feed, Leaf, Raised, Returned, Step, Waiting, replay_history
from .replaycheck import check_history
from .runstate import EngineState, _Evicted, _Run
from .starting import check_same_run, start_payload, started_by
from .workflow import check_arguments

if TYPE_CHECKING:
    from collections.abc import Callable

    from .effects import Answer
    from .errors import StoreError
    from .handle import WorkflowHandle
    from .store.base import Opening
    from .store.work import Placement
    from .workflow import Workflow

log = logging.getLogger("replaykit")

Payload = tuple[str, str | bytes]
_NOTHING: dict[str, Any] = {}
_RUN_HERE = (ACTIVITY, SIDE_EFFECT)  # leaves whose start may run the user's code on the driver


class Lifecycle(EngineState):
    """Opening, advancing and ending the runs of the engine."""

    if TYPE_CHECKING:
        def _post(self, job: Callable[[], None]) -> None: ...
        def _later(self, action: Callable[[], None], lost: Callable[[StoreError], None] | None = None) -> None: ...
        def _tell(self, kind: str, workflow_id: str, workflow: str, at: float | None = None,
                  **details: Any) -> None: ...
        def _unlock(self, workflow_id: str) -> None: ...
        def _start_leaf(self, run: _Run, leaf: Leaf, more_to_start: bool) -> Answer | None: ...
        def _record_answer(self, run: _Run, leaf: Leaf, answer: Answer) -> tuple[float, Any]: ...
        def _child_ended(self, child_id: str) -> None: ...
        def _take_controls(self, workflow_id: str) -> None: ...
        def _watch_deadline(self, run: _Run) -> None: ...
        def _past_deadline(self, run: _Run) -> Step | None: ...
        def _cancel_child(self, child_id: str) -> None: ...
        def _too_late(self, run: _Run, deadline: float, leaf: Leaf) -> bool: ...
        def _answered_at(self, run: _Run, leaf: Leaf) -> float | None: ...
        def _maybe_evict(self, run: _Run) -> None: ...
        def _keep_paused(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> None: ...
        def _ended_if_asked(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle) -> bool: ...
        def _kept_after_all(self, workflow_id: str, evicted: _Evicted) -> bool: ...
        def _clear_mark(self, workflow_id: str) -> None: ...

    # -- opening a run: create, lock, replay ------------------------------------------

    def _create(self, wf: Workflow[Any], workflow_id: str, payload: Payload, pending: bool = False,
                placement: Placement | None = None) -> Event | None:
        """Record the start event unless the run exists (an atomic insert: no lock needed); the event,
        or ``None`` if the run existed. With a ``placement`` the run is queued for workers."""
        start = Event(0, 0, START, wf.name, self._clock.now(), OK, *payload)
        created = self.store.create(workflow_id, wf.name, start, Status.PENDING if pending else Status.RUNNING,
                                    placement=placement)
        if created:
            self._tell("run_created", workflow_id, wf.name)
        return start if created else None

    def _open(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
              handle: WorkflowHandle, lock_deadline: float, *, woken: bool = False) -> None:
        """Lock a run that exists in the store, and replay it (``call``: the arguments a rerun passed;
        ``None`` for a run that is followed wherever it goes: a resume, a wake-up, a recovery, or a
        run this engine's ``start`` just created)."""
        try:
            locked = workflow_id not in self._runs and self._lock(workflow_id)
        except StoreError as exc:  # a store that cannot lock at all (a read-only one): said to the caller
            handle._fail(exc)
            return
        if not locked:
            if call is None and workflow_id in self._runs:  # a recovery or resume that found it driven here
                handle._follow()  # since it looked (a next generation opened, an evicted run woken)
                return
            if monotonic() < lock_deadline:
                retry = lambda: self._open(wf, workflow_id, call, handle, lock_deadline, woken=woken)  # noqa: E731
                threading.Timer(self._poll, self._post, (retry,)).start()
                return
            if call is None:
                # A resume, a wake-up, a recovery, or a run just created here that another engine's
                # recovery took first: the run goes on there; wait for its end.
                handle._follow()
                return
            if workflow_id in self._runs:
                error = WorkflowLockedError(
                    f"workflow {workflow_id!r} is already driven by this engine (an earlier start or resume); "
                    "wait for it with engine.handle(id).result()")
            else:
                error = WorkflowLockedError(
                    f"workflow {workflow_id!r} is being driven by another live process or engine "
                    f"({self.store.lock_owner(workflow_id) or '?'}). It continues there; wait for it with "
                    "engine.handle(id).result(), or stop that process: its lock is released the moment it "
                    "exits, and a rerun resumes from the last recorded step.")
            handle._fail(error)
            return
        self._opened(wf, workflow_id, call, handle, woken=woken)

    def _opened(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
                handle: WorkflowHandle, created: Event | None = None, *, woken: bool = False,
                kept: _Evicted | None = None) -> None:
        """Open a run this engine has locked (``created``: its start, which this engine just recorded
        under the lock, so that the history is that event alone and need not be read back; ``kept``:
        the entry of a kept run being woken, kept again if the store fails before it is driven)."""
        try:
            if created is not None:
                self._replay(wf, workflow_id, created, created.value(self.store.codec, workflow_id), iter(()), handle)
            else:
                self._open_locked(wf, workflow_id, call, handle, woken=woken)
        except BaseException as exc:
            run = self._runs.get(workflow_id)
            if run is not None:  # it got as far as running: stop it as any run is stopped
                self._abort(run, exc)
            elif kept is not None and isinstance(exc, StoreError) and self._kept_after_all(workflow_id, kept):
                return  # still this engine's, tried again: its handle waits
            else:
                self._unlock(workflow_id)
            handle._fail(exc)

    def _create_locked(self, wf: Workflow[Any], workflow_id: str, payload: Payload, *, pending: bool = False,
                       placement: Placement | None = None, lock: bool = True) -> tuple[bool, Event | None]:
        """Take the run's lock (if ``lock`` and this store can), then record its start: ``(locked, the
        start event or None if the run existed)``. Locked first, the run is the holder's from its first
        row (PostgreSQL stamps a lock on the row from another connection, which cannot see a row created
        in an uncommitted batch), and nobody else can have recorded anything when it is opened from its
        start event alone (``_opened``). A store that cannot lock says so when the run opens."""
        locked = unchecked = False
        try:
            if lock and workflow_id not in self._runs:
                unchecked = workflow_id not in self._releasing and workflow_id not in self._unmarking  # else ours
                try:
                    locked = self._lock(workflow_id, new=True)
                except StoreError:
                    pass
            created = self._create(wf, workflow_id, payload, pending, placement)
        except BaseException:
            if locked:
                self._unlock(workflow_id)
            raise
        if locked and unchecked and created is None:
            # The run existed: its lock was taken without reading its keeper mark (Store.try_lock_new), so
            # it is given back at once, untouched, and a later _lock reads the mark (a live engine may keep
            # it out of memory). Kept until the commit, _lock would take it back unread.
            self.store.unlock(workflow_id)
            return False, None
        return locked, created

    def _lock(self, workflow_id: str, *, new: bool = False) -> bool:
        """Take the run's lock; if the holder vanished between our try and our asking who it is, try again
        (``new``: to create the run under it, given back if it existed: ``Store.try_lock_new``)."""
        if workflow_id in self._unmarking:  # still ours, given up in a lost batch: its mark is this engine's
            self._unmarking.discard(workflow_id)  # (if it has a row: one created in that batch has none)
            self._clear_mark(workflow_id)
            self._releasing.add(workflow_id)
        if workflow_id in self._releasing:  # still ours: its release waits for the commit
            if workflow_id in self._marked:  # set aside (evicted, paused) this turn: driven here again
                self.store.keep(workflow_id, None)  # (if this raises, its release after the commit stands)
                self._marked.discard(workflow_id)
            self._releasing.discard(workflow_id)
            return True
        locked = self._take(workflow_id, new) or (
            self.store.lock_owner(workflow_id) is None and self._take(workflow_id, new))
        if locked:
            self._marked.discard(workflow_id)  # try_lock cleared this engine's mark
        return locked

    def _take(self, workflow_id: str, new: bool) -> bool:
        return self.store.try_lock_new(workflow_id) if new else self.store.try_lock(workflow_id, keeper=self._keeper)

    def _open_locked(self, wf: Workflow[Any], workflow_id: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None,
                     handle: WorkflowHandle, *, woken: bool = False) -> None:
        opening = self._read_opening(workflow_id)
        info = opening.info
        if info is None:
            raise ReplayKitError(f"workflow {workflow_id!r} vanished from the store")
        events: Iterator[Event] = opening.events
        start = started_by(workflow_id, info.name, next(events, None))
        recorded = start.value(self.store.codec, workflow_id)
        check_same_run(workflow_id, start.name, recorded, wf, call, self.store.codec)
        if info.status.is_terminal:
            self._unlock(workflow_id)
            handle._finish()
            return
        if info.status is Status.PAUSED:
            if woken and not self._ended_if_asked(wf, workflow_id, handle):
                # evicted here, and paused since: its resume wakes it
                self._keep_paused(wf, workflow_id, handle)
                self._unlock(workflow_id)
                return
            if call is None:  # not a rerun (paused right after its start): wait for the resume
                self._unlock(workflow_id)
                handle._follow()
                return
            raise WorkflowPausedError(
                f"workflow {workflow_id!r} is paused; resume it (engine.resume, rk.resume or "
                "`replaykit resume`) to let it go on"
            )
        if info.status is Status.PENDING:
            begin = recorded["start_at"]
            if begin > self._clock.now():
                self._unlock(workflow_id)  # whoever holds the lock when it is due starts it
                self._start_when_due(wf, workflow_id, handle, begin)
                return
            self.store.set_status(workflow_id, Status.RUNNING, self._clock.now())
        self._replay(wf, workflow_id, start, recorded, events, handle, woken=woken)

    def _start_when_due(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle, begin: float) -> None:
        """A run created here to start later: open it when it is due (whoever holds the lock then starts
        it); until then anyone may cancel it, and ``result()`` watches the store."""
        handle._follow()
        self._timers.push(begin, lambda: self._open(wf, workflow_id, None, handle, 0.0))

    def _read_opening(self, workflow_id: str) -> Opening:
        """The run's row and history, read to open it."""
        return self.store.opening(workflow_id)

    def _replay(self, wf: Workflow[Any], workflow_id: str, start: Event, recorded: dict[str, Any],
                events: Iterator[Event], handle: WorkflowHandle, *, woken: bool = False) -> None:
        """Rebuild the run's machine from its history: one pass, then carry on live (``woken``: this
        engine drove it before it was evicted)."""
        counted = Feed(events)
        try:
            machine, step = replay_history(wf, workflow_id, start, counted, codec=self.store.codec, watch=self._watch,
                                           recorded=recorded)
        except NonDeterminismError:
            # Replay again, slowly, to explain the divergence side by side (one error, not two chained).
            try:
                check_history(wf, workflow_id, list(self.store.events(workflow_id)), self.store.codec)
            except NonDeterminismError as explained:
                raise explained from None
            raise
        run = self._runs[workflow_id] = _Run(workflow_id, wf, machine, handle, counted.count + 1, recorded)
        evicted = self._evicted.pop(workflow_id, None)  # evicted, then started or resumed again: driven now
        if evicted is not None:
            woken = True  # driven here before: not a fresh start, and what came meanwhile is taken below
            self._paused_here.discard(workflow_id)  # (taken again below if it is paused)
            evicted.handle._follow()  # if it is not this run's handle, it watches the store for its end
        run.started_at = start.at
        # run.custom_status stays None: whatever the code set (before its first yield, or during the replay)
        # is saved with the next event.
        if "timeout" in recorded and not counted.timed_out:  # counted from when it began (a delayed start's time)
            run.deadline = max(start.at, recorded.get("start_at", 0)) + recorded["timeout"]
            self._watch_deadline(run)
        if isinstance(step, Waiting):  # leaves replay left outstanding are started again
            step = Waiting(tuple(machine.outstanding.values()))
        if self._hooks is not None:  # a history of its start alone: it begins (unless it began here before)
            fresh = counted.count == 0 and not woken
            self._tell("run_started" if fresh else "run_resumed", workflow_id, wf.name)
        self._advance(run, step)
        if (counted.count or woken) and self._runs.get(workflow_id) is run:
            # Requests that came while nobody drove it (a fresh run's come through the store poll).
            self._take_controls(workflow_id)

    def _known_by(self, run: _Run, leaf: Leaf, began: float | None) -> bool:
        """Was ``leaf``'s answer known when it began (an activity whose ``schedule_to_close`` had
        passed fails unrun), rather than made by running it?"""
        at = self._answered_at(run, leaf)
        return at is not None and began is not None and at <= began

    @staticmethod
    def _due_before(run: _Run, deadline: float) -> Leaf | None:
        """The earliest timer the run started that came due before ``deadline`` unanswered (a step
        that ran here held the driver meanwhile): it answers before the run's timeout does."""
        due = [leaf for leaf in run.machine.outstanding.values()
               if leaf.command.kind == TIMER and leaf.deadline is not None and leaf.deadline < deadline
               and leaf not in run.parked]
        return min(due, key=lambda leaf: (leaf.deadline, leaf.step), default=None)

    # -- carrying runs forward ----------------------------------------------------------

    def _advance(self, run: _Run, step: Step) -> None:
        """Carry the run forward until it waits on something outside the driver.

        A step's result is sent to the store (``Store.send``) and the workflow moves to its next
        command during the round trip; it is confirmed before the next leaf starts and before this
        returns: nothing the run does next, nor anything of another run, happens before it."""
        try:
            self._carry(run, step)
        except BaseException:
            self._confirm_quietly()
            raise
        self.store.confirm()

    def _confirm_quietly(self) -> None:
        """Wait for a sent step when something else went wrong already: that is the error to report."""
        try:
            self.store.confirm()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the failure being handled comes first
            log.warning("replaykit: a step sent before this failure was not recorded either: %s", exc)

    def _carry(self, run: _Run, step: Step) -> None:
        todo: deque[Leaf] = deque()
        ran_late: dict[int, tuple[float | None, Answer]] = {}  # step -> (began, answer) of a leaf run here
        answer: Answer | None
        while True:
            if isinstance(step, Returned):
                encoded = self.store.codec.encode(step.value, f"return value of workflow {run.workflow_id!r}")
                self._finish(run, OK, encoded)
                return
            if isinstance(step, Raised):
                self._finish(run, ERROR, self.store.codec.encode_error(step.error), _ending_status(step.error),
                             step.error)
                return
            if isinstance(step, Continued):
                self._continue_as_new(run, step)
                return
            self._after_step(run)
            if self._strict:
                self._check_strict(run)
            todo.extend(step.started)
            waiting = run.machine.outstanding
            late: list[Leaf] = []  # past the run's deadline, with no answer from before it: not started
            while todo:  # start leaves until one answers at once (or none does)
                leaf = todo.popleft()
                if waiting.get(leaf.step) is not leaf:
                    continue  # cancelled meanwhile (a sibling won an rk.any)
                kept = ran_late.get(leaf.step)  # it ran here past the deadline: its answer comes after the timeout
                if kept is not None and run.deadline is not None:
                    late.append(leaf)
                    continue
                if kept is not None:  # the timeout is in, and a shield still waits on it
                    del ran_late[leaf.step]
                    self.store.confirm()
                    began, answer = kept
                else:
                    if run.paused:
                        run.parked += (leaf,)
                        continue
                    if self._closed:  # close() or Ctrl-C: no new step starts; a rerun resumes from here
                        return
                    self.store.confirm()  # the step before is recorded before this one starts
                    if run.deadline is not None and self._too_late(run, run.deadline, leaf):
                        late.append(leaf)  # a sibling may still have an answer from before the deadline
                        continue
                    began = self._clock.now() if self._hooks is not None or run.deadline is not None else None
                    answer = self._start_leaf(run, leaf, bool(todo))
                    if (answer is not None and run.deadline is not None and leaf.command.kind in _RUN_HERE
                            and run.deadline <= self._clock.now() and not self._known_by(run, leaf, began)):
                        # It ran here (a side effect, an inline activity) and ended after the deadline: the
                        # timeout comes first, as for an activity on a thread. A shield keeps the answer.
                        ran_late[leaf.step] = (began, answer)
                        late.append(leaf)
                        continue
                if answer is not None:
                    todo.extendleft(reversed(late))  # looked at again after this answer
                    break
            else:
                deadline, timer = run.deadline, None
                if deadline is not None and deadline <= self._clock.now():
                    timer = self._due_before(run, deadline)
                    if timer is None:
                        # Nothing came before the deadline: the timeout comes next, at this yield, instead of
                        # parking (a leaf held back by a shield starts after it).
                        past = self._past_deadline(run)
                        if past is None:  # terminated
                            return
                        todo.extend(late)
                        step = past
                        continue
                if timer is None:  # the run waits on something outside the driver
                    self.store.confirm()  # its last step is recorded before it parks (and is perhaps handed back)
                    if run.status_unsaved:  # no event to carry it: save it on its own
                        self.store.set_custom_status(run.workflow_id, self._unsaved_status(run)["custom_status"])
                    if not run.executions and self._hooks is not None:  # only time or news moves it
                        self._tell("run_suspended", run.workflow_id, run.workflow.name)
                    self._maybe_evict(run)
                    return
                # A timer it started came due before the deadline while a step ran here: it answers first.
                leaf, answer, began = timer, (OK, NULL, None, None), None
                todo.extendleft(reversed(late))
            at, value = self._record_answer(run, leaf, answer)
            step = run.machine.resolve(leaf.step, answer[0], value, at)
            if self._hooks is not None:
                self._tell_step(run, leaf, answer[0], value, began)

    def _settle(self, run: _Run, leaf: Leaf, answer: Answer, began: float | None = None) -> None:
        """Record an outcome that arrived later (activity, timer, signal, child) and go on (``began``:
        when the activity attempt that answered started)."""
        try:
            at, value = self._record_answer(run, leaf, answer)
            step = run.machine.resolve(leaf.step, answer[0], value, at)
            if self._hooks is not None:
                self._tell_step(run, leaf, answer[0], value, began)
            self._advance(run, step)
        except BaseException as exc:
            self._abort(run, exc)

    def _tell_step(self, run: _Run, leaf: Leaf, outcome: str, value: Any, began: float | None) -> None:
        """A step answered: completed, or failed (retried if the workflow waits on the same step again);
        ``began``: when this attempt started, if the engine knows (else the step's first yield)."""
        command = leaf.command
        if command.kind == TIMER and getattr(command, "name", "") == "retry":
            return  # the wait between attempts: told with the attempt that failed
        if outcome == OK:
            kind = "step_completed"
        else:
            kind = "step_retried" if leaf.step in run.machine.outstanding else "step_failed"
        self._tell(kind, run.workflow_id, run.workflow.name, step=leaf.step,
                   command=f"{command.kind} {getattr(command, 'name', '')}".rstrip(), attempt=leaf.attempt,
                   error=value if isinstance(value, BaseException) else None,
                   took=self._clock.now() - leaf.scheduled, started=leaf.scheduled if began is None else began)

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
            machine, _ = replay_history(run.workflow, run.workflow_id, next(events), events, codec=self.store.codec)
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

    def _finish(self, run: _Run, outcome: str, encoded: Payload, status: Status | None = None,
                error: BaseException | None = None, consume_signal: int | None = None) -> None:
        status = status or (Status.COMPLETED if outcome == OK else Status.FAILED)
        for child_id, (parent, _) in list(self._children.items()):  # parent-close policy: cancel them
            if parent is run:
                self._cancel_child(child_id)
        self._after_step(run)
        event = Event(run.next_seq, 0, RESULT, "", self._clock.now(), outcome, *encoded)
        self.store.record(run.workflow_id, event, status=status, consume_signal=consume_signal,
                          **self._unsaved_status(run))
        self._tell(f"run_{status.value}", run.workflow_id, run.workflow.name, event.at, error=error,
                   took=event.at - run.started_at)
        self._release(run)
        self._later(run.handle._finish, run.handle._fail)
        if run.parent is not None:
            self._post(functools.partial(self._child_ended, run.workflow_id))

    def _continue_as_new(self, run: _Run, step: Continued) -> None:
        self._after_step(run)
        try:
            check_arguments(run.workflow, step.args, step.kwargs)
        except TypeError as exc:  # a bug of the code: the run fails with it, nothing of a next generation is recorded
            self._finish(run, ERROR, self.store.codec.encode_error(exc), Status.FAILED, exc)
            return
        now = self._clock.now()  # the end of this generation is the start of the next
        left = None if run.deadline is None else run.deadline - now  # the run's deadline stays (past: < 0)
        payload = start_payload(self.store.codec, run.workflow, step.args, step.kwargs, continued=True,
                                parent=run.parent, generation=run.generation + 1, timeout=left)
        result = Event(run.next_seq, 0, RESULT, "", now, CONTINUED,
                       *self.store.codec.encode({"args": list(step.args), "kwargs": step.kwargs}, "continue_as_new"))
        new_start = Event(0, 0, START, run.workflow.name, now, OK, *payload)
        status = self.store.continue_as_new(run.workflow_id, result, new_start)
        self._tell("run_continued", run.workflow_id, run.workflow.name, now, took=now - run.started_at)
        run.machine.discard()
        del self._runs[run.workflow_id]
        if status is Status.PAUSED:  # paused during the step that continued it: its resume wakes it here
            self._keep_paused(run.workflow, run.workflow_id, run.handle)
            self._unlock(run.workflow_id)
            return
        # The next generation opens in the driver's next turn, still locked: opened from here, a chain of
        # generations whose steps all answer at once would nest a call per generation and overflow the stack.
        self._continuing[run.workflow_id] = run.handle
        self._post(functools.partial(self._next_generation, run.workflow, run.workflow_id, run.handle, new_start))

    def _next_generation(self, wf: Workflow[Any], workflow_id: str, handle: WorkflowHandle, start: Event) -> None:
        if self._continuing.pop(workflow_id, None) is None:
            return  # given up meanwhile: its start was in a batch that was lost (see _batch_lost)
        self._opened(wf, workflow_id, None, handle, start)

    def _release(self, run: _Run) -> None:
        for execution in run.executions.values():
            execution.cancelled = True
        self._runs.pop(run.workflow_id, None)
        self._unlock(run.workflow_id)

    def _abort(self, run: _Run, error: BaseException) -> None:
        """Stop driving ``run`` without recording anything; ``result()`` raises ``error``."""
        try:
            self._confirm_quietly()
            run.machine.discard()
            self._release(run)
        finally:  # whatever giving it up raised, nobody waits for it forever
            run.handle._fail(error)


def _ending_status(error: BaseException) -> Status:
    if isinstance(error, TimedOut):
        return Status.TIMED_OUT
    if isinstance(error, Cancelled):
        return Status.CANCELLED
    return Status.FAILED
