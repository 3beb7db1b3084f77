"""``rk.run``: the one-call way to run a workflow durably from a script."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeAlias, overload

from .commands import A1, A2, A3, A4, A5, A6, R

if TYPE_CHECKING:
    from .store import Store
    from .workflow import Takes0, Takes1, Takes2, Takes3, Takes4, Takes5, Takes6, Workflow

    Db: TypeAlias = str | os.PathLike[str] | Store


# Typed by arity (see child_workflow in commands.py): positional arguments are checked against
# the workflow's parameters, arguments by keyword are not.
@overload
def run(workflow: Takes0[R], /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True) -> R: ...
@overload
def run(workflow: Takes1[A1, R], a1: A1, /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True) -> R: ...
@overload
def run(workflow: Takes2[A1, A2, R], a1: A1, a2: A2, /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True) -> R: ...
@overload
def run(workflow: Takes3[A1, A2, A3, R], a1: A1, a2: A2, a3: A3, /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True) -> R: ...
@overload
def run(workflow: Takes4[A1, A2, A3, A4, R], a1: A1, a2: A2, a3: A3, a4: A4, /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True) -> R: ...
@overload
def run(workflow: Takes5[A1, A2, A3, A4, A5, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True) -> R: ...
@overload
def run(workflow: Takes6[A1, A2, A3, A4, A5, A6, R], a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True) -> R: ...
@overload
def run(workflow: Workflow[..., R], /, *,
        workflow_id: str, db: Db, durability: str = "crash", lock_timeout: float = 0.0,
        warn_nondeterminism: bool = True, **kwargs: Any) -> R: ...


def run(workflow: Any, /, *args: Any, workflow_id: str, db: Db, durability: str = "crash",
        lock_timeout: float = 0.0, warn_nondeterminism: bool = True, **kwargs: Any) -> Any:
    """Start the workflow, or resume it, or return its recorded result; block until it ends.

    Rerunning the same script after a crash continues from the last recorded
    step: completed activities are not run again. Activities run one at a time
    on the engine's driver thread (those of an ``rk.all`` on a small thread pool),
    each step committed before the next starts. Raises :class:`WorkflowFailed` if
    the workflow raised, and :class:`WorkflowLockedError` if another live process
    drives the same id (after waiting ``lock_timeout`` seconds for it).

    Ctrl-C (``KeyboardInterrupt``) stops the run at the next step boundary: the
    activity in flight finishes and is recorded, no further step starts, and the
    ``KeyboardInterrupt`` propagates. The run stays resumable: run the script
    again to continue. (Activities of an ``rk.all`` still running are abandoned
    unrecorded, and run again on the rerun. A second Ctrl-C stops waiting for
    the activity in flight; it runs again on the rerun too.)

    Workflow code that calls the wall clock, ``random``, ``uuid`` or does I/O
    directly emits a :class:`~replaykit.testing.NonDeterminismWarning` naming the
    line: a profile hook watches each live step, for a few microseconds of CPU
    (replayed steps are not watched; see ``docs/benchmarks.md``).
    ``warn_nondeterminism=False`` turns that off.
    """
    from .runtime import Engine  # the engine loads with the first run, not with import replaykit

    with Engine(db, durability=durability, activity_threads=0, warn_nondeterminism=warn_nondeterminism) as engine:
        return engine.start(workflow, *args, workflow_id=workflow_id, lock_timeout=lock_timeout,
                            **kwargs).result()
