"""Stepping a workflow by hand: the small ``ctx`` a plain unit test needs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..context import Context
from .timeskip import DEFAULT_START


class HandContext(Context):
    """A :class:`~replaykit.Context` whose time the test moves itself."""

    def advance(self, delta: timedelta | None = None, **kwargs: Any) -> None:
        """Move ``ctx.now()`` forward: ``ctx.advance(hours=1)`` or ``ctx.advance(timedelta(...))``."""
        step = delta if delta is not None else timedelta(**kwargs)
        if step < timedelta(0):
            raise ValueError("workflow time never goes backwards")
        self._time += step.total_seconds()


def fake_context(workflow_id: str = "test", *, now: datetime = DEFAULT_START, seed: int = 0) -> HandContext:
    """A context at a fixed time and seed, for driving a workflow generator yourself.

    >>> from datetime import datetime, timezone
    >>> import replaykit as rk
    >>> from replaykit.testing import fake_context
    >>> @rk.workflow
    ... def greet(ctx, name):
    ...     yield rk.sleep(60)
    ...     return f"hello {name} at {ctx.now():%H:%M}"
    >>> ctx = fake_context(now=datetime(2030, 1, 1, 9, 0, tzinfo=timezone.utc))
    >>> gen = greet(ctx, "ada")
    >>> next(gen) == rk.sleep(60)
    True
    >>> ctx.advance(minutes=1)
    >>> try:
    ...     gen.send(None)
    ... except StopIteration as done:
    ...     print(done.value)
    hello ada at 09:01
    """
    if now.tzinfo is None:
        raise ValueError(f"fake_context(now=...) needs a timezone-aware datetime, got {now!r}")
    return HandContext(workflow_id, seed=seed, start_time=now.timestamp())
