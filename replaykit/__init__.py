"""replaykit: durable, deterministic-replay workflows written as plain Python generators.

See README.md for a tour and docs/ for the concepts.
"""

from .activity import Activity, ActivityInfo, activity, activity_info
from .commands import (
    ActivityCall,
    Command,
    SideEffect,
    Sleep,
    SleepUntil,
    WaitSignal,
    side_effect,
    sleep,
    sleep_until,
    wait_signal,
)
from .context import Context
from .errors import (
    ActivityFailed,
    CorruptStoreError,
    InvalidCommandError,
    NonDeterminismError,
    NotAStoreError,
    NotAWorkflowError,
    ReplayKitError,
    ResultTimeoutError,
    SerializationError,
    StoreError,
    StoreTooNewError,
    UnknownWorkflowError,
    WorkflowConflictError,
    WorkflowFailed,
    WorkflowLockedError,
    WorkflowNotFoundError,
)
from .handle import WorkflowHandle
from .history import Event, Status, WorkflowInfo
from .run import run
from .runtime import Engine, send_signal
from .store import Durability, MemoryStore, SqliteStore, Store
from .workflow import Workflow, workflow

__version__ = "0.1.0"

__all__ = [
    "Activity", "ActivityCall", "ActivityFailed", "ActivityInfo", "Command", "Context",
    "CorruptStoreError", "Durability", "Engine", "Event", "InvalidCommandError", "MemoryStore",
    "NonDeterminismError", "NotAStoreError", "NotAWorkflowError", "ReplayKitError",
    "ResultTimeoutError", "SerializationError", "SideEffect", "Sleep", "SleepUntil", "SqliteStore",
    "Status", "Store", "StoreError", "StoreTooNewError", "UnknownWorkflowError", "WaitSignal",
    "Workflow", "WorkflowConflictError", "WorkflowFailed", "WorkflowHandle", "WorkflowInfo",
    "WorkflowLockedError", "WorkflowNotFoundError", "activity", "activity_info", "run",
    "send_signal", "side_effect", "sleep", "sleep_until", "wait_signal", "workflow",
]
