"""``rk.terminate``: end a run now, without running more of its steps.

    rk.terminate("orders.db", "order-o-42", "bad input; refunded by hand")

Where :func:`replaykit.cancel` raises ``Cancelled`` at the run's yield (so its ``except`` blocks and
compensations run as steps), terminate records the end itself. It is the way to end a run whose
code is gone or cannot replay its history any more.
"""

from __future__ import annotations

import time

from .control import TERMINATE_REQUEST, Db, cancel, drop_requests, end_cancelled, need, opened
from .errors import IllegalTransitionError, ResultTimeoutError, Terminated
from .history import Status
from .retention import parent_of
from .store import Store

_POLL = 0.05  # seconds between looks at a run another process was asked to end


def terminate(db: Db, workflow_id: str, reason: str = "terminated", *, at: float | None = None,
              wait: float = 30.0) -> None:
    """End a run now, ``cancelled``, without running more of its steps: no activity, no compensation,
    nothing its code would yield is recorded. Its ``result()`` raises :class:`WorkflowTerminated`;
    its unfinished children are cancelled; activities still running are told
    (``rk.is_cancelled()``) and their results ignored.

    Returns once the run has ended. A run that no process holds is ended here, under its lock: it
    needs neither an engine nor the workflow's code. One that a process holds is asked to end it at
    its next poll; if that process lets the run go without ending it (its code could not replay the
    history, say), it is ended here. :class:`ResultTimeoutError` after ``wait`` seconds if the process
    holding it has done neither (the request stays, for it to apply);
    :class:`IllegalTransitionError` if the run has ended.
    """
    now = time.time() if at is None else at
    with opened(db) as store:
        if not request(store, workflow_id, reason, now):
            wait_ended(store, workflow_id, reason, now, wait)


def request(store: Store, workflow_id: str, reason: str, at: float, keeper: str | None = None) -> bool:
    """End the run if nobody holds it (``True``), else leave a request in its inbox (``False``).
    ``keeper``: the calling engine's, which ends a run it keeps out of memory itself."""
    _refuse_ended(store, workflow_id)
    if _end_if_free(store, workflow_id, reason, at, keeper):
        return True
    try:
        store.send_signal(workflow_id, TERMINATE_REQUEST, *store.codec.encode(reason, "terminate reason"), at)
    except IllegalTransitionError:  # it ended since we looked
        _refuse_ended(store, workflow_id)
        raise
    return False


def wait_ended(store: Store, workflow_id: str, reason: str, at: float, wait: float,
               keeper: str | None = None) -> None:
    """Until the run has ended: by the process that held it, or here once nobody holds it."""
    deadline = time.monotonic() + wait
    while not need(store, workflow_id).is_terminal:
        if _end_if_free(store, workflow_id, reason, at, keeper):
            return
        if time.monotonic() >= deadline:
            raise ResultTimeoutError(
                f"workflow {workflow_id!r} is held by {store.lock_owner(workflow_id) or 'another process'}, which "
                f"has not ended it after {wait:g}s; the request to terminate it stays in its inbox, applied when "
                "that process next polls it (or call terminate again once it lets the run go)")
        time.sleep(_POLL)


def _end_if_free(store: Store, workflow_id: str, reason: str, at: float, keeper: str | None = None) -> bool:
    """End the run under its lock, its children first, if nobody holds it and it has not ended. If
    ``keeper`` kept the run (its mark, cleared as it is taken) and ending it fails, it is marked again
    before the lock goes: the engine still keeps it."""
    kept = keeper is not None and store.keeper_of(workflow_id) == keeper
    if not store.try_lock(workflow_id, keeper=keeper):
        return False
    try:
        return end_locked(store, workflow_id, reason, at)
    except BaseException:
        if kept:
            store.keep(workflow_id, keeper)  # (if this fails too, the lock goes unmarked: said by the error)
        raise
    finally:
        store.unlock(workflow_id)


def end_locked(store: Store, workflow_id: str, reason: str, at: float) -> bool:
    """End a run the caller has locked, its children first; ``True`` once it has ended (here or before)."""
    if need(store, workflow_id).is_terminal:
        return True  # ended meanwhile, by whoever held it
    _cancel_children(store, workflow_id, at)
    drop_requests(store, workflow_id, TERMINATE_REQUEST)  # earlier calls' (or this one's): answered here
    end_cancelled(store, workflow_id, Terminated(reason), at)
    return True


def _refuse_ended(store: Store, workflow_id: str) -> None:
    status = need(store, workflow_id)
    if status.is_terminal:
        raise IllegalTransitionError(f"workflow {workflow_id!r} is already {status.value}; nothing to terminate")


def _cancel_children(store: Store, workflow_id: str, at: float) -> None:
    """The parent-close policy, as an engine applies it when a parent it drives ends: every unfinished
    run whose start names this one as its parent (each unfinished run's start is read)."""
    for info in store.find(statuses=[Status.RUNNING, Status.PENDING, Status.PAUSED]):
        if parent_of(store, info.workflow_id) == workflow_id:
            try:
                cancel(store, info.workflow_id, "parent terminated", at=at)
            except IllegalTransitionError:  # it ended meanwhile
                pass
