"""A run's start event: the arguments, the random seed and the options it records."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .errors import CorruptStoreError, ReplayKitError, WorkflowConflictError
from .history import RULES_VERSION, Event
from .payloads import Codec
from .text import check_text

if TYPE_CHECKING:
    from .store import Store
    from .workflow import Workflow


def check_workflow_id(workflow_id: str) -> None:
    """A run's id is non-empty text."""
    check_text(workflow_id, "workflow_id names the run", 'workflow_id="order-42"')


def start_payload(codec: Codec, wf: Workflow[Any], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                  timeout: float | None = None, start_at: float | None = None,
                  parent: tuple[str, int] | None = None, continued: bool = False,
                  generation: int = 1) -> tuple[str, str | bytes]:
    """The start event's payload: the arguments, the run's random seed and options (``timeout``: the
    seconds left to the run, which a run that continues as new past its deadline carries below 0)."""
    start: dict[str, Any] = {"args": list(args), "kwargs": kwargs, "seed": random.getrandbits(63),
                             "rules": RULES_VERSION}
    if continued:
        start["continued"] = True
    if generation > 1:
        start["generation"] = generation
    if timeout is not None:
        start["timeout"] = timeout
    if start_at is not None:
        start["start_at"] = start_at
    if parent is not None:
        start["parent"] = list(parent)
    return codec.encode(start, f"arguments of workflow {wf.name!r}")


def check_same_run(workflow_id: str, name: str, recorded: dict[str, Any], wf: Workflow[Any],
                   call: tuple[tuple[Any, ...], dict[str, Any]] | None, codec: Codec) -> None:
    """A start (or rerun) found the id taken by a run of workflow ``name`` whose start event recorded
    ``recorded``: it is this very run, or a :class:`WorkflowConflictError`. ``call``: the arguments
    passed (``None``: a run followed, not started: only its workflow is checked)."""
    if name != wf.name:
        raise WorkflowConflictError(
            f"workflow id {workflow_id!r} belongs to a run of workflow {name!r}, not {wf.name!r}. "
            "Use another id for the new run.")
    if call is None or recorded.get("continued"):  # a continued run's arguments are its latest ones
        return
    args, kwargs = call
    if not _same_arguments((recorded["args"], recorded["kwargs"]), (list(args), kwargs), codec):
        raise WorkflowConflictError(
            f"workflow {workflow_id!r} was started with args={tuple(recorded['args'])!r} "
            f"kwargs={recorded['kwargs']!r}; this call passes args={tuple(args)!r} kwargs={kwargs!r}. "
            "A rerun or repeated start must pass the same arguments (or use another workflow id).")


def _same_arguments(recorded: Any, passed: Any, codec: Codec) -> bool:
    """Equal, or recorded alike: a NaN is not equal to itself, and a signalling one refuses to be compared."""
    try:
        if recorded == passed:
            return True
    except Exception:  # noqa: BLE001 - an __eq__ that raises (Decimal("sNaN")): compare how they are recorded
        pass
    try:
        return codec.encode(recorded, None) == codec.encode(passed, None)
    except ReplayKitError:
        return False


def started_by(workflow_id: str, row_name: str, start: Event | None) -> Event:
    """The run's start event, which names the workflow the run belongs to (it is chained; the run
    row's name is only an index): a row that names another workflow, or no start, is damage."""
    if start is None or start.name != row_name:
        found = "no start event" if start is None else f"a history started by workflow {start.name!r}"
        raise CorruptStoreError(
            f"the run {workflow_id!r} is damaged: its row names workflow {row_name!r}, but it has {found}. "
            "Nothing was run; restore the store from a backup.")
    return start


def check_same_stored_run(store: Store, workflow_id: str, wf: Workflow[Any], args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> None:
    """:func:`check_same_run` against the run stored under ``workflow_id``."""
    start = next(iter(store.events(workflow_id)))
    check_same_run(workflow_id, start.name, start.value(store.codec, workflow_id), wf, (args, kwargs), store.codec)
