"""What an engine keeps in memory about a run it drives (the state its driver thread works on)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .activity import Execution
    from .handle import WorkflowHandle
    from .interpreter import Leaf, Machine
    from .workflow import Workflow


class _Run:
    """A run this engine drives: its machine and what it is waiting on."""

    __slots__ = ("workflow_id", "workflow", "machine", "handle", "next_seq", "parent", "generation", "executions",
                 "paused", "parked", "custom_status", "status_unsaved", "warned_size")

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
        self.parked: list[Leaf] = []  # leaves not started because the run is paused
        self.custom_status: Any = None
        self.status_unsaved = False  # ctx.set_status changed it; saved with the next event, or on parking
        self.warned_size = False
