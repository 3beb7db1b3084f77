"""Retention: delete the histories of runs that ended long enough ago, in batches.

    rk.prune("orders.db", older_than=timedelta(days=30))                 # completed, failed, ...
    rk.prune("orders.db", older_than=86400, statuses=["completed"], dry_run=True)

Only runs that ended are deleted (never a running, paused or pending one), and families stay
whole: a run that ended is kept while its parent has not ended (a parent replaying after a crash
reads its children's results from the store; a deleted child would run again), and a parent
that ended is kept while one of its children has not. Each batch is one short transaction, so
engines and workers sharing the store go on between batches.
"""

from __future__ import annotations

import io
import logging
import pickle
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from .clock import seconds
from .control import Db, opened
from .history import START, Status
from .keys import signed_body
from .store import Store
from .views import value_of

log = logging.getLogger("replaykit")

ENDED = tuple(s for s in Status if s.is_terminal)


def prune(db: Db, older_than: timedelta | float, *, statuses: Iterable[Status | str] = ENDED, batch: int = 500,
          now: float | None = None, dry_run: bool = False, stop: threading.Event | None = None) -> list[str]:
    """Delete the runs that ended (with one of ``statuses``) more than ``older_than`` ago (a timedelta or
    seconds), ``batch`` runs a transaction; returns their ids (with ``dry_run``, the ids it would delete).
    ``stop``: once set, no further batch is deleted.

    Raises ``ValueError`` for a status that has not ended (those runs are never deleted)."""
    if isinstance(statuses, (str, Status)):  # one status
        statuses = (statuses,)
    try:
        wanted = {Status(s) for s in statuses}
    except ValueError as exc:
        raise ValueError(f"statuses= takes statuses of runs that ended ({', '.join(s.value for s in ENDED)}): "
                         f"{exc}") from None
    live = sorted(s.value for s in wanted if not s.is_terminal)
    if live:
        raise ValueError(f"prune deletes only runs that ended; {', '.join(live)} runs are never deleted")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    cutoff = (time.time() if now is None else now) - seconds(older_than)
    deleted: list[str] = []
    with opened(db) as store:
        runs = store.list()
        unfinished = {info.workflow_id for info in runs if not info.status.is_terminal}
        waited_on = _waited_on(store, unfinished, stop)
        if waited_on is None:
            return deleted
        due = []
        for info in runs:
            if stop is not None and stop.is_set():
                return deleted
            if info.status in wanted and info.updated_at < cutoff and info.workflow_id not in waited_on \
                    and _parent_ended(parent_of(store, info.workflow_id), unfinished):
                due.append(info.workflow_id)
        for start in range(0, len(due), batch):
            if stop is not None and stop.is_set():
                break
            ids = due[start:start + batch]
            deleted += ids if dry_run else store.delete(ids, ended_before=cutoff)
    return deleted


def kept_for_family(store: Store, workflow_ids: Iterable[str]) -> dict[str, str]:
    """Which of ``workflow_ids`` their families still need, each with why: a run whose parent has not
    ended, or one with a child that has not (``replaykit delete`` keeps them, as a prune does)."""
    unfinished = {info.workflow_id for info in store.list() if not info.status.is_terminal}
    waited_on = _waited_on(store, unfinished, None) or set()
    kept = {}
    for workflow_id in workflow_ids:
        info = store.info(workflow_id)
        if info is None or not info.status.is_terminal:
            continue  # not deleted anyway: no such run, or it has not ended
        parent = parent_of(store, workflow_id, quiet=False)
        if workflow_id in waited_on:
            kept[workflow_id] = "one of its children has not ended"
        elif not _parent_ended(parent, unfinished):
            kept[workflow_id] = (f"its parent {parent!r} has not ended" if isinstance(parent, str)
                                 else "its start does not say whether its parent ended")
    return kept


def _waited_on(store: Store, unfinished: set[str], stop: threading.Event | None) -> set[str] | None:
    """The parents of the ``unfinished`` runs (``None`` once ``stop`` is set)."""
    waited_on: set[str] = set()
    for workflow_id in unfinished:
        if stop is not None and stop.is_set():
            return None
        parent = parent_of(store, workflow_id)
        if isinstance(parent, str):
            waited_on.add(parent)
        elif parent is UNKNOWN:
            waited_on.update(_id_parents(workflow_id))  # cannot tell: keep the parents its id may name
    return waited_on


class Retention:
    """An engine's retention (``Engine(retention=...)``): a thread that prunes the store every
    ``interval`` seconds, from the engine's start until it closes. A failed prune is logged and
    tried again at the next interval."""

    def __init__(self, store: Store, older_than: timedelta | float, interval: float, *,
                 own_store: bool = False) -> None:
        """``own_store``: ``store`` is this thread's alone (closed when it stops); engines give it one of
        its own, so that nothing it reads lands in the caches of the store the engine drives runs with."""
        self._store, self._older_than, self._interval, self._own_store = store, older_than, interval, own_store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replaykit-retention", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                deleted = prune(self._store, self._older_than, stop=self._stop)
                if deleted:
                    log.info("replaykit retention deleted %d runs that ended over %ss ago", len(deleted),
                             seconds(self._older_than))
            except Exception:
                log.exception("replaykit retention could not prune the store; it tries again in %ss", self._interval)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        """Stop pruning after the read or batch under way (see :meth:`join`)."""
        self._stop.set()

    def join(self) -> None:
        """Wait for the thread (after :meth:`stop`), then close the store it opened, if it did."""
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if self._own_store:
            self._store.close()


def _parent_ended(parent: str | None | _Unknown, unfinished: set[str]) -> bool:
    return parent is None or (isinstance(parent, str) and parent not in unfinished)


class _Unknown:
    """A run whose start event does not say plainly whether it has a parent (kept, to be safe)."""


UNKNOWN = _Unknown()


def parent_of(store: Store, workflow_id: str, *, quiet: bool = True) -> str | None | _Unknown:
    """The id of the run's parent, ``None`` if it has none, read from its start event without running
    anything from the store: a pickled start is read by an unpickler that builds no object but
    plain data (every class and function in it stands in as an inert placeholder). A start that
    cannot be read (gone meanwhile, damaged, no key to check it) is ``UNKNOWN`` if ``quiet``, else
    its error is raised (``replaykit delete`` says it)."""
    try:
        start = next(iter(store.events(workflow_id)), None)
    except Exception:  # gone meanwhile, or damaged: not for prune to judge
        if not quiet:
            raise
        return UNKNOWN
    if start is None or start.kind != START:
        return UNKNOWN
    try:
        if isinstance(start.payload, bytes):
            recorded = _Inert(io.BytesIO(signed_body(start.payload))).load()
        else:  # JSON, or a typed value's data
            recorded = value_of(start.encoding, start.payload)
    except Exception:
        return UNKNOWN
    if not isinstance(recorded, dict) or "args" not in recorded:
        return UNKNOWN
    parent = recorded.get("parent")
    if parent is None:
        return None
    return parent[0] if isinstance(parent, Sequence) and parent and isinstance(parent[0], str) else UNKNOWN


def _id_parents(workflow_id: str) -> set[str]:
    """The parents a child's default id may name: ``<parent>/<step>``, or ``<parent>#<n>/<step>`` (the
    parent's n-th generation), whichever it is."""
    head, slash, step = workflow_id.rpartition("/")
    if not (slash and step.isdigit() and head):
        return set()
    base, hash_, generation = head.rpartition("#")
    return {head, base} if hash_ and base and generation.isdigit() else {head}


class _Placeholder:
    """What an inert unpickling builds in place of any class or function: it accepts and ignores all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return _Placeholder()

    def __setstate__(self, state: Any) -> None:
        pass


class _Inert(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _Placeholder

    def persistent_load(self, pid: Any) -> Any:
        return _Placeholder()
