"""Watching runs as they happen, and the tools that end, list and prune them.

    pip install "replaykit[metrics,otel]"
    python examples/observe.py     # then look: replaykit ui observe.db (or replaykit show observe.db ID --html x.html)

An engine tells a subscriber object what happens (lifecycle hooks), counts it for Prometheus and
makes OpenTelemetry spans of it; a run stuck on a signal nobody will send is terminated; the runs
that ended are listed, and what a prune would delete is shown.
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import replaykit as rk
from replaykit.metrics import Metrics
from replaykit.tracing import Tracing

attempts: dict[str, int] = {}


@rk.activity(retry=rk.RetryPolicy(max_attempts=3, backoff=rk.Fixed(0.01)))
def reserve(order_id: str) -> str:
    attempts[order_id] = attempts.get(order_id, 0) + 1
    if attempts[order_id] == 1:
        raise ConnectionError("the stock service timed out")  # the first attempt fails; the retry works
    return f"reserved {order_id}"


@rk.workflow
def fulfil(ctx: rk.Context, order_id: str) -> rk.Flow[str]:
    reserved: str = yield reserve(order_id)
    if order_id.endswith("-2"):
        yield rk.wait_signal("paid")  # nobody pays: this one is terminated below
    return reserved


class Log:
    """A subscriber: each method named after a lifecycle event is called once per occurrence, on the
    hooks' own thread (so it keeps lines, printed once the engine has closed, not amid the main thread's)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step_retried(self, event: rk.HookEvent) -> None:
        self.lines.append(f"[hook] {event.workflow_id}: {event.command} attempt {event.attempt} failed: {event.error}")

    def run_completed(self, event: rk.HookEvent) -> None:
        self.lines.append(f"[hook] {event.workflow_id} completed in {event.took:.3f}s")

    def run_cancelled(self, event: rk.HookEvent) -> None:
        self.lines.append(f"[hook] {event.workflow_id} ended: {event.error}")


def main(db: str) -> None:
    spans = InMemorySpanExporter()  # in production: an OTLP exporter, say
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    log = Log()
    with rk.Engine(db) as engine:
        engine.subscribe(log)
        metrics = Metrics(engine)
        Tracing(engine, provider)
        print("result:", engine.start(fulfil, "order-1", workflow_id="order-1").result(timeout=10))
        stuck = engine.start(fulfil, "order-2", workflow_id="order-2")
        while not any(e.kind == "activity" and e.outcome == "ok" for e in engine.store.events("order-2")):
            time.sleep(0.01)  # until it has reserved (after a retry) and waits to be paid
        rk.terminate(engine.store, "order-2", "never paid")
        try:
            stuck.result(timeout=10)
        except rk.WorkflowTerminated as exc:
            print("result:", exc)
    print("\n".join(log.lines))  # the engine has closed: every hook has been told
    for line in metrics.text().decode().splitlines():
        if line.startswith(("replaykit_runs_ended_total", "replaykit_steps_total")):
            print("[metric]", line)
    for span in spans.get_finished_spans():
        print(f"[span] {span.name} {span.attributes.get('replaykit.workflow_id') if span.attributes else ''} "
              f"{'child of its run' if span.parent else 'root'}")
    with rk.SqliteStore(db) as store:
        print("ended:", sorted(info.workflow_id for info in store.list() if info.status.is_terminal))
    print("prune would delete:", rk.prune(db, older_than=0, dry_run=True))  # replaykit prune DB --older-than 30d


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="observe.db")
    main(parser.parse_args().db)
