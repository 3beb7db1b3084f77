"""Lifecycle hooks: ``engine.on("run_completed", callback)``.

An engine tells its subscribers what really happens to the runs it drives, once each: a run
created, started, resumed from its history, a step completed, failed or retried, a run suspended
(waiting on a timer, a signal or a child), paused, continued as new, and how it ended. Replaying a
history tells nothing (what it replays happened before, and was told then).

Callbacks run on a thread of their own, in the order things happened, after what they tell of is
committed to the store: a slow callback never holds up the engine, and an exception in one is
logged and changes nothing. At most once: a crash after the commit and before the callback loses
it (the store has the truth; the hooks are for watching it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

import attrs

log = logging.getLogger("replaykit")

EVENTS = (
    "run_created", "run_started", "run_resumed", "step_completed", "step_failed", "step_retried", "run_suspended",
    "run_paused", "run_continued", "run_completed", "run_failed", "run_cancelled", "run_timed_out",
)
ALL = "*"


@attrs.frozen
class HookEvent:
    """What happened (``kind``, one of :data:`EVENTS`), to which run, when (the engine's clock).

    ``step``, ``command`` (e.g. ``"activity charge"``) and ``attempt`` name the step of a ``step_*``
    event, and ``started`` is when that attempt began (an activity's; a timer's or a signal's:
    when it was yielded). ``error`` is the exception of a failed or retried step, or of a run that
    failed, was cancelled or timed out. ``took``: seconds from a step's yield to its answer (its
    retries included), or from the start of a run's generation to its end (workflow time).
    ``generation`` (1, then one more per continue-as-new or restart) and ``run_started_at`` (its start
    event's time) say which run of the id it is, the same in every process that drives it; ``None``
    for ``run_created``."""

    kind: str
    workflow_id: str
    workflow: str
    at: float
    step: int | None = None
    command: str | None = None
    attempt: int | None = None
    error: BaseException | None = None
    took: float | None = None
    started: float | None = None
    generation: int | None = None
    run_started_at: float | None = None


Callback = Callable[[HookEvent], object]


class Told(Protocol):
    """What tells lifecycle events: an ``rk.Engine`` or an ``rk.Worker``."""

    def on(self, event: str, callback: Callback) -> Callable[[], None]: ...


def subscribe(told: Told, subscriber: object) -> Callable[[], None]:
    """Subscribe each method of ``subscriber`` named after an event (``def run_failed(self, event)``);
    returns a function that unsubscribes them all. An object with none is a ``TypeError``."""
    methods = {kind: getattr(subscriber, kind) for kind in EVENTS if callable(getattr(subscriber, kind, None))}
    if not methods:
        raise TypeError(f"{type(subscriber).__name__} has no method named after a lifecycle event: define one or "
                        f"more of {', '.join(EVENTS)} (each takes the rk.HookEvent)")
    offs = [told.on(kind, method) for kind, method in methods.items()]

    def off() -> None:
        for unsubscribe in offs:
            unsubscribe()

    return off


class Hooks:
    """An engine's subscribers and the thread that calls them."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callback]] = {}
        self._queue: queue.SimpleQueue[HookEvent | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def on(self, kind: str, callback: Callback) -> Callable[[], None]:
        if kind != ALL and kind not in EVENTS:
            raise ValueError(f"{kind!r} is not a lifecycle event; subscribe to one of {', '.join(EVENTS)}, or '*'")
        with self._mutex:
            self._subscribers.setdefault(kind, []).append(callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="replaykit-hooks", daemon=True)
                self._thread.start()

        def off() -> None:
            with self._mutex:
                if callback in self._subscribers.get(kind, []):
                    self._subscribers[kind].remove(callback)

        return off

    def wants(self, kind: str) -> bool:
        return bool(self._subscribers.get(kind) or self._subscribers.get(ALL))

    def emit(self, event: HookEvent) -> None:
        self._queue.put(event)

    def _serve(self) -> None:
        while (event := self._queue.get()) is not None:
            with self._mutex:
                callbacks = [*self._subscribers.get(event.kind, ()), *self._subscribers.get(ALL, ())]
            for callback in callbacks:
                try:
                    callback(event)
                except Exception:
                    log.exception("replaykit: a %s hook failed (%r); the run goes on", event.kind, callback)

    def close(self) -> None:
        """Tell what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            if threading.current_thread() is not self._thread:
                self._thread.join()
