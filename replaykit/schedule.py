"""Cron schedules that start workflows, durably: a schedule is itself a workflow.

``engine.schedule("nightly", report, "0 3 * * *")`` starts (or resumes) the
workflow ``schedule:nightly``, which sleeps until each fire time and runs the
target as a child workflow whose id is the schedule's id plus the fire time.
Fire times come from the cron expression, counted from the previous fire time,
not from "now": after a crash or downtime the missed fires run, in order, and
none runs twice (the child id makes a second start of the same fire a no-op).
Runs of one schedule never overlap: a fire waits for the previous run to end.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from cronsim import CronSim, CronSimError

from .commands import Command, child_workflow, continue_as_new, sleep_until, utc
from .context import Context
from .errors import WorkflowCancelled, WorkflowFailed
from .workflow import lookup, workflow

FIRES_PER_RUN = 100  # then continue as new, to keep the schedule's history short


def check_cron(expression: str) -> None:
    """Raise ``ValueError`` naming what is wrong with a 5-field cron expression."""
    try:
        CronSim(expression, utc(0))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None


@workflow(name="replaykit.schedule")
def run_schedule(ctx: Context, target: str, cron: str, args: list[Any], kwargs: dict[str, Any],
                 after: float) -> Generator[Command, Any, None]:
    """Start ``target`` at every fire time of ``cron`` after ``after`` (a timestamp)."""
    wf = lookup(target)
    last = after
    for _ in range(FIRES_PER_RUN):
        fire = next(CronSim(cron, utc(last)))
        yield sleep_until(fire)
        try:
            yield child_workflow(wf, *args, workflow_id=f"{ctx.workflow_id}@{fire.isoformat()}", **kwargs)
        except (WorkflowFailed, WorkflowCancelled) as exc:  # one fire's end does not end the schedule
            ctx.logger.warning("scheduled run %s did not complete: %s", exc.workflow_id, exc)
        last = fire.timestamp()
    yield continue_as_new(target, cron, args, kwargs, last)
