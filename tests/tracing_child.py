"""An engine process with OpenTelemetry tracing, for tests/test_tracing.py.

    python tracing_child.py DB SPANS HANG_AT     drive (or resume) the run "traced"; each span it ends
                                                 is appended to SPANS as a JSON line. The activity of
                                                 step HANG_AT prints "hanging" and never returns (-1: none)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import replaykit as rk
from replaykit.tracing import Tracing

from helpers import journal

STEPS = 5
HANG_AT = -1


@rk.activity
def work(i: int) -> int:
    if i == HANG_AT:
        print("hanging", flush=True)
        time.sleep(3600)
    return i * i


@rk.workflow(name="tracing.steps")
def steps(ctx: rk.Context) -> rk.Flow[int]:
    total = 0
    for i in range(STEPS):
        total += yield work(i)
    return total


class JsonLines(SpanExporter):
    """Each span as one line, written with one write(2) as it ends: what a SIGKILL cannot undo."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for s in spans:
            journal(self.path, json.dumps({
                "name": s.name, "trace_id": s.context.trace_id, "span_id": s.context.span_id,
                "parent_id": s.parent.span_id if s.parent else None, "start": s.start_time, "end": s.end_time,
                "attributes": dict(s.attributes or {}), "status": s.status.status_code.name}))
        return SpanExportResult.SUCCESS


def main(db: str, spans: str, hang_at: str) -> None:
    global HANG_AT
    HANG_AT = int(hang_at)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines(spans)))
    with rk.Engine(db, workflows=[steps]) as engine:
        Tracing(engine, provider)
        handle = (engine.recover() or [engine.start(steps, workflow_id="traced")])[0]
        print("result", handle.result(timeout=60), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
