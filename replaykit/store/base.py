"""The store interface: everything the runtime needs to persist, and nothing more.

A store holds, per workflow run, its row (name, status) and its history of
events, plus an inbox of signals, and grants the exclusive right to drive a
run. Only store modules speak SQL; the runtime sees this interface.
"""

from __future__ import annotations

import abc
import builtins
import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import attrs

from ..errors import CorruptStoreError
from ..history import Event, Status, WorkflowInfo
from ..keys import Secret
from ..payloads import Codec
from .work import Placement, Queue, WorkerRecord


@attrs.frozen
class Signal:
    """An unconsumed signal waiting in a workflow's inbox."""

    id: int
    name: str
    encoding: str
    payload: str | bytes
    sent_at: float


@attrs.frozen
class Opening:
    """What opening a run reads (:meth:`Store.opening`)."""

    info: WorkflowInfo | None  # the newest run's row; None: no such workflow (and no events)
    events: Iterator[Event]  # its history, as :meth:`Store.events` reads it
    signal_waits: bool  # an unconsumed signal of the name asked about waits in its inbox


@attrs.frozen
class Generation:
    """One run of a workflow id: its first, or one a continue-as-new or a restart began."""

    number: int  # 1 for the first
    status: Status
    created_at: float
    updated_at: float


_LATEST = 2.0**37  # seconds since the epoch (year 6325): a run's times beyond are damage


def info_from_row(row: Sequence[Any], where: str) -> WorkflowInfo:
    """A run's row ``(workflow_id, name, status, created_at, updated_at, custom_status, queue,
    problem)`` as the store lists it; a damaged row is a :class:`CorruptStoreError` naming ``where``."""
    try:
        custom = None if row[5] is None else json.loads(row[5])
        for at in row[3:5]:
            if type(at) not in (int, float) or not 0 <= at < _LATEST:  # NaN fails too
                raise ValueError(f"a time of {at!r}")
        return WorkflowInfo(row[0], row[1], Status(row[2]), row[3], row[4], custom, row[6], row[7])
    except (ValueError, TypeError, RecursionError) as exc:  # an unknown status, bad JSON, a time that is none
        raise CorruptStoreError(f"{where}: the row of run {row[0]!r} is damaged ({exc}). Nothing was changed; "
                                "restore the store from a backup.") from exc


def generation_from_row(row: Sequence[Any], workflow_id: str, where: str) -> Generation:
    """A run's ``(generation, status, created_at, updated_at)``; damage is a :class:`CorruptStoreError`."""
    info = info_from_row((workflow_id, "", row[1], row[2], row[3], None, None, None), where)
    if type(row[0]) is not int or row[0] < 1:
        raise CorruptStoreError(f"{where}: a row of run {workflow_id!r} is damaged (generation {row[0]!r}). "
                                "Nothing was changed; restore the store from a backup.")
    return Generation(row[0], info.status, info.created_at, info.updated_at)


def find_filters(statuses: Sequence[Status | str], workflows: Sequence[str], prefix: str, since: float | None,
                 until: float | None, mark: str) -> tuple[list[str], list[Any]]:
    """The conditions of :meth:`Store.find` as SQL (``mark``: the driver's placeholder) and their
    parameters. A row whose status is none of replaykit's (or none at all) passes the status filter:
    it is read, and refused as damaged, rather than hidden."""
    where: list[str] = []
    params: list[Any] = []
    if statuses:
        wanted = sorted({Status(s).value for s in statuses})
        every = [s.value for s in Status]
        where.append(f"(status IN ({', '.join([mark] * len(wanted))}) OR status NOT IN "
                     f"({', '.join([mark] * len(every))}) OR status IS NULL)")
        params += [*wanted, *every]
    if workflows:
        where.append(f"name IN ({', '.join([mark] * len(workflows))})")
        params += list(workflows)
    if prefix:
        where.append(f"substr(workflow_id, 1, {mark}) = {mark}")
        params += [len(prefix), prefix]
    if since is not None:
        where.append(f"created_at >= {mark}")
        params.append(since)
    if until is not None:
        where.append(f"created_at < {mark}")
        params.append(until)
    return where, params


def sql_limit(limit: int | None) -> int | None:
    """``limit`` for a query's ``LIMIT``: ``None`` for none (also for more rows than a 64-bit count)."""
    if limit is not None and limit < 0:
        raise ValueError(f"a limit counts runs: 0 or more, not {limit}")
    return None if limit is None or limit >= 2**63 else limit


def continued_status(was: Status | str) -> Status:
    """The status of a continued run's next generation, from the status of the run it continues:
    ``paused`` if a pause came during the step that continued it, else ``running``."""
    return Status.PAUSED if was in (Status.PAUSED, Status.PAUSED.value) else Status.RUNNING


def status_of(value: Any, workflow_id: str, where: str) -> Status:
    """A run row's status; an unknown one is a :class:`CorruptStoreError` naming ``where``."""
    try:
        return Status(value)
    except ValueError as exc:
        raise CorruptStoreError(f"{where}: the row of run {workflow_id!r} is damaged (status {value!r}). Nothing "
                                "was changed; restore the store from a backup.") from exc


UNSET: Any = object()
_S = TypeVar("_S", bound="Store")

Secrets = Secret | Sequence[Secret] | None  # what ``secret=`` takes: one, or several (the first signs)

RESTARTABLE = frozenset({Status.FAILED, Status.CANCELLED, Status.TIMED_OUT})  # what restart() accepts


class Store(abc.ABC):
    """Persistence for histories, signals and ownership. See ``SqliteStore``, ``MemoryStore``.

    A workflow id names a chain of runs: ``continue_as_new`` ends one and starts the
    next. ``info``, ``events`` and ``record`` address the newest run of the id.
    """

    networked = False  # each call is a round trip to a server (several driver threads overlap them)
    # May an engine record a run's start in its driver's open batch and open the run there? Only where
    # that batch cannot deadlock with another process's and a run's lock does not live in its rows
    # (SQLite: one writer at a time, locks in files). Elsewhere the caller of start() records it.
    batched_starts = False
    codec: Codec  # encodes the values recorded in this store; unpickles only what its keys signed

    @abc.abstractmethod
    def create(self, workflow_id: str, name: str, start: Event, status: Status = Status.RUNNING,
               history: Sequence[Event] = (), placement: Placement | None = None) -> bool:
        """Create the run with its start event (and ``history`` after it, in the same transaction);
        ``False`` (and no change) if the id exists. With a ``placement`` the run is queued: workers
        claim it (see :meth:`claim`)."""

    @abc.abstractmethod
    def info(self, workflow_id: str) -> WorkflowInfo | None:
        """The newest run's row, or ``None``."""

    @abc.abstractmethod
    def events(self, workflow_id: str) -> Iterator[Event]:
        """The newest run's history in ``seq`` order, read a page at a time (never loaded whole).

        No read outlives its call: an iterator that is abandoned half-way holds nothing
        open in the store (no statement, no snapshot). Raises ``WorkflowNotFoundError`` at once.
        """

    def generations(self, workflow_id: str) -> builtins.list[Generation]:
        """Every run of the id, oldest first: the last is the newest (what :meth:`events` reads), the
        others ended ``continued`` or were restarted. Raises ``WorkflowNotFoundError``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no older generations")

    def generation_events(self, workflow_id: str, number: int) -> Iterator[Event]:
        """The history of the id's ``number``-th run (see :meth:`generations`), read and checked as
        :meth:`events` reads the newest. Raises ``WorkflowNotFoundError`` if there is no such run."""
        raise NotImplementedError(f"{type(self).__name__} keeps no older generations")

    def delete(self, workflow_ids: Sequence[str], *, ended_before: float | None = None) -> builtins.list[str]:
        """Delete the runs of ``workflow_ids`` whose newest run has ended (before ``ended_before``, if
        given: its last status change): every generation, its events, its signals and its queue row,
        in one transaction. Returns the ids deleted; an id with no run, or whose newest run has not
        ended (restarted meanwhile, say) or ended since, is left alone.
        See :func:`replaykit.prune` for deleting by age with parents and children kept whole."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete runs")

    @abc.abstractmethod
    def last_event(self, workflow_id: str) -> Event | None:
        """The newest event of the newest run (its result, once it has ended)."""

    @abc.abstractmethod
    def record(self, workflow_id: str, event: Event, *, status: Status | None = None,
               consume_signal: int | None = None, custom_status: Any = UNSET) -> None:
        """Append one event in one transaction; optionally set the status or custom status,
        or consume a signal, in the same transaction."""

    def send(self, workflow_id: str, event: Event) -> None:
        """Append one event, as :meth:`record` does, but perhaps without waiting to learn that it was
        recorded: :meth:`confirm` waits, and raises what refused it. Until then this thread's other calls
        on the store confirm it first. The engine sends a step's result, moves the workflow to its next
        command meanwhile, and confirms before anything that must follow the step (an activity, a side
        effect, a lock's release). Stores whose writes cost no round trip record it at once."""
        self.record(workflow_id, event)

    def confirm(self) -> None:  # noqa: B027 - a store that records at once has nothing to wait for
        """Wait for what this thread :meth:`send`-ed; raise the error that refused it, if one did."""

    @abc.abstractmethod
    def continue_as_new(self, workflow_id: str, result: Event, start: Event) -> Status:
        """End the newest run with ``result`` (status ``continued``) and start the next with ``start``;
        returns its status: ``running``, or ``paused`` if the run it continues was (a pause that came
        during its last step)."""

    @abc.abstractmethod
    def restart(self, workflow_id: str, start: Event, history: Sequence[Event] = ()) -> None:
        """Start the id's next generation (``running``) with ``start`` and ``history``, atomically, if the
        newest run is failed, cancelled or timed out; ``IllegalTransitionError`` (no change) otherwise."""

    @abc.abstractmethod
    def set_custom_status(self, workflow_id: str, value: Any) -> None:
        """Store the newest run's custom status (JSON-able), as set by ``ctx.set_status``."""

    @abc.abstractmethod
    def set_status(self, workflow_id: str, status: Status, at: float) -> Status:
        """Move the newest run to ``status`` if that transition is legal; return the old status.

        Raises ``IllegalTransitionError`` otherwise, changing nothing.
        """

    @abc.abstractmethod
    def send_signal(self, workflow_id: str, name: str, encoding: str, payload: str | bytes,
                    at: float) -> None:
        """Put a signal in the id's inbox; raises ``WorkflowNotFoundError`` for unknown ids, and
        ``IllegalTransitionError`` if the newest run has ended (checked in the same transaction)."""

    def opening(self, workflow_id: str, signal: str | None = None) -> Opening:
        """The newest run's row and history and, if ``signal`` names one, whether a signal of that name
        waits unconsumed: what an engine reads to open a run, in one round trip where the store can."""
        info = self.info(workflow_id)
        if info is None:
            return Opening(None, iter(()), False)
        waits = signal is not None and self.next_signal(workflow_id, signal) is not None
        return Opening(info, self.events(workflow_id), waits)

    @abc.abstractmethod
    def next_signal(self, workflow_id: str, name: str) -> Signal | None:
        """The oldest unconsumed signal of that name, or ``None``."""

    @abc.abstractmethod
    def inbox(self) -> set[str]:
        """The workflow ids with signals not yet consumed (cheap: engines poll it)."""

    def inbox_of(self, names: Sequence[str]) -> set[str]:
        """The workflow ids with unconsumed signals of one of these names (control requests): one
        query in the stores here; this fallback asks each id of the inbox."""
        return {workflow_id for workflow_id in self.inbox()
                if any(self.next_signal(workflow_id, name) is not None for name in names)}

    @abc.abstractmethod
    def consume_signal(self, signal_id: int) -> None:
        """Mark a signal taken without recording an event (control requests)."""

    @abc.abstractmethod
    def list(self, status: Status | None = None) -> list[WorkflowInfo]:
        """The newest run of every id, optionally only those with ``status``."""

    def find(self, *, statuses: Sequence[Status | str] = (), workflows: Sequence[str] = (), prefix: str = "",
             since: float | None = None, until: float | None = None,
             limit: int | None = None) -> builtins.list[WorkflowInfo]:
        """The newest run of every id, newest first, with one of ``statuses`` (any if none), of one of
        ``workflows`` (by name), whose id starts with ``prefix``, created at ``since`` or later and
        before ``until``; at most ``limit``. Stores filter in their queries; this one in Python."""
        limit = sql_limit(limit)
        wanted = {Status(s) for s in statuses}
        found = [info for info in reversed(self.list())
                 if (not wanted or info.status in wanted) and (not workflows or info.name in workflows)
                 and info.workflow_id.startswith(prefix) and (since is None or info.created_at >= since)
                 and (until is None or info.created_at < until)]
        return found[:limit]

    def paused(self) -> set[str]:
        """The ids whose run is paused (cheap: engines poll it, so stores find them by index)."""
        return {info.workflow_id for info in self.list(Status.PAUSED)}

    @abc.abstractmethod
    def try_lock(self, workflow_id: str, keeper: str | None = None) -> bool:
        """Take the exclusive right to drive the run; ``False`` if someone alive holds it, or a live
        engine other than ``keeper`` keeps it out of memory (:meth:`keep`). ``keeper`` takes back a
        run it keeps, and its mark is cleared."""

    def try_lock_new(self, workflow_id: str) -> bool:
        """:meth:`try_lock` for a run the caller is about to create under the lock, and whose lock it
        gives back untouched if the run existed: no keeper can have marked it, so a store may skip
        reading the mark (an engine's start takes this lock for every new run)."""
        return self.try_lock(workflow_id)

    @abc.abstractmethod
    def unlock(self, workflow_id: str) -> None:
        """Give the right back."""

    @abc.abstractmethod
    def keep(self, workflow_id: str, keeper: str | None) -> None:
        """Mark the run, locked here, as kept by ``keeper`` (an engine about to give its lock up while
        it still drives it: ``store/keepers.py``); ``None`` clears the mark. Recorded with the open
        batch, before the unlock."""

    @abc.abstractmethod
    def keeper_of(self, workflow_id: str) -> str | None:
        """The keeper whose mark the run carries, if that keeper is alive (its engine has not closed
        or died) and the run has not ended; else ``None``."""

    @abc.abstractmethod
    def let_go(self, keeper: str) -> None:
        """``keeper``'s engine stops: every run it kept is free. Closing the store does the same."""

    @abc.abstractmethod
    def lock_owner(self, workflow_id: str) -> str | None:
        """Who holds the lock right now, as far as the system tells (for error messages)."""

    @abc.abstractmethod
    def changed(self) -> bool:
        """Cheap: has anyone committed anything since this thread's last call? A store may leave out
        plain steps (``record`` without options): they concern only the driver that wrote them."""

    # -- the work queue (see store/work.py) ----------------------------------------------
    #
    # A queued run's row says when it is ready and which worker holds it. Writes that give a
    # run something to do wake it (ready now): a signal, a resume, a restart, its child's end.
    # Its end makes it never ready again.

    @abc.abstractmethod
    def claim(self, worker_id: str, queue: str, workflows: Sequence[str], capacity: int, now: float,
              version: str) -> builtins.list[tuple[str, str]]:
        """Lock (as :meth:`try_lock`) up to ``capacity`` runs of ``queue`` that are ready at ``now``,
        running or pending, of a workflow named in ``workflows``, held by no worker and not
        refused by a worker of this code ``version``; mark them held by ``worker_id``; return their
        ``(workflow id, workflow name)``. Highest
        priority first, then longest ready. The queue's limits (:meth:`set_queue`) are checked in
        one serialised transaction per queue, so racing claims never exceed them."""

    @abc.abstractmethod
    def release(self, workflow_id: str, worker_id: str, wake_at: float | None, problem: str | None = None,
                version: str | None = None) -> None:
        """Worker ``worker_id`` gives a queued run back: ready again at ``wake_at`` (``None``: when
        something wakes it), or at once if something woke it while it was held. A no-op unless the
        run is held by ``worker_id`` (a worker declared dead must not undo its successor's claim).
        ``problem``: why it could not go on under code ``version`` (workers of that version leave it;
        others try it)."""

    @abc.abstractmethod
    def next_ready(self, queues: Sequence[str]) -> float | None:
        """The earliest time a run of ``queues`` held by nobody becomes ready, if any."""

    @abc.abstractmethod
    def set_queue(self, queue: Queue) -> None:
        """Store a queue's limits: what every claim in it checks from now on."""

    @abc.abstractmethod
    def register_worker(self, record: WorkerRecord) -> None:
        """Enter a worker in the registry and hold its liveness lock (the OS or the database drops
        it when the process or its connection dies). Runs marked as the worker's that it does not
        hold (``record.runs``) are released, ready at once: an earlier life of the id (a connection
        lost in an outage, a process restarted) may have failed to hand them back."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, stopping: bool = False) -> bool:
        """Note the worker is alive (on the store's clock); ``False`` if the registry no longer
        has it (it was declared dead and its runs released): register again."""

    @abc.abstractmethod
    def unregister_worker(self, worker_id: str) -> None:
        """Remove the worker; whatever it still holds is released, ready at once."""

    @abc.abstractmethod
    def workers(self) -> builtins.list[WorkerRecord]:
        """The registered workers, with the runs each holds."""

    @abc.abstractmethod
    def reap_workers(self, lease: float) -> builtins.list[str]:
        """Declare dead the workers whose liveness lock is free (their process or connection died) and
        release their runs, ready at once; return their ids. A worker silent for ``lease`` seconds
        that still holds its lock is cut off where the store can do it (PostgreSQL ends its
        session, which frees its locks; the next call reaps it)."""

    def batch(self) -> None:  # noqa: B027 - stores without transactions need no batching
        """Group this thread's writes into one transaction, until :meth:`commit` (group commit).

        A store may commit some of them sooner, where a commit costs less than a transaction's
        round trips (``PostgresStore``), but never a later write before an earlier one; and once
        a write of the batch has failed, it refuses the rest until :meth:`commit` raises."""

    def unbatch(self) -> None:  # noqa: B027 - stores without transactions need no batching
        """This thread's writes commit on their own again (its batch was committed last)."""

    def commit(self) -> None:  # noqa: B027
        """Commit what :meth:`batch` grouped: once it returns, all of it is durable and seen by all."""

    def end_idle_transactions_after(self, seconds: float) -> None:  # noqa: B027 - networked stores only
        """Have the server end a session of this store that sits that long inside a transaction (its
        process stopped or hung, holding locks others wait for). A worker sets its lease, for every user
        of the store object it is given. Nothing to do for stores without a server (SQLite, memory)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to release
        """Release resources, and the workflow locks taken through this store. Do not use it afterwards."""

    def __enter__(self: _S) -> _S:  # the store's own type: rk.SqliteStore(...) as store is an SqliteStore
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
