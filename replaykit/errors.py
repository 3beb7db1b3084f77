"""Every exception replaykit raises, in one place.

All derive from :class:`ReplayKitError`; where a builtin exception fits too
(``TypeError``, ``LookupError``, ``TimeoutError``) the class also derives from
it, so ``except TypeError`` keeps working for code that does not know us.
"""

from __future__ import annotations

from typing import Any


class ReplayKitError(Exception):
    """Base class of every error raised by replaykit.

    Every subclass pickles with its attributes intact, whatever its constructor
    takes, so an error recorded in a history is raised again, the same, on replay.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[ReplayKitError], args: tuple[Any, ...], state: dict[str, Any]) -> ReplayKitError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class NonDeterminismError(ReplayKitError):
    """Workflow code no longer walks the path its recorded history took.

    Raised while replaying, before anything new is recorded: fix the code (or
    guard the change with ``ctx.patched``) and run again; the history is intact.
    """

    def __init__(self, workflow_id: str, seq: int, recorded: str, now: str, where: str, diff: str = "") -> None:
        self.workflow_id = workflow_id
        self.seq = seq
        self.recorded = recorded
        self.now = now
        self.where = where
        self.diff = diff
        super().__init__(
            f"workflow {workflow_id!r} is not deterministic at step {seq} ({where}):\n"
            f"  history recorded: {recorded}\n"
            f"  code now yields:  {now}\n"
            + (f"{diff}\n" if diff else "")
            + "Workflow code must make the same calls in the same order on every run. Undo the change, "
            "or guard it with `if ctx.patched(\"<change-id>\"):` so that runs recorded before it keep "
            "the old path (docs/versioning.md). Nothing was recorded."
        )


class InvalidCommandError(ReplayKitError, TypeError):
    """A workflow yielded (or awaited) something that is not a replaykit command."""


class NotAWorkflowError(ReplayKitError, TypeError):
    """Something other than a generator function or ``async def`` was given as a workflow."""


class SerializationError(ReplayKitError, TypeError):
    """A value that has to be recorded can be neither JSON-encoded nor pickled."""


class UnknownWorkflowError(ReplayKitError, LookupError):
    """A stored history names a workflow that this process has not registered."""


class UnknownQueryError(ReplayKitError, LookupError):
    """``rk.query`` named a query the run's workflow does not answer (the message lists those it does)."""


class WorkflowConflictError(ReplayKitError):
    """A workflow id is already taken by a run of another workflow or with other arguments."""


class WorkflowNotFoundError(ReplayKitError, LookupError):
    """No workflow with this id exists in the store."""


class WorkflowLockedError(ReplayKitError):
    """Another live process (or engine) is driving this workflow right now."""


class WorkflowPausedError(ReplayKitError):
    """The run is paused: nothing drives it until it is resumed (``rk.resume``, ``replaykit resume``)."""


class ResultTimeoutError(ReplayKitError, TimeoutError):
    """``handle.result(timeout=...)`` gave up waiting; the workflow goes on."""


class EngineClosedError(ReplayKitError, RuntimeError):
    """The engine was closed (or its driver stopped) before it could record what was asked of it."""


class StoreError(ReplayKitError):
    """Base class of problems with the database behind a store."""


class NotAStoreError(StoreError):
    """The file exists and holds data, but was not written by replaykit; it is left untouched."""


class StoreTooNewError(StoreError):
    """The store was written by a newer replaykit, whose format this version cannot read."""


class CorruptStoreError(StoreError):
    """The store is damaged or was tampered with: SQLite cannot read the file, or a recorded value
    fails its check. Nothing read from it was used."""


class PayloadAuthenticationError(CorruptStoreError):
    """A pickled value read from a store is not signed with the store's key (written by someone
    else, damaged, or signed with another secret): it was not unpickled, so nothing ran."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """A command that only reads was given a store path that does not exist (nothing is created),
    or the directory meant to hold a new store does not exist."""


class StoreFullError(StoreError, OSError):
    """The disk (or a file size limit) is full: nothing more can be recorded. What was recorded
    before is intact; free space and run again, and the run continues where it stopped."""


class MigrationRequiredError(StoreError):
    """The store was written before histories were checksummed: checksumming its rows vouches for
    them as they stand, so it is done only when asked (``replaykit migrate DB``, or the store's
    ``migrate=True``). Nothing was changed."""


class StoreReadOnlyError(StoreError, PermissionError):
    """The store (or its directory) cannot be written; the operation needed to write."""


class Cancelled(ReplayKitError):
    """Raised at a workflow's current yield when it is cancelled; and, cooperatively,
    from ``rk.heartbeat()`` inside an activity whose result is no longer wanted.

    Catch it to run compensations; a workflow that lets it escape ends ``cancelled``.
    """


class TimedOut(Cancelled):
    """Raised at a workflow's current yield when its run timeout passes; it ends ``timed_out``."""


class Terminated(Cancelled):
    """What a run ended by :func:`replaykit.terminate` recorded as its error: none of its code ran
    after the request (no ``except``, no compensation), unlike :class:`Cancelled` raised at a yield."""


class WorkflowCancelled(Cancelled):
    """``result()`` of a run that ended ``cancelled``: ``reason`` says why. Not a :class:`WorkflowFailed`."""

    ended = "was cancelled"

    def __init__(self, workflow_id: str, reason: str) -> None:
        self.workflow_id = workflow_id
        self.reason = reason
        super().__init__(f"workflow {workflow_id!r} {self.ended}: {reason}")


class WorkflowTimedOut(WorkflowCancelled, TimedOut):
    """``result()`` of a run that ended ``timed_out`` (it passed its run timeout)."""

    ended = "timed out"


class WorkflowTerminated(WorkflowCancelled):
    """``result()`` of a run that :func:`replaykit.terminate` ended (its status is ``cancelled``)."""

    ended = "was terminated"


class ActivityTimeoutError(ReplayKitError):
    """An activity overran one of its timeouts (``kind``: start_to_close, schedule_to_close, heartbeat)."""

    def __init__(self, kind: str, activity: str, seconds: float) -> None:
        self.kind = kind
        self.activity = activity
        self.seconds = seconds
        super().__init__(f"activity {activity!r} exceeded its {kind} timeout of {seconds:g}s")


class IllegalTransitionError(ReplayKitError):
    """A lifecycle operation that the workflow's current status does not allow (e.g. resuming a completed run)."""


class ActivityFailed(ReplayKitError):
    """Stands in for an activity's exception that could not be pickled.

    ``error_type``, ``message`` and ``traceback`` hold what was recorded.
    """

    def __init__(self, error_type: str, message: str, traceback: str) -> None:
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"{error_type}: {message}")


class WorkflowFailed(ReplayKitError):
    """The workflow raised an exception it did not handle; the failure is recorded.

    ``error_type``, ``message`` and ``traceback`` are the recorded text; the
    original exception, when it could be rebuilt, is ``__cause__``.
    """

    def __init__(self, workflow_id: str, error_type: str, message: str, traceback: str) -> None:
        self.workflow_id = workflow_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"workflow {workflow_id!r} failed: {error_type}: {message}")


class WorkerStoppingError(ReplayKitError):
    """The worker is stopping (``stop()`` or SIGTERM): it takes no new work. Start the run through a
    :class:`~replaykit.Client` or another worker; a run started already is taken by the other workers."""
