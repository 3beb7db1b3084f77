"""``rk.run``: the one-call way to run a workflow durably from a script."""

from __future__ import annotations

import os
from typing import Any

from .runtime import Engine
from .store import Store


def run(workflow: Any, *args: Any, workflow_id: str, db: str | os.PathLike[str] | Store,
        durability: str = "crash", lock_timeout: float = 0.0, **kwargs: Any) -> Any:
    """Start the workflow, or resume it, or return its recorded result; block until it ends.

    Rerunning the same script after a crash continues from the last recorded
    step: completed activities are not run again. Activities run inline in
    this thread. Raises :class:`WorkflowFailed` if the workflow raised, and
    :class:`WorkflowLockedError` if another live process drives the same id
    (after waiting ``lock_timeout`` seconds for it).
    """
    with Engine(db, durability=durability, activity_threads=0) as engine:
        return engine.start(workflow, *args, workflow_id=workflow_id, lock_timeout=lock_timeout,
                            **kwargs).result()
