"""Prometheus metrics (the ``metrics`` extra): of an engine's (or a worker's) runs and steps, and of
what a store holds.

    engine = rk.Engine("orders.db")
    metrics = Metrics(engine)          # counts what the engine's hooks tell (docs/hooks.md)
    metrics.serve(9464)                # http://localhost:9464/metrics, or metrics.text() yourself

:class:`Metrics` counts once per real occurrence, never on replay, like the hooks it is built on;
:class:`StoreMetrics` reads the store at each scrape (``replaykit ui`` serves it at ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .hooks import HookEvent, Told

if TYPE_CHECKING:
    from .store import Store

_ENDS = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled",
         "run_timed_out": "timed_out", "run_continued": "continued"}
_STEPS = {"step_completed": "ok", "step_failed": "failed", "step_retried": "retried"}
_DURATIONS = (0.01, 0.1, 1, 10, 60, 600, 3600, 86400, 7 * 86400, float("inf"))  # buckets of runs' seconds


class Metrics:
    """Counters and histograms, by workflow (and status, or step kind and outcome), in a registry of
    their own (``registry``: another ``prometheus_client.CollectorRegistry`` to add them to).

    ``replaykit_runs_started_total{workflow}``, ``replaykit_runs_ended_total{workflow,status}``,
    ``replaykit_run_duration_seconds{workflow,status}`` (from the start of the run's generation),
    ``replaykit_steps_total{workflow,kind,outcome}`` (``ok``, ``failed``, ``retried``) and
    ``replaykit_step_duration_seconds{workflow,kind}`` (from the yield to the answer, in workflow time).
    """

    def __init__(self, engine: Told, registry: Any = None) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError as exc:
            raise ImportError('replaykit.metrics needs prometheus-client: pip install "replaykit[metrics]"') from exc
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        self._started = Counter("replaykit_runs_started", "Runs started from their beginning", ["workflow"], registry=r)
        self._ended = Counter("replaykit_runs_ended", "Runs that ended, by status", ["workflow", "status"], registry=r)
        self._run_seconds = Histogram("replaykit_run_duration_seconds", "Seconds from a run's start to its end",
                                      ["workflow", "status"], registry=r,
                                      buckets=_DURATIONS)
        self._steps = Counter("replaykit_steps", "Steps answered, by kind and outcome", ["workflow", "kind", "outcome"],
                              registry=r)
        self._step_seconds = Histogram("replaykit_step_duration_seconds", "Seconds from a step's yield to its answer",
                                       ["workflow", "kind"], registry=r)
        engine.on("*", self._count)

    def _count(self, e: HookEvent) -> None:
        if e.kind == "run_started":
            self._started.labels(e.workflow).inc()
        elif e.kind in _ENDS:
            status = _ENDS[e.kind]
            self._ended.labels(e.workflow, status).inc()
            if e.took is not None:
                self._run_seconds.labels(e.workflow, status).observe(e.took)
        elif e.kind in _STEPS:
            kind = (e.command or "").split(" ", 1)[0]
            self._steps.labels(e.workflow, kind, _STEPS[e.kind]).inc()
            if e.took is not None and e.kind == "step_completed":
                self._step_seconds.labels(e.workflow, kind).observe(e.took)

    def text(self) -> bytes:
        """The metrics in Prometheus' text exposition format."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` over HTTP on ``addr:port`` (localhost by default) from a daemon thread;
        returns the server (``.shutdown()`` stops it; ``.server_port`` is the port, ``port=0``: any free)."""
        from prometheus_client import start_http_server

        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return server


class StoreMetrics:
    """What a store holds, read at each scrape (every process's runs, not one engine's):

    ``replaykit_store_runs{workflow,status}`` (runs, by the status of their newest generation),
    ``replaykit_store_run_duration_seconds{workflow,status}`` (a histogram of the runs that ended:
    from their generation's start to their end) and ``replaykit_store_workers{stopping}``
    (registered workers). A scrape reads every run's row: mind the interval on a store of millions.
    """

    def __init__(self, store: Store, registry: Any = None) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            raise ImportError('replaykit.metrics needs prometheus-client: pip install "replaykit[metrics]"') from exc
        self.store = store
        self.registry = CollectorRegistry() if registry is None else registry
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        runs = GaugeMetricFamily("replaykit_store_runs", "Runs in the store, by the status of their newest "
                                 "generation", labels=["workflow", "status"])
        counts: dict[tuple[str, str], int] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        for info in self.store.list():
            key = (info.name, info.status.value)
            counts[key] = counts.get(key, 0) + 1
            if info.status.is_terminal:
                durations.setdefault(key, []).append(info.updated_at - info.created_at)
        for key, count in sorted(counts.items()):
            runs.add_metric(list(key), count)
        yield runs
        seconds = HistogramMetricFamily("replaykit_store_run_duration_seconds", "Seconds from the start of an "
                                        "ended run's generation to its end", labels=["workflow", "status"])
        for key, taken in sorted(durations.items()):
            buckets = [(_bound(b), sum(1 for t in taken if t <= b)) for b in _DURATIONS]
            seconds.add_metric(list(key), buckets, sum(taken))
        yield seconds
        workers = GaugeMetricFamily("replaykit_store_workers", "Registered workers", labels=["stopping"])
        registered = self.store.workers()
        for stopping in (False, True):
            workers.add_metric([str(stopping).lower()], sum(1 for w in registered if w.stopping == stopping))
        yield workers

    def text(self) -> bytes:
        """The metrics in Prometheus' text exposition format."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


def _bound(seconds: float) -> str:
    return "+Inf" if seconds == float("inf") else repr(float(seconds))

