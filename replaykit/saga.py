"""``rk.Saga``: record compensations as steps succeed; run them in reverse when something fails.

    saga = rk.Saga()
    try:
        yield debit(source, amount)
        saga.add(credit, source, amount)          # undo of the debit
        yield credit(target, amount)
        saga.add(debit, target, amount)
        yield notify(target)
    except BaseException:
        yield from saga.compensate()               # durable: each undo is an activity, retried
        raise

Compensations are activities, so each is recorded and, with a retry policy (the
saga's, by default), retried; a crash during compensation resumes it where it was.
Run them inside ``ctx.shield()`` to keep a second cancellation from interrupting them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ParamSpec

from .activity import Activity
from .commands import Command
from .retry import Exponential, RetryPolicy

P = ParamSpec("P")
DEFAULT_POLICY = RetryPolicy(max_attempts=None, backoff=Exponential(1, 60))


class Saga:
    """Compensations collected as a workflow goes, run newest first by :meth:`compensate`."""

    def __init__(self, retry: RetryPolicy | None = DEFAULT_POLICY) -> None:
        self._retry = retry
        self._undo: list[tuple[Activity[Any], tuple[Any, ...], dict[str, Any]]] = []

    def add(self, activity: Activity[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Register ``activity(*args, **kwargs)`` as the undo of the step that just succeeded."""
        if not isinstance(activity, Activity):
            raise TypeError(f"Saga.add takes an @rk.activity, got {activity!r}")
        self._undo.append((activity, args, kwargs))

    def compensate(self) -> Generator[Command, Any, list[Any]]:
        """``yield from saga.compensate()``: run the compensations in reverse order; their results."""
        results = []
        while self._undo:
            activity, args, kwargs = self._undo.pop()
            if self._retry is not None and activity.retry is None:
                activity = Activity(activity.fn, activity.name, self._retry, activity.timeout,
                                    activity.schedule_to_close, activity.heartbeat_timeout)
            results.append((yield activity(*args, **kwargs)))
        return results
