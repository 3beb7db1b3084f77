"""The ``ctx`` handed to every workflow: deterministic time, randomness and ids."""

from __future__ import annotations

import logging
import random as _random
import uuid
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from .commands import utc


class _ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logs like ``logger`` but stays silent while the workflow is replaying."""

    def __init__(self, logger: logging.Logger, ctx: Context) -> None:
        super().__init__(logger, {"workflow_id": ctx.workflow_id})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self._ctx.workflow_id}] {msg}", kwargs


class Context:
    """What a workflow may ask of the world without breaking replay.

    ``now()``, ``random()`` and ``uuid4()`` return the same values on every
    replay: time is the time recorded with the event that last resumed the
    workflow, and randomness comes from a seed recorded when it started.
    """

    def __init__(self, workflow_id: str, *, seed: int, start_time: float) -> None:
        self.workflow_id = workflow_id
        self.is_replaying = False
        self._time = start_time
        self._rng = _random.Random(seed)
        self.logger: logging.LoggerAdapter = _ReplayAwareLogger(  # type: ignore[type-arg]
            logging.getLogger("replaykit.workflow"), self
        )

    def now(self) -> datetime:
        """The workflow's current time, timezone-aware UTC; deterministic across replays."""
        return utc(self._time)

    def random(self) -> _random.Random:
        """A ``random.Random`` seeded per run; draws repeat exactly on replay."""
        return self._rng

    def uuid4(self) -> uuid.UUID:
        """A random-looking UUID (version 4) that is the same on every replay."""
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def __repr__(self) -> str:
        return f"<Context {self.workflow_id!r} replaying={self.is_replaying}>"
