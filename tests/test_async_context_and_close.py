"""An ``async def`` run's own context reaches its cleanup at close and its query handlers; async activities
cancelled at close log nothing; a sync wrapper that runs its coroutine itself stays sync; and the worker
gate on side effects of a parallel group hands the run back whole. Each docstring says what a user saw."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import replaykit as rk

T = TypeVar("T")

# -- 1. the per-run Context does not cover what the engine runs of the run outside its steps --------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("review_third_request_id", default="-")
CLEANED: list[Any] = []


@rk.workflow(name="review-third-cv-finally")
async def binds_then_waits(ctx: rk.Context) -> None:
    token = request_id.set("run's own")
    try:
        await rk.wait_signal("go")
    finally:
        CLEANED.append(request_id.get())
        request_id.reset(token)  # as every `token = var.set(...); try/finally: var.reset(token)` does
        CLEANED.append("reset")


def test_an_async_workflows_finally_at_engine_close_runs_in_its_own_context(db: str) -> None:
    """engine.close() (and eviction, a worker's hand-back, strict replay) closes a parked workflow with
    Machine.discard(), which calls ``self._gen.close()`` outside the run's contextvars.Context. The
    workflow's ``finally`` then sees the driver thread's context: ``request_id.get()`` is "-" and
    ``request_id.reset(token)`` raises ValueError ("created in a different Context"), swallowed by
    discard(), so the rest of the cleanup is skipped. Before this commit (no per-run context) both ran."""
    CLEANED.clear()
    with rk.Engine(db) as engine:
        engine.start(binds_then_waits, workflow_id="w")
        deadline = time.monotonic() + 5
        while engine.handle("w").status() != rk.Status.RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    assert CLEANED == ["run's own", "reset"], CLEANED


progress: contextvars.ContextVar[int] = contextvars.ContextVar("review_third_progress", default=0)


@rk.workflow(name="review-third-cv-query")
async def counts(ctx: rk.Context) -> None:
    @ctx.query("progress")
    def current() -> int:
        return progress.get()

    progress.set(3)
    await rk.wait_signal("go")


def test_a_query_handler_reads_the_context_the_async_workflow_set(db: str) -> None:
    """A query is answered "from replayed state": control.query replays the run, then calls the handler
    outside the run's Context, so a handler reading a ContextVar the workflow set gets the default
    (0). Before this commit it read 3."""
    with rk.Engine(db) as engine:
        engine.start(counts, workflow_id="q")
        time.sleep(0.3)
        assert engine.query("q", "progress") == 3


# -- 2. engine.close() cancels async activities: the cancellation is logged as an error -----------------

@rk.activity
async def review_third_slow() -> str:
    await asyncio.sleep(2)
    return "slow"


@rk.activity
async def review_third_fast() -> str:
    return "fast"


@rk.workflow(name="review-third-race")
async def race(ctx: rk.Context) -> str:
    _, value = await rk.any(review_third_slow(), review_third_fast())
    return str(value)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_rk_any_loser_cancelled_at_close_logs_no_error(db: str) -> None:
    """rk.run of an rk.any whose loser is an async activity: at close _cancel_then_stop cancels it, the
    concurrent future of run_coroutine_threadsafe is cancelled, and Executor.submit's done callback
    ``lambda f: done(f.result())`` raises CancelledError, which concurrent.futures logs at ERROR with a
    traceback ("exception calling callback for <Future ... state=cancelled>") on every such run (it was
    "Task was destroyed but it is pending!" before: the noise moved, it did not go)."""
    handler = _Records()
    loggers = [logging.getLogger("concurrent.futures"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        assert rk.run(race, workflow_id="r", db=db) == "fast"
        time.sleep(0.5)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    errors = [r.getMessage() for r in handler.records if r.levelno >= logging.ERROR]
    assert errors == []


# -- 3. a sync decorator (functools.wraps) that runs the coroutine itself --------------------------------

def run_sync(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A common helper: call an async def from sync code (the wrapper is a plain def that returns the value)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


@rk.activity
@run_sync
async def fetch_sync(url: str) -> str:
    await asyncio.sleep(0)
    return url.upper()


@rk.workflow(name="review-third-sync-wrapper")
def uses_sync_wrapper(ctx: rk.Context) -> Any:
    return (yield fetch_sync("u"))


def test_a_sync_wrapper_that_runs_its_coroutine_stays_a_sync_activity(db: str) -> None:
    """Activity._is_async now also looks behind functools.wraps (inspect.unwrap): a sync wrapper that
    runs the coroutine itself (asyncio.run, async_to_sync-style) is taken for an async activity, called
    on the engine's event loop, and fails the run with "asyncio.run() cannot be called from a running
    event loop" (plus "coroutine was never awaited"). Before this commit it ran and returned "U"."""
    assert rk.run(uses_sync_wrapper, workflow_id="w", db=db) == "U"


@rk.workflow(name="review-third-side-effect-wrapped")
def side_effect_wrapped(ctx: rk.Context) -> Any:
    return (yield rk.side_effect(run_sync(_upper_now)))


async def _upper_now() -> str:
    return "W"


def test_side_effect_of_a_sync_wrapper_around_an_async_def_is_not_refused(db: str) -> None:
    """commands.side_effect refuses ``inspect.iscoroutinefunction(inspect.unwrap(fn))``: a plain function
    that runs a coroutine to completion behind functools.wraps returns a value, yet is refused with
    InvalidCommandError ("is an async def"). Before this commit it ran."""
    assert rk.run(side_effect_wrapped, workflow_id="s", db=db) == "W"


# -- 4. the worker gate for side effects, in a parallel group (PostgreSQL: the gate's store) -------------

EFFECTS: list[str] = []


def _effect(name: str) -> Callable[[], str]:
    def run() -> str:
        EFFECTS.append(name)
        return name
    return run


@rk.workflow(name="review-third-all-effects")
def all_effects(ctx: rk.Context) -> Any:
    return (yield rk.all(rk.side_effect(_effect("a")), rk.side_effect(_effect("b")), rk.side_effect(_effect("c"))))


@pytest.mark.parametrize("refused", [1, 2])
def test_a_side_effect_of_a_group_the_gate_refused_is_run_once_when_the_run_is_claimed_again(
        pg_url: str, refused: int) -> None:
    """The gate refuses the ``refused``-th side effect of an rk.all once (as when a heartbeat is late):
    the run is handed back and claimed again, and every side effect runs exactly once."""
    import threading

    EFFECTS.clear()
    worker = rk.Worker(pg_url, workflows=[all_effects], queues=["main"], heartbeat=0.2, lease=2.0)
    calls = {"n": 0}
    real = worker._may_start_activity

    def gate(life: int) -> bool:
        calls["n"] += 1
        return False if calls["n"] == refused else real(life)

    worker._may_start_activity = gate  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    client = rk.Client(pg_url)
    try:
        client.start(all_effects, workflow_id="g", queue="main")
        assert client.handle("g").result(timeout=15) == ["a", "b", "c"]
        assert sorted(EFFECTS) == ["a", "b", "c"], EFFECTS
        assert calls["n"] >= 4, calls  # the refusal happened, and the side effects asked again
    finally:
        worker.stop()
        thread.join(10)
        client.close()
