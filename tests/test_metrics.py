"""``replaykit.metrics``: an engine's runs and steps as Prometheus metrics, read as a scraper reads them
(over HTTP, parsed by prometheus_client's own parser)."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import replaykit as rk
from replaykit.metrics import Metrics

tries: dict[str, int] = {}


@rk.activity(retry=rk.RetryPolicy(max_attempts=2, backoff=rk.Fixed(0.01)))
def wobbly(key: str) -> str:
    tries[key] = tries.get(key, 0) + 1
    if tries[key] == 1:
        raise ConnectionError("first try")
    return key


@rk.activity
def refuse() -> None:
    raise ValueError("no")


@rk.workflow(name="metrics.good")
def good(ctx: rk.Context, key: str) -> rk.Flow[str]:
    return (yield wobbly(key))


@rk.workflow(name="metrics.bad")
def bad(ctx: rk.Context) -> rk.Flow[None]:
    yield refuse()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_runs_and_steps_are_counted_and_scraped(db: str) -> None:
    with rk.Engine(db) as engine:
        metrics = Metrics(engine)
        server = metrics.serve(0)
        try:
            for i in range(3):
                assert engine.start(good, f"{db}-{i}", workflow_id=f"g{i}").result(timeout=20) == f"{db}-{i}"
            with pytest.raises(rk.WorkflowFailed):
                engine.start(bad, workflow_id="b").result(timeout=20)
            engine.close()  # what was committed is told (and counted) before close returns
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
                assert response.status == 200
                scraped = samples(response.read().decode())
        finally:
            server.shutdown()
    assert scraped == samples(metrics.text().decode())
    assert scraped[("replaykit_runs_started_total", (("workflow", "metrics.good"),))] == 3
    assert scraped[("replaykit_runs_ended_total", (("status", "completed"), ("workflow", "metrics.good")))] == 3
    assert scraped[("replaykit_runs_ended_total", (("status", "failed"), ("workflow", "metrics.bad")))] == 1
    steps = {labels: v for (name, labels), v in scraped.items() if name == "replaykit_steps_total"}
    assert steps == {(("kind", "activity"), ("outcome", "retried"), ("workflow", "metrics.good")): 3,
                     (("kind", "activity"), ("outcome", "ok"), ("workflow", "metrics.good")): 3,
                     (("kind", "activity"), ("outcome", "failed"), ("workflow", "metrics.bad")): 1}
    count = scraped[("replaykit_step_duration_seconds_count", (("kind", "activity"), ("workflow", "metrics.good")))]
    total = scraped[("replaykit_step_duration_seconds_sum", (("kind", "activity"), ("workflow", "metrics.good")))]
    assert count == 3 and total >= 3 * 0.01  # each waited out its retry
    assert scraped[("replaykit_run_duration_seconds_count", (("status", "failed"), ("workflow", "metrics.bad")))] == 1
