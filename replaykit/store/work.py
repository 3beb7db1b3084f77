"""The work queue's data, and the one admission policy every store applies when workers claim runs.

A run started through a queue (``rk.Client.start``, or a child of such a run) has a work row
beside its history: its queue, priority and partition key, when it is next ready to be driven,
and which worker holds it. Workers claim ready rows; the store serialises each claim in a
limited queue, counts what the queue's limits allow (:func:`admit`), and locks what it admits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..errors import CorruptStoreError


def _positive(name: str) -> Callable[[object, attrs.Attribute[int | None], int | None], None]:
    def check(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"Queue {name} must be a whole number of at least 1 (or None: no limit); got {value!r}")
    return check


def _rate(_: object, __: attrs.Attribute[tuple[int, float] | None], value: tuple[int, float] | None) -> None:
    if value is None:
        return
    if (not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[0], int) or value[0] < 1
            or not isinstance(value[1], (int, float)) or value[1] <= 0):
        raise ValueError(f"Queue rate must be (starts, seconds), e.g. (100, 60.0) for 100 starts a minute; "
                         f"got {value!r}")


def _name(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a queue is named by a non-empty string; got {value!r}")


def _priority(value: object) -> None:
    if type(value) is not int or not -(2**31) <= value < 2**31:
        raise ValueError(f"a priority is an integer from -2**31 to 2**31 - 1 (higher first); got {value!r}")


@attrs.frozen
class Queue:
    """A named queue and its limits, as workers declare it (``rk.Worker(..., queues=[rk.Queue(...)])``).

    ``concurrency``: at most this many runs of the queue held at once across all workers.
    ``worker_concurrency``: at most this many on one worker. ``rate``: at most ``starts`` runs
    started per ``seconds`` (counted on the database's clock). ``per_key``: at most this many
    runs held at once per partition key (``client.start(..., key="tenant-7")``). Workers store
    the limits they are given; the last worker to start decides, so give every worker the same.
    """

    name: str = attrs.field(validator=lambda _, __, v: _name(v))
    concurrency: int | None = attrs.field(default=None, validator=_positive("concurrency"))
    worker_concurrency: int | None = attrs.field(default=None, validator=_positive("worker_concurrency"))
    rate: tuple[int, float] | None = attrs.field(default=None, validator=_rate)
    per_key: int | None = attrs.field(default=None, validator=_positive("per_key"))

    @property
    def limited(self) -> bool:
        """Does admission into this queue need the serialised count?"""
        return self.concurrency is not None or self.rate is not None or self.per_key is not None


@attrs.frozen
class Placement:
    """Where a queued run waits: set when the run is created."""

    queue: str = attrs.field(validator=lambda _, __, v: _name(v))
    priority: int = attrs.field(default=0, validator=lambda _, __, v: _priority(v))  # higher first
    key: str | None = None  # partition key (Queue.per_key)
    parent: str | None = None  # woken when this run ends
    ready_at: float | None = None  # None: at once


def queue_from_row(queue: str, row: Sequence[Any] | None, where: str) -> Queue:
    """The limits of ``queue`` from its row ``(concurrency, per_key, rate_starts, rate_seconds)`` (none
    if no row); a row no worker could have written is a :class:`CorruptStoreError` naming it."""
    if row is None:
        return Queue(queue)
    concurrency, per_key, starts, seconds = row
    rate = None if starts is None else (starts, seconds)
    try:
        return Queue(queue, concurrency=concurrency, per_key=per_key, rate=rate)
    except (ValueError, TypeError) as exc:
        raise CorruptStoreError(f"{where}: the limits of queue {queue!r} are damaged ({exc}). Nothing of the queue "
                                "was claimed; start a worker with the queue's limits (rk.Queue) to write them "
                                "again.") from exc


def worker_records(rows: Iterable[Sequence[Any]], held: dict[str, list[str]], where: str) -> list[WorkerRecord]:
    """The registry's rows ``(id, host, pid, queues, workflows, version, started_at, heartbeat_at,
    stopping)`` as records; a damaged row is a :class:`CorruptStoreError` naming ``where``."""
    try:
        return [WorkerRecord(r[0], r[1], r[2], tuple(json.loads(r[3])), tuple(json.loads(r[4])), r[5], r[6], r[7],
                             bool(r[8]), tuple(held.get(r[0], ()))) for r in rows]
    except (ValueError, TypeError, RecursionError) as exc:  # json's errors are ValueErrors
        raise CorruptStoreError(f"{where}: the worker registry holds a damaged row ({exc}); delete that worker's row "
                                "(it registers again when it runs)") from exc


@attrs.frozen
class WorkerRecord:
    """A worker as the registry lists it."""

    worker_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    workflows: tuple[str, ...]
    version: str
    started_at: float
    heartbeat_at: float  # on the store's clock
    stopping: bool
    runs: tuple[str, ...] = ()  # the runs it holds now


@attrs.frozen
class Candidate:
    """A ready run a claim may take."""

    workflow_id: str
    name: str
    key: str | None
    started: bool  # claimed before: taking it again is not a start (rate limits count starts)


@attrs.frozen
class Usage:
    """What a limited queue holds right now, counted inside the claim's serialised transaction."""

    held: int
    held_by_key: Mapping[str | None, int]
    recent_starts: int


class _Counts:
    """What the queue holds, as admission goes: what its limits are checked against."""

    def __init__(self, queue: Queue, usage: Usage | None) -> None:
        self.queue = queue
        self.held = usage.held if usage else 0
        self.starts = usage.recent_starts if usage else 0
        self.by_key: dict[str | None, int] = dict(usage.held_by_key) if usage else {}

    def copy(self) -> _Counts:
        twin = _Counts(self.queue, None)
        twin.held, twin.starts, twin.by_key = self.held, self.starts, dict(self.by_key)
        return twin

    def full(self) -> bool:
        return self.queue.concurrency is not None and self.held >= self.queue.concurrency

    def allows(self, c: Candidate) -> bool:
        q = self.queue
        if q.rate is not None and not c.started and self.starts >= q.rate[0]:
            return False  # a run already started (parked, now woken) needs no start from the rate
        return q.per_key is None or c.key is None or self.by_key.get(c.key, 0) < q.per_key

    def add(self, c: Candidate) -> None:
        self.held += 1
        self.starts += 0 if c.started else 1
        self.by_key[c.key] = self.by_key.get(c.key, 0) + 1


def admit(candidates: Iterable[Candidate], queue: Queue, usage: Usage | None, capacity: int,
          take: Callable[[list[Candidate]], set[str]]) -> list[Candidate]:
    """Take candidates in order while the queue's limits and ``capacity`` allow. ``take`` locks a
    batch of them at once and returns the ids it got (someone else holds the others: they are
    skipped, and the next admissible candidates tried in their place). ``usage`` is ``None`` for an
    unlimited queue."""
    candidates = list(candidates)
    counts = _Counts(queue, usage)
    taken: list[Candidate] = []
    pending = list(candidates)
    while pending and len(taken) < capacity and not counts.full():
        trial = counts.copy()  # as if every lock of the batch were taken
        batch: list[Candidate] = []
        rest: list[Candidate] = []
        for c in pending:
            if len(taken) + len(batch) < capacity and not trial.full() and trial.allows(c):
                batch.append(c)
                trial.add(c)
            else:
                rest.append(c)
        if not batch:
            break
        got = take(batch)
        for c in batch:
            if c.workflow_id in got:
                taken.append(c)
                counts.add(c)
        pending = rest
    order = {c.workflow_id: i for i, c in enumerate(candidates)}
    return sorted(taken, key=lambda c: order[c.workflow_id])  # a later round may take an earlier candidate
