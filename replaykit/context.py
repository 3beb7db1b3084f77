"""The ``ctx`` handed to every workflow: deterministic time, randomness and ids."""

from __future__ import annotations

import logging
import random as _random
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from .commands import utc
from .payloads import plain_json
from .text import check_text


class _ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logs like ``logger`` but stays silent while the workflow is replaying."""

    def __init__(self, logger: logging.Logger, ctx: Context) -> None:
        super().__init__(logger, {"workflow_id": ctx.workflow_id})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self._ctx.workflow_id}] {msg}", kwargs


class _Patching(Protocol):
    """What decides ``ctx.patched()``: the machine running the workflow (from its history)."""

    def _patch(self, change_id: str, deprecated: bool) -> bool: ...


class Context:
    """What a workflow may ask of the world without breaking replay.

    ``now()``, ``random()`` and ``uuid4()`` return the same values on every
    replay: time is the time recorded with the event that last resumed the
    workflow, and randomness comes from a seed recorded when it started.
    """

    __slots__ = ("workflow_id", "is_replaying", "seed", "_time", "_rng", "_logger", "_shield_depth", "_queries",
                 "custom_status", "_patching", "__dict__")

    def __init__(self, workflow_id: str, *, seed: int, start_time: float) -> None:
        self.workflow_id = workflow_id
        self.is_replaying = False
        self.seed = seed
        self._time = start_time
        self._rng: _random.Random | None = None  # made on first use: 2.5 KB a parked run need not carry
        self._logger: logging.LoggerAdapter | None = None  # type: ignore[type-arg]
        self._shield_depth = 0
        self._queries: dict[str, Callable[..., Any]] | None = None
        self.custom_status: Any = None
        # Set by the interpreter: answers patched()/deprecate_patch() from the history.
        self._patching: _Patching | None = None  # None: no history, so the new path

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that stays silent while the workflow replays."""
        if self._logger is None:
            self._logger = _ReplayAwareLogger(logging.getLogger("replaykit.workflow"), self)
        return self._logger

    def now(self) -> datetime:
        """The workflow's current time, timezone-aware UTC; deterministic across replays."""
        return utc(self._time)

    def random(self) -> _random.Random:
        """A ``random.Random`` seeded per run; draws repeat exactly on replay."""
        if self._rng is None:
            self._rng = _random.Random(self.seed)
        return self._rng

    def uuid4(self) -> uuid.UUID:
        """A random-looking UUID (version 4) that is the same on every replay."""
        return uuid.UUID(int=self.random().getrandbits(128), version=4)

    # -- versioning ---------------------------------------------------------------

    def patched(self, change_id: str) -> bool:
        """``True`` on the new code path: for runs that reach this point after the change.

        A run that passed this point before the change (its history has no marker
        for ``change_id``) gets ``False`` and keeps the old path, so it replays::

            if ctx.patched("send-sms"):
                yield send_sms(user)
            else:
                yield send_email(user)

        Once no run still needs the old path, replace the call by
        :meth:`deprecate_patch` and drop the old branch.
        """
        check_text(change_id, "the patch's id", 'ctx.patched("send-sms")')
        return True if self._patching is None else self._patching._patch(change_id, False)

    def deprecate_patch(self, change_id: str) -> None:
        """The successor of ``patched(change_id)`` once only the new path remains: histories with
        or without the marker both replay."""
        check_text(change_id, "the patch's id", 'ctx.deprecate_patch("send-sms")')
        if self._patching is not None:
            self._patching._patch(change_id, True)

    # -- cancellation ---------------------------------------------------------------

    @contextmanager
    def shield(self) -> Iterator[None]:
        """Defer cancellation: inside, ``rk.Cancelled`` is not raised; it is raised at the
        first yield after the block (if the workflow was cancelled meanwhile)."""
        self._shield_depth += 1
        try:
            yield
        finally:
            self._shield_depth -= 1

    # -- what the outside may read ---------------------------------------------------

    def query(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a read-only query handler, answered from replayed state::

            @ctx.query("progress")
            def progress():
                return {"done": done, "total": total}
        """
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.set_query_handler(name, fn)
            return fn

        return register

    def set_query_handler(self, name: str, fn: Callable[..., Any]) -> None:
        """Same as the :meth:`query` decorator."""
        if self._queries is None:  # most runs answer no query: a parked run carries no empty dict
            self._queries = {}
        self._queries[name] = fn

    def set_status(self, value: Any) -> None:
        """Custom progress, JSON data (a str or int enum member reads back as its value), visible from
        outside as ``handle.custom_status()``."""
        # a copy, as the store reads it back: a change to ``value`` after this call is not the status
        self.custom_status = plain_json(value, "ctx.set_status's value (the run's custom status)")

    def __repr__(self) -> str:
        return f"<Context {self.workflow_id!r} replaying={self.is_replaying}>"
