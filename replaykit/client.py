"""The client: start, signal, cancel, pause, resume and query runs that workers drive.

A :class:`Client` drives nothing. It records a run as queued, and any worker serving that
queue (:class:`~replaykit.Worker`, on any machine sharing the store) claims and drives it.

>>> import replaykit as rk
>>> @rk.workflow
... def greet(ctx, name):
...     yield rk.sleep(0)
...     return f"hello {name}"
...
>>> store = rk.MemoryStore()
>>> client = rk.Client(store)
>>> handle = client.start(greet, "ada", workflow_id="greet-ada")
>>> with rk.Worker(store, workflows=[greet]):
...     handle.result(timeout=10)
'hello ada'
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from . import control
from .clock import instant, seconds
from .commands import A1, A2, A3, A4, A5, A6, R
from .handle import WorkflowHandle
from .history import OK, START, Event, Status, WorkflowInfo
from .starting import check_same_stored_run, check_workflow_id, start_payload
from .store import Store
from .store.base import Secrets
from .store.open import store_for
from .store.work import Placement, WorkerRecord
from .text import check_text
from .workflow import Workflow, as_workflow, check_arguments, register

if TYPE_CHECKING:
    from .workflow import Takes0, Takes1, Takes2, Takes3, Takes4, Takes5, Takes6


class Client:
    """Starts and controls runs in a store (an SQLite path, a ``postgresql://`` URL, or a
    :class:`Store`) without driving them: workers do. Thread-safe; ``close()`` when done (or
    use it as a context manager). ``workflows``: what :meth:`query` may replay, besides the
    workflows registered by ``@rk.workflow``."""

    def __init__(self, db: str | os.PathLike[str] | Store, *, durability: str = "crash",
                 workflows: Iterable[Any] = (), poll_interval: float = 0.05, secret: Secrets = None,
                 pickle: str = "signed") -> None:
        self.store: Store = store_for(db, durability=durability, secret=secret, pickle=pickle)
        self._own_store = not isinstance(db, Store)
        self._workflows = {w.name: w for w in map(as_workflow, workflows)}
        self._poll = poll_interval

    # Typed by arity, as Engine.start: positional arguments are checked against the workflow's parameters.
    @overload
    def start(self, workflow: Takes0[R], /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes1[A1, R], a1: A1, /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes2[A1, A2, R], a1: A1, a2: A2, /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes3[A1, A2, A3, R], a1: A1, a2: A2, a3: A3, /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes4[A1, A2, A3, A4, R], a1: A1, a2: A2, a3: A3, a4: A4, /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes5[A1, A2, A3, A4, A5, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes6[A1, A2, A3, A4, A5, A6, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Workflow[..., R], /, *,
              workflow_id: str, queue: str = "default", priority: int = 0, key: str | None = None,
              timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None,
              **kwargs: Any) -> WorkflowHandle[R]: ...

    def start(self, workflow: Any, /, *args: Any, workflow_id: str, queue: str = "default", priority: int = 0,
              key: str | None = None, timeout: timedelta | float | None = None, start_at: datetime | None = None,
              start_delay: timedelta | float | None = None, **kwargs: Any) -> WorkflowHandle[Any]:
        """Record the run ``workflow_id`` in ``queue``, for a worker to drive; returns once it is recorded.

        If the id exists with the same workflow and arguments, this is the same run (a retried
        start is harmless); otherwise :class:`WorkflowConflictError`. ``priority``: higher runs
        are claimed first. ``key``: the partition the queue's ``per_key`` limit counts. ``timeout``
        bounds the whole run; ``start_at`` / ``start_delay`` make it ``pending`` until then.
        """
        check_workflow_id(workflow_id)
        check_text(queue, "queue names the queue", 'queue="emails"')
        if key is not None:
            check_text(key, "key names the partition", 'key="customer-7"')
        self._may_start(workflow_id)
        wf = as_workflow(workflow)
        register(wf)
        now = time.time()
        begin = instant(start_at, "start_at") if start_at is not None else (
            now + seconds(start_delay) if start_delay is not None else None)
        check_arguments(wf, args, kwargs)
        payload = start_payload(self.store.codec, wf, args, kwargs, start_at=begin,
                                timeout=None if timeout is None else seconds(timeout, "a run's timeout"))
        start = Event(0, 0, START, wf.name, now, OK, *payload)
        placement = Placement(queue, priority, key, ready_at=begin)
        status = Status.PENDING if begin is not None else Status.RUNNING
        if not self.store.create(workflow_id, wf.name, start, status, placement=placement):
            check_same_stored_run(self.store, workflow_id, wf, args, kwargs)
        return self.handle(workflow_id)

    def _may_start(self, workflow_id: str) -> None:
        """Refuse a start (a stopping worker does)."""

    def handle(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle on an existing run: ``result(timeout)`` waits for its end, wherever it is driven."""
        return WorkflowHandle(workflow_id, self.store, self._poll)

    def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Deliver a signal to the run's inbox; a worker takes the run to hand it over."""
        control.send_signal(self.store, workflow_id, name, payload)

    def cancel(self, workflow_id: str, reason: str = "cancelled") -> None:
        """Raise :class:`Cancelled` at the run's current yield, wherever it is driven."""
        control.cancel(self.store, workflow_id, reason)

    def terminate(self, workflow_id: str, reason: str = "terminated", *, wait: float = 30.0) -> None:
        """End the run now, without running more of its steps (see :func:`replaykit.terminate`)."""
        from .terminating import terminate

        terminate(self.store, workflow_id, reason, wait=wait)

    def pause(self, workflow_id: str) -> None:
        """Stop the run at its next yield, durably, until :meth:`resume`."""
        control.pause(self.store, workflow_id)

    def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Let a paused run go on: the first free worker takes it."""
        control.resume(self.store, workflow_id)
        return self.handle(workflow_id)

    def query(self, workflow_id: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Answer a query from the run's replayed state, without advancing it."""
        return control.query(self.store, workflow_id, name, *args, workflows=self._workflows, **kwargs)

    def list(self, status: Status | None = None) -> list[WorkflowInfo]:
        """The newest run of every id, optionally only those with ``status``."""
        return self.store.list(status)

    def workers(self) -> builtins.list[WorkerRecord]:
        """The registered workers, with the runs each holds."""
        return self.store.workers()

    def close(self) -> None:
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.store!r}>"
