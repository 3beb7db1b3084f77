"""Operations on workflow runs that work from any process with the store: the engine
driving a run notices them within its ``poll_interval``.

    rk.send_signal("orders.db", "order-o-42", "approved", True)
    rk.cancel("orders.db", "order-o-42")
    rk.pause("orders.db", "order-o-42"); rk.resume("orders.db", "order-o-42")
    rk.query("orders.db", "order-o-42", "progress")
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import Cancelled, CorruptStoreError, IllegalTransitionError, UnknownQueryError, WorkflowNotFoundError
from .history import ERROR, PATCH, RESULT, Event, Status
from .interpreter import replay_history
from .starting import started_by
from .store import Store, open_store
from .store.open import open_to_read
from .text import check_text
from .workflow import Workflow, lookup

CANCEL_REQUEST = "__replaykit_cancel__"  # control messages in the run's signal inbox
TERMINATE_REQUEST = "__replaykit_terminate__"  # see terminating.py
REQUESTS = (TERMINATE_REQUEST, CANCEL_REQUEST)

Db = str | os.PathLike[str] | Store


@contextmanager
def opened(db: Db, *, reading: bool = False) -> Iterator[Store]:
    """A store for ``db``: the given one, or an existing one (an SQLite path or a PostgreSQL URL) opened
    (and closed) here; only to be read if ``reading`` (see :func:`~replaykit.store.open.open_to_read`).

    These operations only act on runs that exist: a path with no store raises
    :class:`StoreNotFoundError`, and nothing is created.
    """
    if isinstance(db, Store):
        yield db
        return
    store = open_to_read(db) if reading else open_store(db, create=False)
    try:
        yield store
    finally:
        store.close()


def need(store: Store, workflow_id: str) -> Status:
    info = store.info(workflow_id)
    if info is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {_where(store)}")
    return info.status


def _where(store: Store) -> str:
    return getattr(store, "path", None) or getattr(store, "url", None) or type(store).__name__


def send_signal(db: Db, workflow_id: str, name: str, payload: Any = None, *, at: float | None = None) -> None:
    """Send a signal from any process: ``rk.send_signal("orders.db", "order-o-42", "approved", True)``.

    The engine driving the run (in this or another process) picks it up within its
    ``poll_interval``; if the run is not waiting for it yet, it waits in the run's inbox.
    A run that has ended takes no more signals: :class:`IllegalTransitionError`.
    """
    check_text(name, "the signal's name", '"approved"')
    with opened(db) as store:
        encoded = store.codec.encode(payload, f"payload of signal {name!r} to {workflow_id!r}")
        store.send_signal(workflow_id, name, *encoded, time.time() if at is None else at)


def cancel(db: Db, workflow_id: str, reason: str = "cancelled", *, at: float | None = None) -> None:
    """Ask for a run to be cancelled: ``rk.Cancelled`` is raised at its current yield, so
    ``except``/``finally`` blocks and compensations run. A run that has not started yet
    (``pending``, and not being started) ends ``cancelled`` at once; a paused one is resumed to be
    cancelled."""
    now = time.time() if at is None else at
    with opened(db) as store:
        status = need(store, workflow_id)
        if status.is_terminal:
            raise IllegalTransitionError(f"workflow {workflow_id!r} is already {status.value}; nothing to cancel")
        if status is Status.PENDING and _ended_if_pending(store, workflow_id, Cancelled(reason), now):
            return
        if status is Status.PAUSED:
            store.set_status(workflow_id, Status.RUNNING, now)
        try:
            store.send_signal(workflow_id, CANCEL_REQUEST, *store.codec.encode(reason, "cancel reason"), now)
        except IllegalTransitionError:  # it ended since we looked
            raise IllegalTransitionError(f"workflow {workflow_id!r} is already {need(store, workflow_id).value}; "
                                         "nothing to cancel") from None


def _ended_if_pending(store: Store, workflow_id: str, error: Cancelled, at: float) -> bool:
    """End a run that has not started, under its lock: whoever holds it is starting the run (its status
    written, not yet committed), and is asked instead, like the driver of any run."""
    if not store.try_lock(workflow_id):
        return False
    try:
        if need(store, workflow_id) is not Status.PENDING:  # started (and given up) since it was looked at
            return False
        end_cancelled(store, workflow_id, error, at)
        return True
    finally:
        store.unlock(workflow_id)


def drop_requests(store: Store, workflow_id: str, *names: str) -> None:
    """Consume the run's waiting control messages of ``names``: answered, or meant for a run that ended."""
    for name in names:
        while (waiting := store.next_signal(workflow_id, name)) is not None:
            store.consume_signal(waiting.id)


def end_cancelled(store: Store, workflow_id: str, error: Cancelled, at: float) -> None:
    """Record ``error`` as the result of a run nobody drives (it ends ``cancelled``)."""
    last = store.last_event(workflow_id)
    if last is None:
        raise CorruptStoreError(f"the run {workflow_id!r} in {_where(store)} is damaged: it has no start event. "
                                "Restore the store from a backup.")
    result = Event(last.seq + 1, 0, RESULT, "", at, ERROR, *store.codec.encode_error(error))
    store.record(workflow_id, result, status=Status.CANCELLED)


def pause(db: Db, workflow_id: str, *, at: float | None = None) -> None:
    """Stop a run at its next yield (durably: it stays paused across restarts) until :func:`resume`."""
    with opened(db) as store:
        need(store, workflow_id)
        store.set_status(workflow_id, Status.PAUSED, time.time() if at is None else at)


def resume(db: Db, workflow_id: str, *, at: float | None = None) -> None:
    """Let a paused run go on (an engine that drives or recovers it continues it)."""
    with opened(db) as store:
        status = need(store, workflow_id)
        if status is not Status.PAUSED:
            raise IllegalTransitionError(f"workflow {workflow_id!r} is {status.value}, not paused")
        store.set_status(workflow_id, Status.RUNNING, time.time() if at is None else at)


def runs_without_patch(db: Db, change_id: str, *, workflow: Workflow[Any] | str | None = None) -> list[str]:
    """Unfinished runs whose history has no ``ctx.patched(change_id)`` marker: the runs that may
    still take the old code path. Deprecate (then drop) a patch only once this list is empty.
    ``workflow`` (the workflow the patch is in, or its name): only its runs, so that runs of other
    workflows (a schedule's, which never ends) do not keep the list from emptying."""
    name = workflow if workflow is None or isinstance(workflow, str) else workflow.name
    with opened(db, reading=True) as store:
        found = []
        for info in store.list():
            if info.status.is_terminal or (name is not None and info.name != name):
                continue
            if not any(e.kind == PATCH and e.name == change_id for e in store.events(info.workflow_id)):
                found.append(info.workflow_id)
        return found


def query(db: Db, workflow_id: str, name: str, *args: Any, workflows: dict[str, Workflow[Any]] | None = None,
          **kwargs: Any) -> Any:
    """Answer a query from the run's replayed state, without advancing it (any process, any status).

    The workflow registers handlers with ``@ctx.query("name")``; the history is
    replayed silently in a fresh interpreter and the handler is called on the result.
    """
    with opened(db, reading=True) as store:
        info = store.info(workflow_id)
        if info is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {_where(store)}")
        events = (e for e in store.events(workflow_id) if e.kind != RESULT)  # streamed, not loaded whole
        start = started_by(workflow_id, info.name, next(events, None))
        wf = lookup(start.name, workflows)
        machine, _ = replay_history(wf, workflow_id, start, events, codec=store.codec, quiet=True)
    try:
        queries = machine.ctx._queries or {}
        handler = queries.get(name)
        if handler is None:
            known = ", ".join(sorted(queries)) or "none"
            raise UnknownQueryError(f"workflow {workflow_id!r} ({wf.name}) has no query {name!r}; it answers: {known}")
        return machine.in_context(handler, *args, **kwargs)
    finally:
        machine.discard()
