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
import json
import logging
import pickle
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from .control import Db, opened
from .history import START, Status
from .keys import signed_body
from .starting import seconds
from .store import Store

log = logging.getLogger("replaykit")

ENDED = tuple(s for s in Status if s.is_terminal)


def prune(db: Db, older_than: timedelta | float, *, statuses: Iterable[Status | str] = ENDED, batch: int = 500,
          now: float | None = None, dry_run: bool = False, stop: threading.Event | None = None) -> list[str]:
    """Delete the runs that ended (with one of ``statuses``) more than ``older_than`` ago (a timedelta or
    seconds), ``batch`` runs a transaction; returns their ids (with ``dry_run``, the ids it would delete).
    ``stop``: once set, no further batch is deleted.

    Raises ``ValueError`` for a status that has not ended (those runs are never deleted)."""
    wanted = {Status(s) for s in statuses}
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
        waited_on = {parent_of(store, w) for w in unfinished}  # parents with a child that has not ended
        due = [info.workflow_id for info in runs if info.status in wanted and info.updated_at < cutoff
               and info.workflow_id not in waited_on]
        due = [w for w in due if _parent_ended(parent_of(store, w), unfinished)]
        for start in range(0, len(due), batch):
            if stop is not None and stop.is_set():
                break
            ids = due[start:start + batch]
            deleted += ids if dry_run else store.delete(ids)
    return deleted


class Retention:
    """An engine's retention (``Engine(retention=...)``): a thread that prunes the store every
    ``interval`` seconds, from the engine's start until it closes. A failed prune is logged and
    tried again at the next interval."""

    def __init__(self, store: Store, older_than: timedelta | float, interval: float) -> None:
        self._store, self._older_than, self._interval = store, older_than, interval
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
        """Stop pruning (after the batch under way) and wait for the thread."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


def _parent_ended(parent: str | None | _Unknown, unfinished: set[str]) -> bool:
    return parent is None or (isinstance(parent, str) and parent not in unfinished)


class _Unknown:
    """A run whose start event does not say plainly whether it has a parent (kept, to be safe)."""


UNKNOWN = _Unknown()


def parent_of(store: Store, workflow_id: str) -> str | None | _Unknown:
    """The id of the run's parent, ``None`` if it has none, read from its start event without running
    anything from the store: a pickled start is read by an unpickler that builds no object but
    plain data (every class and function in it stands in as an inert placeholder)."""
    try:
        start = next(iter(store.events(workflow_id)), None)
    except Exception:  # gone meanwhile, or damaged: not for prune to judge
        return UNKNOWN
    if start is None or start.kind != START:
        return UNKNOWN
    try:
        if isinstance(start.payload, bytes):
            recorded = _Inert(io.BytesIO(signed_body(start.payload))).load()
        else:
            recorded = json.loads(start.payload)
        parent = recorded.get("parent")
    except Exception:
        return UNKNOWN
    if parent is None:
        return None
    return parent[0] if isinstance(parent, Sequence) and parent and isinstance(parent[0], str) else UNKNOWN


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
