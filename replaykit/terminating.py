"""``rk.terminate``: end a run now, without running any more of its code.

    rk.terminate("orders.db", "order-o-42", "bad input; refunded by hand")

Where :func:`replaykit.cancel` raises ``Cancelled`` at the run's yield (so its ``except`` and
``finally`` blocks and compensations run), terminate records the end itself. It is the way to end
a run whose code is gone or cannot replay its history any more.
"""

from __future__ import annotations

import time

from .control import TERMINATE_REQUEST, Db, cancel, end_cancelled, need, opened
from .errors import IllegalTransitionError, Terminated
from .retention import parent_of
from .store import Store


def terminate(db: Db, workflow_id: str, reason: str = "terminated", *, at: float | None = None) -> None:
    """End a run now, ``cancelled``, without running any more of its code: no ``except`` or
    ``finally`` block, no compensation. Its ``result()`` raises :class:`WorkflowTerminated`; its
    unfinished children are cancelled; activities still running are told (``rk.is_cancelled()``)
    and their results ignored.

    A run that no live process drives is ended here, at once: it needs neither an engine nor the
    workflow's code. One that an engine or a worker drives is ended by it, at its next poll.
    A run that has ended raises :class:`IllegalTransitionError`.
    """
    now = time.time() if at is None else at
    with opened(db) as store:
        _refuse_ended(store, workflow_id)
        if not store.try_lock(workflow_id):  # driven by a live process: it ends the run
            try:
                store.send_signal(workflow_id, TERMINATE_REQUEST, *store.codec.encode(reason, "terminate reason"),
                                  now)
            except IllegalTransitionError:  # it ended since we looked
                _refuse_ended(store, workflow_id)
                raise
            return
        try:  # nobody drives it, and nobody can until it has ended
            _refuse_ended(store, workflow_id)
            end_cancelled(store, workflow_id, Terminated(reason), now)
        finally:
            store.unlock(workflow_id)
        _cancel_children(store, workflow_id, now)


def _refuse_ended(store: Store, workflow_id: str) -> None:
    status = need(store, workflow_id)
    if status.is_terminal:
        raise IllegalTransitionError(f"workflow {workflow_id!r} is already {status.value}; nothing to terminate")


def _cancel_children(store: Store, workflow_id: str, at: float) -> None:
    """The parent-close policy, as an engine applies it when a parent it drives ends."""
    for info in store.list():
        if not info.status.is_terminal and parent_of(store, info.workflow_id) == workflow_id:
            try:
                cancel(store, info.workflow_id, "parent terminated", at=at)
            except IllegalTransitionError:  # it ended meanwhile
                pass
