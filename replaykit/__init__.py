"""replaykit: durable, deterministic-replay workflows written as plain Python generators.

See README.md for a tour and docs/ for the concepts.

What every workflow module uses (the decorators, the commands, the errors, ``rk.run``) is
imported here; the rest (the engine, the stores, the client and worker...) on first use, so
that ``import replaykit`` stays cheap for a script (PEP 562: ``__getattr__`` below).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .activity import Activity, ActivityInfo, activity, activity_info, heartbeat, is_cancelled
from .commands import (
    ActivityCall,
    ChildWorkflow,
    Command,
    ContinueAsNew,
    Group,
    SideEffect,
    Sleep,
    SleepUntil,
    WaitSignal,
    child_workflow,
    continue_as_new,
    side_effect,
    sleep,
    sleep_until,
    wait_signal,
)
from .commands import all_of as all  # noqa: A001 - rk.all / rk.any read like asyncio.gather / wait
from .commands import any_of as any  # noqa: A001
from .errors import (
    ActivityFailed,
    ActivityTimeoutError,
    Cancelled,
    CorruptStoreError,
    EngineClosedError,
    IllegalTransitionError,
    InvalidCommandError,
    MigrationRequiredError,
    NonDeterminismError,
    NotAStoreError,
    NotAWorkflowError,
    PayloadAuthenticationError,
    ReplayKitError,
    ResultTimeoutError,
    SerializationError,
    StoreError,
    StoreFullError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreTooNewError,
    Terminated,
    TimedOut,
    UnknownQueryError,
    UnknownWorkflowError,
    WorkerStoppingError,
    WorkflowCancelled,
    WorkflowConflictError,
    WorkflowFailed,
    WorkflowLockedError,
    WorkflowNotFoundError,
    WorkflowPausedError,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from .lazy import loader
from .run import run
from .workflow import Flow, Workflow, workflow

if TYPE_CHECKING:  # loaded on first use (see __getattr__); type checkers read them here
    from . import store as store  # a subpackage: rk.store.open_store, rk.store.PostgresStore ...
    from .client import Client
    from .context import Context
    from .control import cancel, pause, query, resume, runs_without_patch, send_signal
    from .converters import UnknownTypeError, json_type
    from .determinism import NonDeterminismWarning
    from .handle import WorkflowHandle
    from .history import Event, Status, WorkflowInfo
    from .hooks import HookEvent
    from .restarting import fork, restart
    from .retention import prune
    from .retry import Exponential, Fixed, Linear, RetryPolicy
    from .runtime import Engine
    from .saga import Saga
    from .store import Durability, MemoryStore, SqliteStore, Store
    from .store.work import Queue, WorkerRecord
    from .terminating import terminate
    from .worker import Worker

_LAZY = {  # module: the names it gives, as in the block above (tests/test_api.py keeps them equal)
    ".": "store",  # a subpackage
    ".client": "Client", ".context": "Context",
    ".control": "cancel pause query resume runs_without_patch send_signal",
    ".converters": "UnknownTypeError json_type", ".determinism": "NonDeterminismWarning",
    ".handle": "WorkflowHandle", ".history": "Event Status WorkflowInfo", ".hooks": "HookEvent",
    ".restarting": "fork restart",
    ".retention": "prune",
    ".retry": "Exponential Fixed Linear RetryPolicy", ".runtime": "Engine", ".saga": "Saga",
    ".store": "Durability MemoryStore SqliteStore Store", ".store.work": "Queue WorkerRecord",
    ".terminating": "terminate", ".worker": "Worker",
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names.split()}
if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise take any name, typos too
    __getattr__ = loader(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__version__ = "0.1.0"

__all__ = [
    "Activity", "ActivityCall", "ActivityFailed", "ActivityInfo", "ActivityTimeoutError", "Cancelled",
    "ChildWorkflow", "Client", "Command", "Context", "ContinueAsNew", "CorruptStoreError", "Durability", "Engine",
    "EngineClosedError", "Event", "Exponential", "Fixed", "Flow", "Group", "HookEvent", "IllegalTransitionError",
    "InvalidCommandError", "Linear", "MemoryStore", "MigrationRequiredError", "NonDeterminismError",
    "NonDeterminismWarning", "NotAStoreError", "NotAWorkflowError", "PayloadAuthenticationError", "Queue",
    "ReplayKitError", "ResultTimeoutError", "RetryPolicy", "Saga", "SerializationError", "SideEffect", "Sleep",
    "SleepUntil", "SqliteStore", "Status", "Store", "StoreError", "StoreFullError", "StoreNotFoundError",
    "StoreReadOnlyError", "StoreTooNewError", "Terminated", "TimedOut", "UnknownQueryError", "UnknownTypeError",
    "UnknownWorkflowError", "WaitSignal", "Worker", "WorkerRecord", "WorkerStoppingError", "Workflow",
    "WorkflowCancelled", "WorkflowConflictError", "WorkflowFailed", "WorkflowHandle", "WorkflowInfo",
    "WorkflowLockedError", "WorkflowNotFoundError", "WorkflowPausedError", "WorkflowTerminated", "WorkflowTimedOut",
    "activity", "activity_info", "all", "any", "cancel", "child_workflow", "continue_as_new", "fork", "heartbeat",
    "is_cancelled", "json_type", "pause", "prune", "query", "restart", "resume", "run", "runs_without_patch",
    "send_signal", "side_effect", "sleep", "sleep_until", "terminate", "wait_signal", "workflow",
]
