"""Runs kept out of memory by a live engine: the mark on the run's row, and its keeper's liveness.

An engine that evicts a run (``max_cached_runs``) gives up the run's lock, so that thousands of
parked runs do not hold thousands of locks. The run stays the engine's all the same: before its
lock is given up, its newest row is marked with the engine's *keeper* name (``runs.keeper``), and
the engine's store holds one lock for that name, the keeper's liveness lock, for as long as the
engine lives. ``try_lock`` in any other engine or process takes the run's lock, reads the mark,
and refuses the run while the keeper's liveness lock is held (it asks by trying to take it). A
killed process loses the liveness lock with its other locks, and its runs are free at once; an
engine that closes lets its keeper go. The keeper itself takes its run back and clears the mark.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from ..errors import CorruptStoreError, StoreError
from ..history import Status
from .base import status_of


def new_keeper() -> str:
    """A keeper name no other engine, here or anywhere, will ever use."""
    return os.urandom(16).hex()


def keeper_key(keeper: str) -> str:
    """The key of a keeper's liveness lock, apart from every workflow id's."""
    return "\0keeper " + keeper


def read_mark(mark: object, status: object, workflow_id: str, where: str) -> tuple[str | None, Status]:
    """A run row's keeper mark and status as read from the store: text (or none) and a known status,
    else the row is damaged (:class:`CorruptStoreError`); nothing is taken on a mark no engine wrote."""
    if mark is not None and not isinstance(mark, str):
        raise CorruptStoreError(f"{where}: the row of run {workflow_id!r} is damaged (keeper {mark!r}). Nothing "
                                "was changed; restore the store from a backup.")
    return mark, status_of(status, workflow_id, where)


class Keepers:
    """The liveness locks a store holds for its engines' keepers, and the check of another's mark.

    ``take`` and ``give`` take and give back a lock of the store's kind (by key, not blocking); ``holds``
    says if the store still holds one (a PostgreSQL session that ended lost its locks)."""

    def __init__(self, take: Callable[[str], bool], give: Callable[[str], None], holds: Callable[[str], bool]) -> None:
        self._take, self._give, self._holds = take, give, holds
        self._alive: set[str] = set()  # keepers whose liveness lock this store holds
        self._mutex = threading.Lock()

    def hold(self, keeper: str) -> None:
        """Take ``keeper``'s liveness lock (once: it is held until :meth:`let_go` or the store closes; taken
        again if the store lost it, so that the runs marked before are kept again from then on)."""
        with self._mutex:
            if keeper in self._alive and self._holds(keeper_key(keeper)):
                return
            if not self._take(keeper_key(keeper)):
                raise StoreError(f"the keeper {keeper!r} is held by another store: a keeper name is one engine's")
            self._alive.add(keeper)

    def let_go(self, keeper: str) -> None:
        """Give ``keeper``'s liveness lock back: the runs it marked are free for anyone."""
        with self._mutex:
            if keeper in self._alive:
                self._alive.discard(keeper)
                self._give(keeper_key(keeper))

    def refuses(self, mark: str | None, status: Status, keeper: str | None) -> bool:
        """Does a run marked ``mark`` (its row's keeper) with ``status`` stay with a live keeper other
        than ``keeper``? A run that ended, or whose keeper died or let go, is anyone's."""
        if mark is None or mark == keeper or status.is_terminal:
            return False
        with self._mutex:
            if mark in self._alive:  # another engine of this store keeps it
                return True
            if self._take(keeper_key(mark)):  # nobody holds it: that keeper is gone
                self._give(keeper_key(mark))
                return False
            return True
