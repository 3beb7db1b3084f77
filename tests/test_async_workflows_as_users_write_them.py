"""``async def`` workflows and activities as an asyncio programmer writes them: sagas, helpers, context
variables, async generators, cleanup at close, wrapped activities, timeouts, heartbeats from threads, and
typing. Each docstring says the habit it checks and what went wrong before.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import replaykit as rk
from replaykit.store import open_store

T = TypeVar("T")


@rk.activity
async def note(text: str) -> str:
    await asyncio.sleep(0)
    return text


def _kinds(db: str, workflow_id: str) -> tuple[list[tuple[str, int]], rk.Status]:
    with open_store(db) as store:
        info = store.info(workflow_id)
        assert info is not None
        return [(e.kind, e.step) for e in store.events(workflow_id)], info.status


# -- 1. rk.Saga in an async def workflow -------------------------------------------------------

UNDONE: list[str] = []


@rk.activity
async def book(what: str) -> str:
    if what == "car":
        raise RuntimeError("no cars left")
    return f"booked {what}"


@rk.activity
async def cancel_booking(what: str) -> str:
    UNDONE.append(what)
    return f"cancelled {what}"


@rk.workflow(name="review-async-trip")
async def async_trip(ctx: rk.Context) -> Any:
    saga = rk.Saga()
    try:
        for what in ("flight", "hotel", "car"):
            await book(what)
            saga.add(cancel_booking, what)
        return "trip booked"
    except (RuntimeError, rk.Cancelled):
        with ctx.shield():
            undone = await saga.compensate()  # type: ignore[misc]  # the async spelling of `yield from`
        return undone


def test_saga_compensations_can_run_from_an_async_workflow(db: str) -> None:
    """README: rk.Saga is among what a workflow (generator or async def) can use. In an async def
    workflow there is no way to run ``saga.compensate()`` (a generator): ``await`` on it raises a bare
    TypeError that is recorded as the run's failure, so the compensations never run and the run is
    failed for good. Expected: it runs the compensations, or it is refused with an InvalidCommandError
    (nothing recorded) that says how to compensate from an async workflow."""
    UNDONE.clear()
    try:
        result = rk.run(async_trip, workflow_id="trip", db=db)
    except rk.InvalidCommandError as exc:
        assert "compensate" in str(exc)
        assert _kinds(db, "trip")[1] is rk.Status.RUNNING
        return
    except rk.WorkflowFailed as exc:
        pytest.fail(f"the saga's compensations did not run and the run is recorded failed: {exc}")
    assert result == ["cancelled hotel", "cancelled flight"]
    assert UNDONE == ["hotel", "flight"]


# -- 2. awaiting something that is not awaitable -----------------------------------------------

def gen_helper() -> Generator[Any, Any, str]:  # a helper left over from the generator version
    value: str = yield note("g")
    return value


@rk.workflow(name="review-await-generator")
async def awaits_a_generator(ctx: rk.Context) -> str:
    await note("before")
    return await gen_helper()  # type: ignore[misc]


@rk.workflow(name="review-await-dict")
async def awaits_a_dict(ctx: rk.Context) -> str:
    await note("before")
    return await {}  # type: ignore[misc]


@pytest.mark.parametrize("wf", [awaits_a_generator, awaits_a_dict], ids=["generator", "dict"])
def test_awaiting_a_non_command_is_refused_not_recorded_as_a_failure(db: str, wf: rk.Workflow[[], str]) -> None:
    """README: "A command made but never yielded is an rk.InvalidCommandError naming its line, and so is
    awaiting anything else (asyncio, say) in an async def workflow"; concepts.md: nothing is recorded, the
    run is not marked failed. Awaiting a generator (a helper not yet ported from the generator version,
    ``saga.compensate()``) or any non-awaitable raises Python's TypeError, which is recorded as the run's
    failure (status failed, a result event)."""
    with pytest.raises(rk.InvalidCommandError) as err:
        rk.run(wf, workflow_id="w", db=db)
    assert f"{__file__}:" in str(err.value)
    events, status = _kinds(db, "w")
    assert events == [("start", 0), ("activity", 1)]
    assert status is rk.Status.RUNNING


# -- 3. contextvars ------------------------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("review_request_id", default="-")


@rk.activity
async def who_am_i() -> str:
    return request_id.get()


@rk.workflow(name="review-contextvar")
async def tagged(ctx: rk.Context, rid: str) -> list[str]:
    request_id.set(rid)  # as a request handler binds its id for logging
    await rk.sleep(0.05)
    return [request_id.get(), await who_am_i()]


def test_a_contextvar_set_by_one_async_workflow_does_not_leak_into_another(db: str) -> None:
    """Under asyncio each task has its own context, so ``ContextVar.set`` in one coroutine is never
    seen by another. replaykit steps every async workflow of an engine in the driver thread's one
    context: workflow A reads the value workflow B set (and so do A's activities). Nothing says
    so; the values read depend on how runs interleave, which replay does not reproduce. Expected: each
    run sees its own value (or such use is refused)."""
    with rk.Engine(db) as engine:
        a = engine.start(tagged, "A", workflow_id="a")
        b = engine.start(tagged, "B", workflow_id="b")
        # each run its own value; an activity runs in a context of its own (concepts.md: pass it as an argument)
        assert a.result(timeout=10) == ["A", "-"]
        assert b.result(timeout=10) == ["B", "-"]


# -- 4. async generators left early ----------------------------------------------------------

async def pages() -> AsyncIterator[str]:
    try:
        for i in range(5):
            yield await note(f"page {i}")
    finally:
        await note("close cursor")  # cleanup that needs a step, as it would need an await under asyncio


@rk.workflow(name="review-async-for-break")
async def first_two_pages(ctx: rk.Context) -> list[str]:
    out: list[str] = []
    async for page in pages():
        out.append(page)
        if len(out) == 2:
            break
    await note("after")
    return out


def test_leaving_an_async_for_early_does_not_silently_drop_the_generators_cleanup(db: str) -> None:
    """An asyncio loop finalizes an async generator left by ``break`` (``aclose()`` through its asyncgen
    hooks), so its ``finally`` awaits run. In an async workflow the cleanup step is silently never run:
    CPython prints "Exception ignored ... RuntimeError: async generator ignored GeneratorExit" on stderr
    and the run completes without it. Expected: the cleanup runs as a step, or the run is refused with
    an InvalidCommandError that says to use ``contextlib.aclosing``."""
    try:
        assert rk.run(first_two_pages, workflow_id="w", db=db) == ["page 0", "page 1"]
    except rk.InvalidCommandError as exc:
        assert "aclos" in str(exc)
        return
    with open_store(db) as store:
        ran = [e for e in store.events("w") if e.kind == "activity"]
    assert len(ran) == 4, "the async generator's `await note('close cursor')` was never run"


@rk.workflow(name="review-async-for-aclosing")
async def first_two_pages_closed(ctx: rk.Context) -> list[str]:
    out: list[str] = []
    async with contextlib.aclosing(pages()) as items:
        async for page in items:
            out.append(page)
            if len(out) == 2:
                break
    return out


async def numbers() -> AsyncIterator[int]:
    for i in range(5):
        yield i


@rk.workflow(name="review-async-for-plain")
async def first_two_numbers(ctx: rk.Context) -> list[int]:
    out: list[int] = []
    async for n in numbers():  # no cleanup to run: leaving it early is fine
        out.append(n)
        if len(out) == 2:
            break
    await note("after")
    return out


def test_an_async_generator_closed_where_the_workflow_says_runs_its_cleanup_as_a_step(db: str) -> None:
    assert rk.run(first_two_pages_closed, workflow_id="w", db=db) == ["page 0", "page 1"]
    with open_store(db) as store:
        names = [json.loads(e.payload) for e in store.events("w") if e.kind == "activity"]
    assert names == ["page 0", "page 1", "close cursor"]
    assert rk.run(first_two_numbers, workflow_id="n", db=db) == [0, 1]


# -- 5. async activities in flight when an engine closes -----------------------------------------

CLEANUP: list[str] = []


@rk.activity
async def holds_a_connection(n: int) -> int:
    CLEANUP.append(f"open {n}")
    try:
        await asyncio.sleep(1.0)
        return n
    finally:
        await asyncio.sleep(0)  # `await session.close()`
        CLEANUP.append(f"closed {n}")


@rk.workflow(name="review-close-async")
async def two_connections(ctx: rk.Context) -> list[Any]:
    return await rk.all(holds_a_connection(1), holds_a_connection(2))


def test_closing_an_engine_does_not_destroy_running_async_activities_without_cleanup(db: str) -> None:
    """durability.md: at ``engine.close()`` activities still running are abandoned unrecorded (sync ones
    go on in their threads and finish). Async ones are destroyed: the engine stops its event loop with
    the tasks pending, asyncio logs "Task was destroyed but it is pending!", and an activity's
    ``finally`` / ``async with`` cleanup (closing a connection) never runs on a loop: here it never
    completes at all. Expected: they are cancelled (CancelledError) or let finish, and their cleanup
    runs."""
    CLEANUP.clear()
    with rk.Engine(db) as engine:
        engine.start(two_connections, workflow_id="w")
        deadline = time.monotonic() + 5
        while CLEANUP.count("open 1") + CLEANUP.count("open 2") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(1.5)
    gc.collect()
    assert sorted(c for c in CLEANUP if c.startswith("closed")) == ["closed 1", "closed 2"], CLEANUP


# -- 6. an activity whose function returns a coroutine ------------------------------------------

def logged(fn: Callable[..., T]) -> Callable[..., T]:
    """A plain logging decorator, as many code bases have (a sync wrapper)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)
    return wrapper


@rk.activity
@logged
async def fetch_upper(url: str) -> str:
    await asyncio.sleep(0)
    return url.upper()


@rk.workflow(name="review-wrapped-async-activity")
async def uses_wrapped(ctx: rk.Context) -> str:
    return await fetch_upper("u")


def test_an_activity_that_returns_a_coroutine_is_awaited_or_named_as_such(db: str) -> None:
    """An ``async def`` under a sync decorator (``functools.wraps``) is typed as an async activity
    (``await fetch_upper(...)`` is a ``str`` to mypy), but replaykit runs it as a sync one: the coroutine
    it returns is never awaited ("coroutine ... was never awaited") and the error says "a value of type
    coroutine ... Use plain data (str, numbers, lists, dicts)", advice that does not apply. Expected: the
    coroutine is awaited, or the error says the function returned a coroutine and how to mark it async."""
    try:
        assert rk.run(uses_wrapped, workflow_id="w", db=db) == "U"
    except rk.SerializationError as exc:
        assert "Use plain data" not in str(exc) and "async" in str(exc), str(exc)


# -- 7. refusals that do not say what to write instead -----------------------------------------

@rk.workflow(name="review-wait-for")
async def waits_for(ctx: rk.Context) -> str:
    await note("before")
    return await asyncio.wait_for(note("x"), 5)


@rk.workflow(name="review-asyncio-timeout")
async def under_a_timeout(ctx: rk.Context) -> str:
    await note("before")
    async with asyncio.timeout(5):
        return await note("x")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
@pytest.mark.parametrize("wf", [waits_for, under_a_timeout], ids=["wait_for", "timeout"])
def test_refusing_an_asyncio_timeout_says_how_to_write_a_timeout(db: str, wf: rk.Workflow[[], str]) -> None:
    """The refusal of ``asyncio.wait_for(activity(...), 5)`` / ``asyncio.timeout`` names an internal
    ("it needs a running event loop: loop.create_future()" / "loop.time()") and advises rk.sleep for
    delays and rk.all/rk.any instead of gather/wait; nothing says how to put a timeout on a step
    (``@rk.activity(timeout=...)``, or ``rk.any(cmd, rk.sleep(t))``)."""
    with pytest.raises(rk.InvalidCommandError) as err:
        rk.run(wf, workflow_id="w", db=db)
    assert "timeout" in str(err.value).replace("asyncio.timeout", ""), str(err.value)


async def coin() -> float:
    return 0.5


@rk.workflow(name="review-async-side-effect")
async def side_effect_of_async(ctx: rk.Context) -> Any:
    await note("before")
    return await rk.side_effect(coin)


def test_side_effect_of_an_async_function_says_it_needs_a_sync_one(db: str) -> None:
    """``await rk.side_effect(an_async_fn)`` records the coroutine object: SerializationError "a value of
    type coroutine ... Use plain data", and a "coroutine 'coin' was never awaited" warning. Expected: an
    error that says side_effect takes a plain function (use an async def activity)."""
    with pytest.raises(rk.ReplayKitError) as err:
        rk.run(side_effect_of_async, workflow_id="w", db=db)
    assert "async" in str(err.value), str(err.value)


@rk.activity
async def blocking_with_heartbeats() -> str:
    def crunch() -> str:
        rk.heartbeat("progress")
        return "ok"
    return await asyncio.get_running_loop().run_in_executor(None, crunch)


@rk.workflow(name="review-run-in-executor")
async def crunches(ctx: rk.Context) -> str:
    return await blocking_with_heartbeats()


def test_heartbeat_from_run_in_executor_says_what_to_do(db: str) -> None:
    """An async activity that hands blocking work to ``loop.run_in_executor`` (which, unlike
    ``asyncio.to_thread``, does not carry contextvars) and heartbeats there gets
    ``LookupError: heartbeat() called outside a running activity``, though it is inside one. Expected:
    it works, or the error says to use ``asyncio.to_thread`` / ``contextvars.copy_context().run``."""
    try:
        assert rk.run(crunches, workflow_id="w", db=db) == "ok"
    except rk.WorkflowFailed as exc:
        assert "to_thread" in str(exc) or "copy_context" in str(exc), str(exc)


# -- 8. typing: continue_as_new at the end of an async workflow ---------------------------------

def test_pyright_accepts_an_async_workflow_ending_in_await_continue_as_new(tmp_path: Path) -> None:
    """typing.md: pyright does not read ``NoReturn`` from an ``await`` (mypy does), so an async def workflow
    ends an ``await rk.continue_as_new(...)`` branch with ``raise AssertionError("not reached")``, as a
    generator one does: written so, it passes pyright strict."""
    pytest.importorskip("pyright")
    source = tmp_path / "looper.py"
    source.write_text(textwrap.dedent("""
        import replaykit as rk

        @rk.workflow
        async def looper(ctx: rk.Context, left: int) -> str:
            if left == 0:
                return "done"
            await rk.sleep(1)
            await rk.continue_as_new(left - 1)
            raise AssertionError("not reached")
    """))
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({"typeCheckingMode": "strict"}))
    done = subprocess.run([sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable,
                           "-p", str(tmp_path / "pyrightconfig.json"), str(source)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    report = json.loads(done.stdout)
    errors = [d["message"] for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == []
