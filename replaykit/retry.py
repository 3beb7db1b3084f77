"""Retry policies for activities: how often, how long to wait between attempts, what not to retry.

Waits between attempts are durable timers (they survive a crash and are skipped
in the test environment), and every attempt's error is recorded. Jitter is
deterministic: drawn from the run's recorded seed, the step and the attempt.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from .clock import optional_seconds, seconds


@attrs.frozen
class Fixed:
    """The same wait before every retry."""

    delay: float = attrs.field(converter=seconds)

    def wait(self, attempt: int) -> float:
        return self.delay


@attrs.frozen
class Exponential:
    """``base``, then twice as long each retry, capped at ``max``."""

    base: float = attrs.field(default=1.0, converter=seconds)
    max: float = attrs.field(default=300.0, converter=seconds)

    def wait(self, attempt: int) -> float:
        return float(min(self.max, self.base * 2 ** (attempt - 1)))


@attrs.frozen
class Linear:
    """``increment`` more each retry, capped at ``max``."""

    increment: float = attrs.field(default=1.0, converter=seconds)
    max: float = attrs.field(default=300.0, converter=seconds)

    def wait(self, attempt: int) -> float:
        return float(min(self.max, self.increment * attempt))


Backoff = Fixed | Exponential | Linear


def _classes(value: Any) -> tuple[Any, ...]:
    """``non_retryable`` as a tuple: one class (or one mistaken name) given alone is a tuple of one."""
    return (value,) if isinstance(value, (type, str)) else tuple(value)


@attrs.frozen
class RetryPolicy:
    """When a failed activity is tried again.

    ``max_attempts`` counts the first attempt (``None``: retry until it succeeds, or
    until an operator intervenes, e.g. by cancelling the workflow or winning an
    ``rk.any`` against it with a signal). ``non_retryable`` exception types fail at
    once. ``max_elapsed`` bounds the time from the first attempt to the start of the
    last. ``jitter`` spreads each wait by up to that fraction, deterministically.
    """

    max_attempts: int | None = attrs.field(default=3)
    backoff: Backoff = attrs.field(factory=Exponential)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_classes)
    max_elapsed: float | None = attrs.field(default=None, converter=optional_seconds)
    jitter: float = attrs.field(default=0.0)

    @max_attempts.validator
    def _attempts(self, _: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (type(value) is not int or value < 1):
            raise ValueError(f"RetryPolicy max_attempts counts the first attempt: a whole number of at least 1 "
                             f"(1: no retry; None: no limit), not {value!r}")

    @backoff.validator
    def _backoff(self, _: attrs.Attribute[Backoff], value: Backoff) -> None:
        if not callable(getattr(value, "wait", None)):
            raise TypeError(f"RetryPolicy backoff is how long to wait between attempts: rk.Fixed(seconds), "
                            f"rk.Exponential(base, max) or rk.Linear(increment, max), not {value!r} "
                            "(a fixed wait of 5 s: backoff=rk.Fixed(5))")

    @non_retryable.validator
    def _non_retryable(self, _: attrs.Attribute[tuple[type[BaseException], ...]],
                       value: tuple[type[BaseException], ...]) -> None:
        for kind in value:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise TypeError("RetryPolicy non_retryable takes exception classes (non_retryable=(PermissionError,"
                                f")), not {kind!r}: import the class and give it, not its name")

    @jitter.validator
    def _jitter(self, _: attrs.Attribute[float], value: float) -> None:
        if type(value) not in (int, float) or not 0 <= value <= 1:
            raise ValueError(f"RetryPolicy jitter is a fraction of each wait, from 0 to 1; got {value!r}")

    def next_wait(self, error: BaseException, attempt: int, started: float, now: float, seed: int,
                  step: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to give up."""
        if isinstance(error, self.non_retryable):
            return None
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        wait = self.backoff.wait(attempt)
        if self.jitter:
            wait *= 1 + self.jitter * random.Random(f"{seed}:{step}:{attempt}").uniform(-1, 1)
        if self.max_elapsed is not None and now + wait - started > self.max_elapsed:
            return None
        return max(0.0, wait)
