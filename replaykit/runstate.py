"""What an engine keeps in memory about a run it drives (the state its driver thread works on)."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .activity import Execution
    from .clock import Clock, SkippingClock
    from .errors import StoreError
    from .executor import Executor
    from .handle import WorkflowHandle
    from .hooks import Hooks
    from .interpreter import Leaf, Machine
    from .retention import Retention
    from .store import Store
    from .timers import TimerQueue
    from .workflow import Workflow


class _Run:
    """A run this engine drives: its machine and what it is waiting on."""

    __slots__ = ("workflow_id", "workflow", "machine", "handle", "next_seq", "parent", "generation", "executions",
                 "paused", "parked", "custom_status", "status_unsaved", "warned_size", "deadline", "started_at")

    def __init__(self, workflow_id: str, workflow: Workflow[Any], machine: Machine, handle: WorkflowHandle,
                 next_seq: int, start: dict[str, Any]) -> None:
        self.workflow_id = workflow_id
        self.workflow = workflow
        self.machine = machine
        self.handle = handle
        self.next_seq = next_seq  # position of the next event in its history
        parent = start.get("parent")  # [parent id, step] of a child workflow
        self.parent: tuple[str, int] | None = None if parent is None else (parent[0], parent[1])
        self.generation: int = start.get("generation", 1)  # 1 + how many times the id continued as new
        self.executions: dict[int, Execution] = {}  # running activities, by step
        self.paused = False
        self.parked: tuple[Leaf, ...] = ()  # leaves not started because the run is paused
        self.custom_status: Any = None
        self.status_unsaved = False  # ctx.set_status changed it; saved with the next event, or on parking
        self.warned_size = False
        self.started_at = 0.0  # when its generation started (its start event's time)
        self.deadline: float | None = None  # when the run's timeout cancels it, if it has one


class _Evicted:
    """A run this engine drives without holding it in memory (evicted, or given up paused): what
    replays it and who waits for it. ``timers``: the leaves its timer entries fire for (others naming
    it are stale: a sibling won an ``rk.any``, or a replay since pushed its own)."""

    __slots__ = ("workflow", "handle", "timers", "started_at")

    def __init__(self, workflow: Workflow[Any], handle: WorkflowHandle, timers: tuple[Leaf, ...] = (),
                 started_at: float | None = None) -> None:
        self.workflow, self.handle, self.timers = workflow, handle, timers
        self.started_at = started_at  # its generation's start: a restart elsewhere makes the entry stale


class EngineState:
    """The engine's state, declared once for the parts it is made of (``Driver``, ``Lifecycle``,
    ``Controls``, ``Effects``); ``Engine.__init__`` sets every attribute. Only the driver thread
    touches them, apart from ``_inbox``."""

    store: Store
    _own_store: bool
    _clock: Clock
    _skipping: SkippingClock | None
    _poll: float
    _watch: bool
    _strict: bool
    _history_warning: int
    _executor: Executor
    _group_commit: bool
    # External effects held back until the commit, each with what to do instead if the batch is lost.
    _after_commit: list[tuple[Callable[[], None], Callable[[StoreError], None] | None]]
    _in_flight: int  # activities submitted and not yet reported back
    _inbox: queue.SimpleQueue[Callable[[], None]]
    _runs: dict[str, _Run]
    _children: dict[str, tuple[_Run, Leaf]]  # child id -> the parent leaf waiting on it
    _timers: TimerQueue
    _max_cached: int | None
    _keeper: str  # the name under which this engine keeps runs it evicted (store/keepers.py)
    _marked: set[str]
    _retrying: set[str]
    _evicted: dict[str, _Evicted]
    _timeouts: dict[str, float]  # run id -> the deadline of its timeout's entry in _timers (one per deadline)
    _parked: set[str]  # runs that parked this turn: candidates for eviction
    _paused_here: set[str]  # runs seen paused (in memory, or evicted): those a poll checks for a resume
    _releasing: set[str]  # runs given up, still locked until the commit
    _unmarking: set[str]  # runs given up in a lost batch whose marks the rollback brought back (still locked)
    _continuing: dict[str, WorkflowHandle]  # runs whose next generation opens at the driver's next turn (still locked)
    _closed: bool
    _retention: Retention | None  # the thread pruning old histories (Engine(retention=...))
    _hooks: Hooks | None  # lifecycle subscribers (engine.on), made by the first
