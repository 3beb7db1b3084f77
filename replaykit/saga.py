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
        raise                                      # (async def workflows: await saga.compensate())

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

    def compensate(self) -> Compensation:
        """``yield from saga.compensate()`` (``await saga.compensate()`` in an ``async def`` workflow): run
        the compensations in reverse order; their results."""
        return Compensation(self._steps())

    def _steps(self) -> Generator[Command, Any, list[Any]]:
        results = []
        while self._undo:
            activity, args, kwargs = self._undo.pop()
            if self._retry is not None and activity.retry is None:
                activity = Activity(activity.fn, activity.name, self._retry, activity.timeout,
                                    activity.schedule_to_close, activity.heartbeat_timeout)
            results.append((yield activity(*args, **kwargs)))
        return results


class Compensation(Generator[Command, Any, list[Any]]):
    """What :meth:`Saga.compensate` returns: ``yield from`` it in a generator workflow, ``await`` it in an
    ``async def`` one."""

    def __init__(self, steps: Generator[Command, Any, list[Any]]) -> None:
        self._steps = steps

    def send(self, value: Any) -> Command:
        return self._steps.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Command:
        if val is None and tb is None:
            return self._steps.throw(typ)
        return self._steps.throw(typ, val, tb)  # the old three-argument form, passed on as given

    def close(self) -> None:
        self._steps.close()

    def __await__(self) -> Generator[Any, Any, list[Any]]:
        return self._steps
