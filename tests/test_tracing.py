"""OpenTelemetry tracing: a span per run and per activity attempt, once, parented across a crash."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode

import replaykit as rk
from replaykit.tracing import Tracing, run_span_id, trace_id

from conftest import PYTHON
from helpers import wait_until

CHILD = str(Path(__file__).with_name("tracing_child.py"))


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


failures = {"left": 0}


@rk.activity(retry=rk.RetryPolicy(backoff=rk.Fixed(0.01), max_attempts=3))
def flaky(x: int) -> int:
    if failures["left"]:
        failures["left"] -= 1
        raise ValueError(f"not yet ({x})")
    return x


@rk.workflow(name="tracing.twice")
def twice(ctx: rk.Context, x: int) -> rk.Flow[int]:
    a: int = yield flaky(x)
    yield rk.sleep(0.01)  # a timer: no span of its own
    b: int = yield flaky(x + 1)
    if x < 0:
        raise RuntimeError("negative")
    if x == 10:
        yield rk.continue_as_new(20)
    return a + b


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        found.setdefault(s.name, []).append(s)
    return found


def test_a_run_span_parents_one_span_per_activity_attempt(db: str, exported: Any) -> None:
    provider, exporter = exported
    failures["left"] = 1
    with rk.Engine(db) as engine:
        Tracing(engine, provider)
        handle = engine.start(twice, 1, workflow_id="traced")
        assert handle.result(timeout=10) == 3
        started_at = next(iter(engine.store.events("traced"))).at
    spans = _by_name(exporter.get_finished_spans())
    assert sorted(spans) == ["activity flaky", "workflow tracing.twice"]
    (run,) = spans["workflow tracing.twice"]
    assert run.parent is None and run.status.status_code is StatusCode.UNSET
    assert (run.context.trace_id, run.context.span_id) == (trace_id("traced"), run_span_id("traced", 1, started_at))
    assert run.start_time == int(started_at * 1e9) and run.attributes["replaykit.status"] == "completed"
    attempts = spans["activity flaky"]
    assert [(a.attributes["replaykit.step"], a.attributes["replaykit.attempt"], a.attributes["replaykit.outcome"])
            for a in attempts] == [(1, 1, "retried"), (1, 2, "completed"), (3, 1, "completed")]
    assert {(a.context.trace_id, a.parent.span_id if a.parent else None) for a in attempts} == {
        (run.context.trace_id, run.context.span_id)}
    failed = attempts[0]
    assert failed.status.status_code is StatusCode.ERROR and "not yet (1)" in (failed.status.description or "")
    assert [e.name for e in failed.events] == ["exception"]
    # the second attempt began after the first failed and its backoff passed: not at the step's yield
    assert attempts[1].start_time >= failed.end_time + int(0.01 * 1e9) - 1_000_000
    assert all(run.start_time <= a.start_time <= a.end_time <= run.end_time for a in attempts)


def test_a_failed_run_and_each_generation_get_their_own_span(db: str, exported: Any) -> None:
    provider, exporter = exported
    failures["left"] = 0
    with rk.Engine(db) as engine:
        tracing = Tracing(engine, provider)
        with pytest.raises(rk.WorkflowFailed):
            engine.start(twice, -5, workflow_id="fails").result(timeout=10)
        assert engine.start(twice, 10, workflow_id="continues").result(timeout=10) == 41
        wait_until(lambda: any(s.attributes and s.attributes.get("replaykit.status") == "completed"
                               for s in exporter.get_finished_spans()),
                   "the last run's span is made (the hooks tell on their own thread)")
        tracing.close()
        assert engine.start(twice, 1, workflow_id="untraced").result(timeout=10) == 3
    spans = _by_name(exporter.get_finished_spans())
    runs = {(s.attributes["replaykit.workflow_id"], s.attributes["replaykit.status"]): s
            for s in spans["workflow tracing.twice"]}
    assert sorted(runs) == [("continues", "completed"), ("continues", "continued"), ("fails", "failed")]
    failed = runs[("fails", "failed")]
    assert failed.status.status_code is StatusCode.ERROR and "negative" in (failed.status.description or "")
    first, second = runs[("continues", "continued")], runs[("continues", "completed")]
    assert first.context.trace_id == second.context.trace_id == trace_id("continues")
    assert first.context.span_id != second.context.span_id and first.end_time <= second.start_time
    children = {}
    for a in spans["activity flaky"]:
        if a.attributes["replaykit.workflow_id"] == "continues":
            children.setdefault(a.parent.span_id if a.parent else None, []).append(a)
    assert {k: len(v) for k, v in children.items()} == {first.context.span_id: 2, second.context.span_id: 2}
    assert "untraced" not in {s.attributes["replaykit.workflow_id"] for s in exporter.get_finished_spans()}


@rk.workflow(name="tracing.looping")
def looping(ctx: rk.Context, n: int) -> rk.Flow[int]:
    yield flaky(n)
    if n < 3:
        yield rk.continue_as_new(n + 1)
    return n


def test_generations_under_a_clock_that_stands_still_have_spans_of_their_own(exported: Any) -> None:
    from replaykit.testing import TestEnv

    provider, exporter = exported
    failures["left"] = 0
    with TestEnv(workflows=[looping]) as env:  # a fake clock: the generations begin at the same time
        Tracing(env.engine, provider)
        assert env.engine.start(looping, 1, workflow_id="loop").result(timeout=5) == 3
        env.engine.close()
    spans = _by_name(exporter.get_finished_spans())
    runs = spans["workflow tracing.looping"]
    assert sorted(r.attributes["replaykit.generation"] for r in runs) == [1, 2, 3]
    assert len({r.context.span_id for r in runs}) == 3
    assert sorted(a.parent.span_id for a in spans["activity flaky"] if a.parent) == sorted(
        r.context.span_id for r in runs)  # each generation's attempt under its own run


def test_a_worker_is_traced_too(tmp_path: Path, exported: Any) -> None:
    provider, exporter = exported
    failures["left"] = 0
    db = str(tmp_path / "shared.db")
    with rk.Client(db) as client, rk.Worker(db, workflows=[twice], heartbeat=0.1) as worker:
        Tracing(worker, provider)
        assert client.start(twice, 2, workflow_id="queued").result(timeout=20) == 5
    spans = _by_name(exporter.get_finished_spans())
    assert len(spans["workflow tracing.twice"]) == 1 and len(spans["activity flaky"]) == 2


def test_a_provider_that_is_not_the_sdks_is_refused_clearly(exported: Any) -> None:
    with rk.Engine(rk.MemoryStore()) as engine, pytest.raises(TypeError, match="needs the OpenTelemetry SDK"):
        Tracing(engine, NoOpTracerProvider())  # type: ignore[arg-type]


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_spans_are_parented_across_a_crash_and_never_repeated(db: str, tmp_path: Path,
                                                             child_env: dict[str, str]) -> None:
    first_spans, second_spans = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = subprocess.Popen([PYTHON, CHILD, db, str(first_spans), "2"], env=child_env, stdout=subprocess.PIPE,
                             text=True)
    assert first.stdout is not None and first.stdout.readline() == "hanging\n"  # steps 1 and 2 are recorded
    wait_until(lambda: len(_spans(first_spans)) >= 2, "the first process exported its two steps' spans", 20)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = subprocess.run([PYTHON, CHILD, db, str(second_spans), "-1"], env=child_env, capture_output=True,
                            text=True, timeout=60)
    assert second.stdout == "result 30\n", second.stderr
    with rk.SqliteStore(db) as store:
        started_at = next(iter(store.events("traced"))).at  # recorded by the first process
    before, after = _spans(first_spans), _spans(second_spans)
    assert [s["name"] for s in before] == ["activity work"] * 2  # the run had not ended: no run span yet
    runs = [s for s in after if s["name"] == "workflow tracing.steps"]
    assert len(runs) == 1 and runs[0]["start"] == int(started_at * 1e9)
    run = runs[0]
    assert (run["trace_id"], run["span_id"]) == (trace_id("traced"), run_span_id("traced", 1, started_at))
    attempts = [s for s in before + after if s["name"] == "activity work"]
    # steps 1-2 from the first process, 3-5 from the second (the replayed ones told nothing; the attempt
    # the kill cut short has no span, its re-run has one)
    assert sorted(s["attributes"]["replaykit.step"] for s in attempts) == [1, 2, 3, 4, 5]
    assert [s["attributes"]["replaykit.step"] for s in before] == [1, 2]
    assert {(s["trace_id"], s["parent_id"]) for s in attempts} == {(run["trace_id"], run["span_id"])}
