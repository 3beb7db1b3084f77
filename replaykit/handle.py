"""``WorkflowHandle``: a reference to one workflow run, to wait on or inspect."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, cast

from . import payloads
from .clock import monotonic
from .commands import R
from .errors import (
    Cancelled,
    CorruptStoreError,
    ResultTimeoutError,
    Terminated,
    TimedOut,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotFoundError,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from .history import ERROR, RESULT, Event, Status, WorkflowInfo
from .payloads import Codec

if TYPE_CHECKING:
    from .store import Store


class WorkflowHandle(Generic[R]):
    """Returned by ``Engine.start`` and ``Engine.handle``; ``result()`` is an ``R``."""

    __slots__ = ("workflow_id", "_driven_here", "_store", "_poll", "_ended", "_wakeup", "_on_wait", "_error",
                 "_end_told")

    def __init__(self, workflow_id: str, store: Store, poll_interval: float = 0.05, *,
                 driven_here: bool = False) -> None:
        self.workflow_id = workflow_id
        self._driven_here = driven_here
        self._store = store
        self._poll = poll_interval
        self._ended = False  # finished or failed here; result() need not wait
        self._wakeup: threading.Event | None = None  # made by the first result() call
        self._on_wait: Callable[[int], None] | None = None  # told +1/-1 around result() (time skipping)
        self._error: BaseException | None = None
        self._end_told = False  # the engine's hooks were told a run it kept was terminated (told once)

    def _follow(self) -> None:
        """Another live process drives the run: ``result()`` waits for what the store records."""
        self._driven_here = False
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.set()

    def _fail(self, error: BaseException) -> None:
        """A local problem (lock held, non-determinism, ...): ``result()`` raises it."""
        self._error = error
        self._finish()

    def _finish(self) -> None:
        self._ended = True  # then wake a waiter; result() checks the flag after making the event
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.set()

    def status(self) -> Status:
        """The run's status as recorded in the store."""
        return self._info().status

    def custom_status(self) -> Any:
        """What the workflow last gave ``ctx.set_status`` (``None`` if nothing), as recorded in the store."""
        return self._info().custom_status

    def _info(self) -> WorkflowInfo:
        info = self._store.info(self.workflow_id)
        if info is None:
            raise WorkflowNotFoundError(f"no workflow with id {self.workflow_id!r}")
        return info

    def result(self, timeout: float | None = None) -> R:
        """Wait for the run to end and return its result.

        Raises :class:`WorkflowFailed` if the workflow raised,
        :class:`WorkflowCancelled` if it was cancelled (:class:`WorkflowTimedOut`
        if it ran past its timeout), the local error if this engine could not
        drive it (e.g. :class:`NonDeterminismError`), and
        :class:`ResultTimeoutError` after ``timeout`` seconds;
        :class:`WorkflowNotFoundError` if the store has no run of this id.
        """
        if self._on_wait is None:
            return self._wait_result(timeout)
        self._on_wait(+1)
        try:
            return self._wait_result(timeout)
        finally:
            self._on_wait(-1)

    def _wait_result(self, timeout: float | None) -> R:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if self._error is not None:
                raise self._error
            if not self._driven_here or self._ended:
                # ended here, its end committed (ended_with sees a restart since): no need to read its status
                if self._ended or self._store_says_ended():
                    last = ended_with(self._store, self.workflow_id)
                    if last is not None:  # else restarted since we looked: wait for the new generation
                        return self._outcome(last)
            if deadline is not None and monotonic() >= deadline:
                raise ResultTimeoutError(
                    f"workflow {self.workflow_id!r} has not finished after {timeout}s; it goes on running"
                )
            if self._wakeup is None:  # made only to wait: a run that ended needs none
                self._wakeup = threading.Event()
                continue  # _finish sets its flag, then wakes the event if there is one: look at the flags again
            wait = self._poll if deadline is None else min(self._poll, max(0.0, deadline - monotonic()))
            self._wakeup.wait(wait)
            self._wakeup.clear()  # the flags above say what woke us; a set event must not spin the loop

    def _store_says_ended(self) -> bool:
        info = self._store.info(self.workflow_id)
        if info is None:  # a handle of a start is driven here until its run is in the store: not asked then
            raise WorkflowNotFoundError(f"no workflow with id {self.workflow_id!r}: there is no run to wait for "
                                        "(check the id; a handle does not start a run)")
        return info.status.is_terminal

    def _outcome(self, last: Event) -> R:
        ok, value = recorded_outcome(self._store.codec, self.workflow_id, last)
        if ok:
            return cast(R, value)
        raise value

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.workflow_id!r}>"


def ended_with(store: Store, workflow_id: str) -> Event | None:
    """The result event a run seen ended ends with (its seal vouches for it); ``None`` if it was
    restarted since (its newest generation has not ended). A run whose store says it ended without
    one is damaged (or was changed by a writer without the secret)."""
    last = store.last_event(workflow_id)
    if last is None or last.kind != RESULT:
        info = store.info(workflow_id)
        if info is not None and not info.status.is_terminal:
            return None
        raise CorruptStoreError(
            f"the run {workflow_id!r} in {store} is damaged: it is marked as ended, but its history ends with "
            f"{'no event' if last is None else f'a {last.kind} event'}, not its result. Restore the store "
            "from a backup.")
    return last


def recorded_outcome(codec: Codec, workflow_id: str, result: Event) -> tuple[bool, Any]:
    """How a finished run ended, from its result event: ``(True, value)``, or ``(False, error)``.

    The one place that decides what ``handle.result()`` raises, and what a parent
    sees at the yield of a child that ended: :class:`WorkflowCancelled` (or
    :class:`WorkflowTimedOut`) when a cancellation (or the run timeout) ended
    it, else :class:`WorkflowFailed`. The rebuilt original exception is the
    error's ``__cause__``. A parent records what it saw in its own history, so
    histories recorded before cancelled children raised ``WorkflowCancelled``
    replay as they were recorded (with ``WorkflowFailed``).
    """
    if result.outcome != ERROR:
        return True, codec.decode(result.encoding, result.payload, lambda: f"result of {workflow_id!r}")
    cause = codec.decode_error(result.encoding, result.payload, lambda: f"error of {workflow_id!r}")
    error: Exception
    if isinstance(cause, Cancelled):
        ended = (WorkflowTimedOut if isinstance(cause, TimedOut)
                 else WorkflowTerminated if isinstance(cause, Terminated) else WorkflowCancelled)
        error = ended(workflow_id, str(cause))
    else:
        record = payloads.error_record(result.encoding, result.payload)
        error = WorkflowFailed(workflow_id, record["type"], record["message"], record["traceback"])
    error.__cause__ = cause
    return False, error
