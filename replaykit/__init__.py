"""replaykit: durable, deterministic-replay workflows written as plain Python generators.

See README.md for a tour and docs/ for the concepts.
"""

from .activity import Activity, ActivityInfo, activity, activity_info, heartbeat, is_cancelled
from .client import Client
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
from .context import Context
from .control import cancel, pause, query, resume, runs_without_patch, send_signal
from .converters import UnknownTypeError, json_type
from .determinism import NonDeterminismWarning
from .errors import (
    ActivityFailed,
    ActivityTimeoutError,
    Cancelled,
    CorruptStoreError,
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
    TimedOut,
    UnknownWorkflowError,
    WorkerStoppingError,
    WorkflowCancelled,
    WorkflowConflictError,
    WorkflowFailed,
    WorkflowLockedError,
    WorkflowNotFoundError,
    WorkflowPausedError,
    WorkflowTimedOut,
)
from .handle import WorkflowHandle
from .history import Event, Status, WorkflowInfo
from .restart import fork, restart
from .retry import Exponential, Fixed, Linear, RetryPolicy
from .run import run
from .runtime import Engine
from .saga import Saga
from .schedule import run_schedule as _run_schedule  # noqa: F401 - registers the schedule workflow
from .store import Durability, MemoryStore, SqliteStore, Store
from .store.work import Queue, WorkerRecord
from .worker import Worker
from .workflow import Flow, Workflow, workflow

__version__ = "0.1.0"

__all__ = [
    "Activity", "ActivityCall", "ActivityFailed", "ActivityInfo", "ActivityTimeoutError", "Cancelled",
    "ChildWorkflow", "Client", "Command", "Context", "ContinueAsNew", "CorruptStoreError", "Durability", "Engine",
    "Event", "Exponential", "Fixed", "Flow", "Group", "IllegalTransitionError", "InvalidCommandError", "Linear",
    "MemoryStore", "MigrationRequiredError", "NonDeterminismError", "NonDeterminismWarning", "NotAStoreError",
    "NotAWorkflowError", "PayloadAuthenticationError",
    "Queue",
    "ReplayKitError", "ResultTimeoutError", "RetryPolicy", "Saga", "SerializationError", "SideEffect", "Sleep",
    "SleepUntil", "SqliteStore", "Status", "Store", "StoreError", "StoreFullError", "StoreNotFoundError",
    "StoreReadOnlyError", "StoreTooNewError", "TimedOut", "UnknownTypeError", "UnknownWorkflowError", "WaitSignal",
    "Worker",
    "WorkerRecord", "WorkerStoppingError", "Workflow", "WorkflowCancelled", "WorkflowConflictError", "WorkflowFailed",
    "WorkflowHandle", "WorkflowInfo", "WorkflowLockedError", "WorkflowNotFoundError", "WorkflowPausedError",
    "WorkflowTimedOut", "activity", "activity_info", "all", "any", "cancel", "child_workflow", "continue_as_new",
    "fork", "heartbeat", "is_cancelled", "json_type", "pause", "query", "restart", "resume", "run",
    "runs_without_patch", "send_signal", "side_effect", "sleep", "sleep_until", "wait_signal", "workflow",
]
