"""OpenTelemetry spans of runs and activity attempts (the ``otel`` extra).

    from opentelemetry.sdk.trace import TracerProvider
    provider = TracerProvider()               # with the span processors and exporters you use
    engine = rk.Engine("orders.db")
    Tracing(engine, provider)                 # or Tracing(worker, ...); default: the global provider

Built on the lifecycle hooks (``docs/hooks.md``): a span is made once per real occurrence, after
it is committed, and never on replay. What identifies a span is derived from what the store
records, so every process that drives a run agrees on it, across crashes and hand-overs:

- a trace per workflow id (its id: from a hash of the workflow id);
- a span per run (generation), ``workflow <name>``, from its start event's time to its end, made by
  the process that ends it (its id: from the workflow id, the generation and that start time);
- a span per activity attempt that answered, ``activity <name>``, the run's span as its parent,
  made by the process that ran it. An attempt cut short by a crash has no span; its re-run has.

A run that ends without a process driving it (``rk.terminate`` of a run nobody holds, ``rk.cancel``
of a pending one) has no run span: the spans of its attempts name a parent that is never exported.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from . import __version__
from .hooks import HookEvent, Told

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError('replaykit.tracing needs OpenTelemetry: pip install "replaykit[otel]"') from exc

_ENDS = {"run_completed": "completed", "run_failed": "failed", "run_cancelled": "cancelled",
         "run_timed_out": "timed_out", "run_continued": "continued"}
_STEPS = ("step_completed", "step_failed", "step_retried")
_FAILED = {"failed", "timed_out"}


def trace_id(workflow_id: str) -> int:
    """The trace of every run of ``workflow_id``."""
    return _hashed(b"trace", workflow_id, 16)


def run_span_id(workflow_id: str, generation: int, run_started_at: float) -> int:
    """The span of ``workflow_id``'s run ``generation``, which began at ``run_started_at``."""
    return _hashed(b"run", f"{workflow_id}\0{generation}\0{run_started_at!r}", 8)


def _hashed(kind: bytes, text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(kind + b"\0" + text.encode("utf-8", "surrogatepass")).digest()[:size], "big")
    return value or 1  # zero is the invalid id


class _Chosen(IdGenerator):
    """The ids of the next run span, chosen by this thread; random ids otherwise."""

    def __init__(self, fallback: IdGenerator) -> None:
        self._fallback = fallback
        self._next = threading.local()

    def choose(self, ids: tuple[int, int] | None) -> None:
        self._next.ids = ids

    def generate_trace_id(self) -> int:
        ids = getattr(self._next, "ids", None)
        return self._fallback.generate_trace_id() if ids is None else ids[0]

    def generate_span_id(self) -> int:
        ids = getattr(self._next, "ids", None)
        return self._fallback.generate_span_id() if ids is None else ids[1]

    def is_trace_id_random(self) -> bool:
        return False


class Tracing:
    """Spans of the runs an engine or a worker drives, sent to ``tracer_provider`` (an
    ``opentelemetry.sdk.trace.TracerProvider``; default: the global one, which must be one).
    :meth:`close` stops making them."""

    def __init__(self, source: Told, tracer_provider: TracerProvider | None = None) -> None:
        provider = trace.get_tracer_provider() if tracer_provider is None else tracer_provider
        if not isinstance(provider, TracerProvider):
            raise TypeError(
                f"replaykit tracing needs the OpenTelemetry SDK's TracerProvider, got {type(provider).__name__}: "
                "pass Tracing(engine, TracerProvider(...)), or call trace.set_tracer_provider(...) before it")
        self._steps = provider.get_tracer("replaykit", __version__)
        runs = provider.get_tracer("replaykit.runs", __version__)  # a tracer of its own: its ids are chosen
        self._ids = _Chosen(runs.id_generator)  # type: ignore[attr-defined]
        runs.id_generator = self._ids  # type: ignore[attr-defined]
        self._runs = runs
        self._off = [source.on(kind, self._step) for kind in _STEPS] + [source.on(kind, self._ended) for kind in _ENDS]

    def close(self) -> None:
        """Unsubscribe: no more spans (those made are the provider's to flush)."""
        for off in self._off:
            off()

    def _step(self, e: HookEvent) -> None:
        if not (e.command or "").startswith("activity ") or e.run_started_at is None or e.generation is None:
            return
        parent = trace.NonRecordingSpan(trace.SpanContext(
            trace_id(e.workflow_id), run_span_id(e.workflow_id, e.generation, e.run_started_at), is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)))
        span = self._steps.start_span(
            e.command or "activity", context=trace.set_span_in_context(parent, Context()),
            start_time=_ns(e.at if e.started is None else e.started),
            attributes={**_run_attributes(e), "replaykit.step": e.step or 0, "replaykit.attempt": e.attempt or 1,
                        "replaykit.outcome": e.kind.removeprefix("step_")})
        if e.error is not None:
            _failed(span, e.error, e.at)
        span.end(end_time=_ns(e.at))

    def _ended(self, e: HookEvent) -> None:
        if e.run_started_at is None or e.generation is None:
            return
        status = _ENDS[e.kind]
        self._ids.choose((trace_id(e.workflow_id), run_span_id(e.workflow_id, e.generation, e.run_started_at)))
        try:
            span = self._runs.start_span(f"workflow {e.workflow}", context=Context(),
                                         start_time=_ns(e.run_started_at),
                                         attributes={**_run_attributes(e), "replaykit.status": status})
        finally:
            self._ids.choose(None)
        if e.error is not None and status in _FAILED:
            _failed(span, e.error, e.at)
        span.end(end_time=_ns(e.at))


def _run_attributes(e: HookEvent) -> dict[str, Any]:
    return {"replaykit.workflow_id": e.workflow_id, "replaykit.workflow": e.workflow,
            "replaykit.generation": e.generation or 1}


def _failed(span: Any, error: BaseException, at: float) -> None:
    span.record_exception(error, timestamp=_ns(at))
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
