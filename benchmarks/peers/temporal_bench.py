"""temporalio's Replayer on a generated history of N activities, for the side-by-side benchmarks.

    python temporal_bench.py N    -> seconds to replay a workflow of N sequential activities

The history is what a Temporal server records for the workflow below: the workflow
start, then per activity a scheduled, started and completed activity task and a
workflow task (scheduled, started, completed), then the completion: 6 N + 5 events.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio import activity, workflow
from temporalio.api.common.v1 import ActivityType, Payload, Payloads, WorkflowType
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import (
    ActivityTaskCompletedEventAttributes,
    ActivityTaskScheduledEventAttributes,
    ActivityTaskStartedEventAttributes,
    History,
    HistoryEvent,
    WorkflowExecutionCompletedEventAttributes,
    WorkflowExecutionStartedEventAttributes,
    WorkflowTaskCompletedEventAttributes,
    WorkflowTaskScheduledEventAttributes,
    WorkflowTaskStartedEventAttributes,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer


@activity.defn
async def echo(i: int) -> int:
    return i


@workflow.defn
class Steps:
    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += await workflow.execute_activity(echo, i, start_to_close_timeout=timedelta(seconds=10))
        return total


def _json(value: int) -> Payloads:
    return Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=str(value).encode())])


def build_history(n: int) -> History:
    events: list[HistoryEvent] = []
    now = Timestamp()
    now.GetCurrentTime()
    queue = TaskQueue(name="bench")

    def add(event_type: int, **attrs: object) -> int:
        event_id = len(events) + 1
        events.append(HistoryEvent(event_id=event_id, event_time=now, event_type=event_type, **attrs))  # type: ignore[arg-type]
        return event_id

    add(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        workflow_execution_started_event_attributes=WorkflowExecutionStartedEventAttributes(
            workflow_type=WorkflowType(name="Steps"), task_queue=queue, input=_json(n),
            workflow_task_timeout=_duration(10), original_execution_run_id="run-1", first_execution_run_id="run-1",
            attempt=1))

    def workflow_task() -> int:
        scheduled = add(EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
                        workflow_task_scheduled_event_attributes=WorkflowTaskScheduledEventAttributes(
                            task_queue=queue, start_to_close_timeout=_duration(10), attempt=1))
        started = add(EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
                      workflow_task_started_event_attributes=WorkflowTaskStartedEventAttributes(
                          scheduled_event_id=scheduled, identity="bench", request_id=f"r{scheduled}"))
        return add(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
                   workflow_task_completed_event_attributes=WorkflowTaskCompletedEventAttributes(
                       scheduled_event_id=scheduled, started_event_id=started, identity="bench"))

    completed = workflow_task()
    for i in range(n):
        scheduled = add(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
                        activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                            activity_id=str(i + 1), activity_type=ActivityType(name="echo"), task_queue=queue,
                            input=_json(i), start_to_close_timeout=_duration(10),
                            schedule_to_close_timeout=_duration(10), schedule_to_start_timeout=_duration(10),
                            heartbeat_timeout=_duration(0), workflow_task_completed_event_id=completed))
        started = add(EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
                      activity_task_started_event_attributes=ActivityTaskStartedEventAttributes(
                          scheduled_event_id=scheduled, identity="bench", request_id=f"a{i}", attempt=1))
        add(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            activity_task_completed_event_attributes=ActivityTaskCompletedEventAttributes(
                result=_json(i), scheduled_event_id=scheduled, started_event_id=started, identity="bench"))
        completed = workflow_task()
    add(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        workflow_execution_completed_event_attributes=WorkflowExecutionCompletedEventAttributes(
            result=_json(n * (n - 1) // 2), workflow_task_completed_event_id=completed))
    return History(events=events)


def _duration(seconds: int) -> object:
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=seconds)


async def replay(n: int) -> float:
    history = WorkflowHistory("bench-wf", list(build_history(n).events))
    replayer = Replayer(workflows=[Steps])
    t0 = time.perf_counter()
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    elapsed = time.perf_counter() - t0
    assert result.replay_failure is None
    return elapsed


if __name__ == "__main__":
    n = int(sys.argv[1])
    print("EVENTS", 6 * n + 5)
    print("RESULT", asyncio.run(replay(n)))
