"""Restart a run that ended badly, or fork a run into a new id, reusing recorded steps.

A history's prefix is itself a valid history (replay stops at a live suspension
point), so both operations write a new run whose history is a prefix of the old
one; whoever drives it next replays that prefix and carries on live. Nothing is
copied that the current code cannot replay: the prefix is checked first.

    rk.restart("orders.db", "order-o-42")                  # from the beginning, same arguments
    rk.restart("orders.db", "order-o-42", from_step=3)     # reuse steps 1-2, run step 3 on live
    rk.fork("orders.db", "order-o-42", "order-o-42-b", step=3)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .control import CANCEL_REQUEST, TERMINATE_REQUEST, Db, drop_requests, opened
from .errors import IllegalTransitionError, WorkflowNotFoundError
from .history import CANCEL, OK, RESULT, START, Event, Status, WorkflowInfo
from .payloads import Codec
from .replaycheck import check_history
from .starting import started_by
from .store import Store
from .store.base import RESTARTABLE
from .store.work import Placement
from .workflow import Workflow, lookup


def reusable_prefix(history: Iterable[Event], before_step: int | None) -> list[Event]:
    """The events after the start that answer steps before ``before_step``, up to the first that does not.

    A cancellation or the result ends the prefix too; ``None`` reuses nothing.
    """
    prefix: list[Event] = []
    if before_step is None:
        return prefix
    for event in history:
        if event.kind == START:
            continue
        if event.kind in (RESULT, CANCEL) or event.step >= before_step:
            break
        prefix.append(event)
    return prefix


def _new_start(codec: Codec, old: Event, prefix: list[Event], now: float, changes: dict[str, Any],
               drop: tuple[str, ...] = ()) -> Event:
    """The new run's start event: the old arguments and seed (so the prefix replays the same)."""
    recorded = dict(old.value(codec))
    for key in ("start_at", *drop):
        recorded.pop(key, None)
    recorded.update(changes)
    at = old.at if prefix else now  # ctx.now() before the first step must read as it did
    if prefix and "timeout" in recorded:  # the whole run timeout again, counted from now
        recorded["timeout"] = recorded["timeout"] + (now - old.at)
    payload = codec.encode(recorded, "arguments of the restarted run")
    return Event(0, 0, START, old.name, at, OK, *payload)


def _load(store: Store, workflow_id: str) -> tuple[WorkflowInfo, list[Event]]:
    info = store.info(workflow_id)
    if info is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
    history = list(store.events(workflow_id))
    started_by(workflow_id, info.name, history[0] if history else None)
    return info, history


def _checked(store: Store, workflow_id: str, start: Event, prefix: list[Event],
             workflows: dict[str, Workflow[Any]] | None) -> None:
    """Replay the prefix against the current code: a run that cannot replay is never written."""
    if prefix:
        check_history(lookup(start.name, workflows), workflow_id, [start, *prefix], store.codec)


def restart_run(store: Store, workflow_id: str, *, from_step: int | None = None, now: float,
                workflows: dict[str, Workflow[Any]] | None = None) -> None:
    """Start a failed, cancelled or timed-out run again as the id's next generation (see module doc)."""
    if from_step is not None and from_step < 1:
        raise ValueError(f"from_step counts from 1 (the first step the restarted run runs live), got {from_step}")
    info, history = _load(store, workflow_id)
    if info.status not in RESTARTABLE:
        raise IllegalTransitionError(
            f"workflow {workflow_id!r} is {info.status.value}; only a failed, cancelled or timed-out run "
            "can be restarted (fork a completed run into a new id with rk.fork)")
    prefix = reusable_prefix(history, from_step)
    # New default child ids: <id>#<generation>/<step>.
    generation = history[0].value(store.codec, workflow_id).get("generation", 1) + 1
    start = _new_start(store.codec, history[0], prefix, now,
                       {"restart": {"from_step": from_step}, "generation": generation})
    _checked(store, workflow_id, start, prefix, workflows)
    drop_requests(store, workflow_id, CANCEL_REQUEST, TERMINATE_REQUEST)  # meant for the run that ended
    store.restart(workflow_id, start, prefix)


def fork_run(store: Store, workflow_id: str, new_id: str, *, step: int, now: float,
             workflows: dict[str, Workflow[Any]] | None = None) -> None:
    """Create ``new_id``: the same workflow and arguments, reusing the steps of ``workflow_id`` before ``step``."""
    if step < 1:
        raise ValueError(f"fork needs step >= 1 (the first step a fork runs live), got {step}")
    if not new_id:
        raise ValueError("fork needs a new workflow id that is not empty")
    info, history = _load(store, workflow_id)
    prefix = reusable_prefix(history, step)
    start = _new_start(store.codec, history[0], prefix, now, {"fork": {"of": workflow_id, "step": step}},
                       drop=("parent", "continued", "generation"))
    _checked(store, new_id, start, prefix, workflows)
    placement = None if info.queue is None else Placement(info.queue)  # a queued run's fork is for workers too
    if not store.create(new_id, info.name, start, Status.RUNNING, history=prefix, placement=placement):
        raise IllegalTransitionError(f"workflow id {new_id!r} is taken; fork into an id that does not exist yet")


def restart(db: Db, workflow_id: str, *, from_step: int | None = None,
            workflows: Iterable[Workflow[Any]] = ()) -> None:
    """Start a failed, cancelled or timed-out run again, under the same id and arguments.

    With ``from_step=N`` the steps before ``N`` are reused as recorded (not run
    again) and step ``N`` onwards runs live; by default it starts from the
    beginning. The old history stays readable as the id's previous generation.
    The reused steps are replayed against the current code first
    (:class:`NonDeterminismError`, nothing written, if they no longer match).
    An engine that recovers, or ``rk.run`` with the same id and arguments, drives it.
    """
    with opened(db) as store:
        restart_run(store, workflow_id, from_step=from_step, now=time.time(),
                    workflows={w.name: w for w in workflows})


def fork(db: Db, workflow_id: str, new_id: str, *, step: int, workflows: Iterable[Workflow[Any]] = ()) -> None:
    """Copy run ``workflow_id`` into the new run ``new_id``, reusing its steps before ``step``.

    Works on a run in any status (the original is untouched). The new run has the
    same workflow and arguments, no parent, and continues live from ``step``. A fork of
    a run started for workers (``rk.Client.start``) is queued in the same queue (priority
    0, no partition key), for the workers to drive.
    """
    with opened(db) as store:
        fork_run(store, workflow_id, new_id, step=step, now=time.time(),
                 workflows={w.name: w for w in workflows})
