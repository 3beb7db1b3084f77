"""Workers: processes that claim queued runs from a shared store and drive them.

Start as many as wanted, on one host sharing an SQLite file or on many hosts sharing a
PostgreSQL database; each claims ready runs of its queues (within the queues' limits and
its own), drives them, and hands a run back when it parks, so a run that wakes later goes
to whichever worker has room. Each worker registers itself and heartbeats; one that dies
is noticed by the others, which release its runs. ``docs/scale-out.md`` has the model.

>>> import replaykit as rk
>>> @rk.workflow
... def double(ctx, x):
...     yield rk.sleep(0)
...     return 2 * x
...
>>> store = rk.MemoryStore()
>>> with rk.Worker(store, workflows=[double], queues=["math"]) as worker:
...     worker.start(double, 21, workflow_id="d-21", queue="math").result(timeout=10)
42
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import socket
import threading
import time
import types
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .client import Client
from .clock import monotonic
from .code_version import code_version
from .errors import ReplayKitError, StoreError, WorkerStoppingError
from .store import Store
from .store.base import Secrets
from .store.work import Queue, WorkerRecord

if TYPE_CHECKING:
    from .hooks import HookEvent
from .worker_engine import WorkerEngine
from .workflow import as_workflow, register

log = logging.getLogger("replaykit")


class Worker(Client):
    """Claims and drives queued runs of ``workflows`` from ``queues`` until :meth:`stop` (or SIGTERM
    in :meth:`run`). It starts working as soon as it is made. It is also a :class:`Client` of its
    store (``start``, ``signal``, ``cancel``, ..., ``workers``), refusing starts once stopping.

    ``queues``: names, or :class:`Queue` objects whose limits are stored for every worker.
    ``concurrency``: at most this many runs held at once by this worker. ``activity_threads``:
    activities run at once. ``heartbeat``: seconds between the worker's heartbeats, and its
    checks for dead workers. ``lease``: a worker silent that long is cut off (PostgreSQL).
    ``grace``: how long :meth:`stop` lets running activities finish. ``version``: the code
    version it reports (default: a digest of its workflows' code and the activities they name).
    ``poll_interval``: the longest an idle worker waits before looking for work without being
    told. ``drivers``: driver threads sharing its runs (default: 4 on PostgreSQL, where each
    waits on round trips, 1 on SQLite, whose writers take turns anyway).
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Store,
        *,
        workflows: Iterable[Any],
        queues: Sequence[str | Queue] = ("default",),
        concurrency: int = 100,
        activity_threads: int = 16,
        durability: str = "crash",
        heartbeat: float = 0.5,
        lease: float = 30.0,
        grace: float = 30.0,
        poll_interval: float = 0.5,
        worker_id: str | None = None,
        version: str | None = None,
        warn_nondeterminism: bool = True,
        drivers: int | None = None,
        secret: Secrets = None,
        pickle: str = "signed",
    ) -> None:
        if isinstance(queues, (str, Queue)):  # one queue, not the letters of its name
            queues = [queues]
        if not queues:
            raise ValueError("a worker needs at least one queue to take work from")
        for name, value, least in (("concurrency", concurrency, 1), ("drivers", 1 if drivers is None else drivers, 1),
                                   ("activity_threads", activity_threads, 0)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"Worker {name} must be a whole number of at least {least}; got {value!r}")
        for name, seconds in (("heartbeat", heartbeat), ("lease", lease), ("poll_interval", poll_interval)):
            if not seconds > 0:
                raise ValueError(f"Worker {name} must be a positive number of seconds; got {seconds!r}")
        if not grace >= 0:
            raise ValueError(f"Worker grace must be 0 or more seconds; got {grace!r}")
        served = [as_workflow(w) for w in workflows]
        if not served:
            raise ValueError("a worker needs the workflows it may drive: Worker(db, workflows=[...])")
        for wf in served:
            register(wf)
        super().__init__(db, durability=durability, workflows=served, secret=secret, pickle=pickle)
        self.store.end_idle_transactions_after(lease)  # a transaction of this process hung that long ends
        self._queues = [q if isinstance(q, Queue) else Queue(q) for q in queues]
        self._names = [wf.name for wf in served]
        self._capacity = concurrency
        self._heartbeat, self._lease, self._grace, self._claim_poll = heartbeat, lease, grace, poll_interval
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.version = version or code_version(served)
        self._held: dict[str, str] = {}  # run id -> its queue, from its claim until its lock is given back
        self._mutex = threading.Lock()
        self._wakeup = threading.Event()  # room freed, or stop asked
        self._unreturned: set[str] = set()  # runs whose hand-back failed: released at a heartbeat once forgotten
        self._started_at = time.time()
        self._stop_asked = threading.Event()
        self._stop_requested = False
        self.stopping = False
        # Whether this worker still holds its runs (see _may_start_activity): a life ends at a heartbeat that
        # finds its place lost; _confirmed_at is when the last heartbeat that found it in place was sent.
        self._place = threading.Condition()
        self._life, self._beats, self._confirmed_at = 0, 0, monotonic()
        self._claimed_in: dict[str, int] = {}  # run id -> the life it was claimed in
        try:
            for queue in queues:
                if isinstance(queue, Queue):  # given with its limits (a plain name leaves them as stored)
                    self.store.set_queue(queue)
            self._register()
            if drivers is None:  # a driver waits on round trips: on a server, several overlap them
                drivers = 4 if self.store.networked else 1
            threads = -(-activity_threads // drivers) if activity_threads else 0  # shared out among them
            self._engines = [WorkerEngine(self.store, self, workflows=served, activity_threads=threads,
                                          warn_nondeterminism=warn_nondeterminism) for _ in range(drivers)]
            if self.store.networked:  # a stopped SQLite process keeps its locks: nobody takes its runs over
                for engine in self._engines:
                    engine._executor.gate = self._activity_gate
                if lease < 2 * heartbeat:
                    log.warning("replaykit worker %s: its lease (%ss) is shorter than two heartbeats (%ss): one late "
                                "heartbeat gets it cut off", self.worker_id, lease, heartbeat)
        except BaseException:
            if self._own_store:
                self.store.close()
            raise
        self._thread = threading.Thread(target=self._serve, name=f"replaykit-worker-{self.worker_id}", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[HookEvent], object]) -> Callable[[], None]:
        """As :meth:`Engine.on`, for the runs this worker drives (each of its drivers tells what
        happens to its runs in order; a run stays with one driver). Runs claimed before the call
        are told from then on. Returns a function that unsubscribes the callback."""
        offs = [engine.on(event, callback) for engine in self._engines]

        def off() -> None:
            for unsubscribe in offs:
                unsubscribe()

        return off

    def subscribe(self, subscriber: object) -> Callable[[], None]:
        """Subscribe each method of ``subscriber`` named after a lifecycle event (``run_completed``,
        ``step_failed``...: each takes the ``rk.HookEvent``), as :meth:`on` does; returns a function
        that unsubscribes them all."""
        from .hooks import subscribe

        return subscribe(self, subscriber)

    def _may_start(self, workflow_id: str) -> None:
        if self.stopping:
            raise WorkerStoppingError(
                f"worker {self.worker_id} is stopping and takes no new runs; start {workflow_id!r} through "
                "an rk.Client or another worker")

    def run(self) -> None:
        """Work until :meth:`stop`, SIGTERM or Ctrl-C (then stop gracefully, as :meth:`stop` says)."""
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            while not (self._stop_requested or self.stopping):
                time.sleep(0.1)  # a signal handler may not take locks (an Event's would deadlock here)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop gracefully, and return at once (safe in a signal handler, or from
        any thread; a request made before :meth:`run` is called makes it stop at once)."""
        self._stop_requested = True  # a plain flag: a signal handler must take no lock

    def stop(self, grace: float | None = None) -> None:
        """Stop taking work; let running activities finish for ``grace`` seconds (default: the
        worker's ``grace``), then hand every run back (a run's activity still running then is
        abandoned and runs again where the run goes on) and leave the registry."""
        with self._mutex:
            if self.stopping:
                return
            self.stopping = True
        self._stop_asked.set()
        self._wakeup.set()
        with self._place:
            self._place.notify_all()  # activities waiting for a heartbeat: none comes now
        self._thread.join()
        try:
            self.store.heartbeat(self.worker_id, stopping=True)
        except ReplayKitError:
            pass
        deadline = monotonic() + (self._grace if grace is None else grace)
        while any(e._in_flight for e in self._engines) and monotonic() < deadline:
            time.sleep(0.02)
        for engine in self._engines:
            engine.close()
        for workflow_id in list(self._held):  # claimed, and not opened before the engines stopped
            self.store.unlock(workflow_id)
        try:
            self.store.unregister_worker(self.worker_id)  # whatever is still marked ours: ready at once
        finally:
            if self._own_store:
                self.store.close()

    def holds(self, workflow_id: str) -> bool:
        """Does this worker hold the run (claimed, and not yet given back)?"""
        return workflow_id in self._held

    def queue_of(self, workflow_id: str) -> str:
        return self._held.get(workflow_id) or self._queues[0].name

    def hand_back_failed(self, workflow_id: str) -> None:
        """The run, being given back, is still marked as ours in the store (the store failed meanwhile):
        the first heartbeat after it is forgotten releases it (called by the engine's driver)."""
        with self._mutex:
            self._unreturned.add(workflow_id)

    def forget(self, workflow_id: str) -> None:
        """The run's lock was given back (called by the engine's driver)."""
        with self._mutex:
            self._held.pop(workflow_id, None)
            self._claimed_in.pop(workflow_id, None)
        self._wakeup.set()

    def close(self) -> None:
        """The same as :meth:`stop`."""
        self.stop()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Worker {self.worker_id} {self.store!r} runs={len(self._held)}>"

    # -- the claiming thread --------------------------------------------------------------

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        self.request_stop()

    def _register(self) -> None:
        """Enter the registry; runs still marked as ours that we do not hold are released (a hand-back
        that failed while the store was unreachable left them marked)."""
        with self._mutex:
            held = tuple(self._held)
        self.store.register_worker(WorkerRecord(
            self.worker_id, socket.gethostname(), os.getpid(), tuple(q.name for q in self._queues),
            tuple(self._names), self.version, self._started_at, time.time(), self.stopping, held))

    def _serve(self) -> None:
        next_beat = 0.0
        while not self._stop_asked.is_set():
            try:
                if monotonic() >= next_beat:
                    next_beat = monotonic() + self._heartbeat
                    self._beat()
                claimed, more = self._claim()
                if more and len(self._held) < self._capacity:
                    continue  # a queue gave all that was asked: more may be ready
                failed = False
            except StoreError as exc:
                log.warning("replaykit worker %s: %s", self.worker_id, exc)
                claimed, failed = 0, True
            except Exception:  # a bug in replaykit: keep serving
                log.exception("replaykit worker %s failed to claim work", self.worker_id)
                claimed, failed = 0, True
            self._idle(next_beat, look_ahead=not claimed and not failed and len(self._held) < self._capacity,
                       news=not failed)

    def _activity_gate(self, workflow_id: str) -> Callable[[], bool]:
        """When an activity of run ``workflow_id`` is submitted: the check made just before starting it. A run
        claimed in a life that has ended (its place was lost since) may be driven elsewhere: it must be
        claimed again before any activity of it starts here."""
        life = self._claimed_in.get(workflow_id, self._life)
        return lambda: self._may_start_activity(life)

    def _may_start_activity(self, life: int) -> bool:
        """May an activity of a run claimed in ``life`` start now? Only while that life lasts and the last
        heartbeat that confirmed this worker's place was sent less than the lease ago, less a margin (else
        it waits for the next heartbeat): a worker silent for its lease (stopped, frozen) is cut off, its
        runs' locks end with its session, and the runs are driven elsewhere, so nothing of them may start
        here once it wakes."""
        fresh_for = self._lease - min(self._lease / 4, 1.0)
        with self._place:
            while self._life == life:
                if monotonic() - self._confirmed_at < fresh_for:
                    return True
                if self._stop_asked.is_set() or not self._place.wait_for(
                        functools.partial(self._news_since, self._beats), timeout=self._lease):
                    return False  # no heartbeat comes (the worker stops): the run is handed back instead
            return False

    def _news_since(self, beats: int) -> bool:
        return self._beats != beats or self._stop_asked.is_set()

    def _beat(self) -> None:
        sent = monotonic()
        alive = self.store.heartbeat(self.worker_id, self.stopping)
        with self._place:
            if alive:
                self._confirmed_at = sent
            else:
                self._life += 1  # what it held may be driven elsewhere now
            self._beats += 1
            self._place.notify_all()
        if not alive:
            log.warning("replaykit worker %s lost its place in the registry (its connection died, or it was "
                        "declared dead); registering again, releasing the runs marked as its own it no longer "
                        "holds", self.worker_id)
        with self._mutex:
            forgotten = {workflow_id for workflow_id in self._unreturned if workflow_id not in self._held}
        if not alive or forgotten:
            self._register()  # releases what is marked ours and not held
            with self._mutex:
                self._unreturned -= forgotten
        for dead in self.store.reap_workers(self._lease):
            # %r: a worker id read from the registry (anyone who writes the store wrote it) is logged escaped
            log.warning("replaykit worker %s found worker %r dead and released its runs", self.worker_id, dead)

    def _claim(self) -> tuple[int, bool]:
        """Claim what the queues and this worker's room allow: (how many, whether a queue gave all
        that was asked, so that more may be ready)."""
        free = self._capacity - len(self._held)
        now = time.time()
        total, more = 0, False
        for queue in self._queues:
            if free <= 0:
                break
            room = free
            if queue.worker_concurrency is not None:
                with self._mutex:
                    here = sum(1 for q in self._held.values() if q == queue.name)
                room = min(room, queue.worker_concurrency - here)
            if room <= 0:
                continue
            claimed = self.store.claim(self.worker_id, queue.name, self._names, room, now, self.version)
            with self._mutex:
                for workflow_id, _ in claimed:
                    self._held[workflow_id] = queue.name
                    self._claimed_in[workflow_id] = self._life
            for workflow_id, name in claimed:
                engine = self._engines[zlib.crc32(workflow_id.encode()) % len(self._engines)]
                engine._post(functools.partial(engine.open_claimed, workflow_id, name))
            free -= len(claimed)
            total += len(claimed)
            more = more or len(claimed) == room
        return total, more

    def _idle(self, next_beat: float, look_ahead: bool, news: bool = True) -> None:
        """Wait for work: until told (a store change, room freed), a run's ready time (asked of the
        store only after a claim with room found nothing), the next heartbeat, or the poll interval
        (with jitter: a fleet does not poll in step). A ready time already past is a run this worker
        may not take now (a limit, another's lock, its code version): notifications and polls tell.
        After a failure (``news`` false: the store unreachable says "changed" at every look), only
        room freed or the time ends the wait: a fleet does not hammer a server coming back."""
        until = min(next_beat, monotonic() + self._claim_poll * random.uniform(0.5, 1.0))
        ready = None
        if look_ahead:
            try:
                ready = self.store.next_ready([q.name for q in self._queues])
            except StoreError:
                pass
        if ready is not None and ready > time.time():
            until = min(until, monotonic() + ready - time.time())
        self.store.changed()  # from here on, what changes is news
        while not self._stop_asked.is_set():
            left = until - monotonic()
            if left <= 0:
                return
            if self._wakeup.wait(min(left, 0.01)):
                self._wakeup.clear()
                if len(self._held) < self._capacity:
                    return
            elif news and len(self._held) < self._capacity and self.store.changed():
                return
