"""Running activity functions: inline, or on a thread pool; ``async def`` ones on an event loop."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .activity import Execution, _current
from .commands import ActivityCall

if TYPE_CHECKING:  # asyncio is imported by the first async activity, not by ``import replaykit``
    import asyncio

Outcome = tuple[bool, Any]  # (True, value) or (False, exception)
Done = Callable[[Outcome], None]
Gate = Callable[[str], Callable[[], bool]]  # at submit, given the run's id: a check, made just before it starts


class NotStarted(Exception):
    """A step not started: the worker's gate said the run may no longer be this process's."""

    def __init__(self, what: str = "activity") -> None:
        super().__init__(f"the {what} was not started: this worker could not confirm, within its lease, that the "
                         "run is still its own (its process was stopped or cut off meanwhile); the run is left to "
                         "the worker that holds it now")


def _call(fn: Callable[..., Any], call: ActivityCall, info: Execution) -> Outcome:
    if info.clock is not None:
        info.started = info.clock.now()  # when it began, not when it was queued (hooks and spans tell it)
    token = _current.set(info)
    try:
        value = fn(*call.args, **dict(call.kwargs)) if call.kwargs else fn(*call.args)
        if inspect.iscoroutine(value):  # an async def behind a sync decorator: its coroutine, run to its end
            import asyncio

            value = asyncio.run(value)
        return True, value
    except Exception as exc:
        return False, exc
    finally:
        _current.reset(token)


def _gated_call(fn: Callable[..., Any], call: ActivityCall, info: Execution,
                check: Callable[[], bool] | None) -> Outcome:
    """:func:`_call` once the worker's gate (``check``, if any) lets the activity start."""
    if check is not None and not check():
        return False, NotStarted()
    return _call(fn, call, info)


async def _acall(fn: Callable[..., Any], call: ActivityCall, info: Execution,
                 check: Callable[[], bool] | None = None) -> Outcome:
    if check is not None:
        import asyncio

        if not await asyncio.to_thread(check):  # it may wait for a heartbeat: not on the loop
            return False, NotStarted()
    if info.clock is not None:
        info.started = info.clock.now()
    _current.set(info)  # each task runs in its own context copy
    try:
        coro: Coroutine[Any, Any, Any] = fn(*call.args, **dict(call.kwargs))
        return True, await coro
    except Exception as exc:
        return False, exc


def _cancel_then_stop(loop: asyncio.AbstractEventLoop) -> None:
    """On the loop, at close: the async activities still running are cancelled (their results are no longer
    wanted, as a sync one's are abandoned), so that their ``finally`` and ``async with`` clean up; then the
    loop stops. Stopped at once instead, they were destroyed pending, their cleanup never run."""
    import asyncio

    tasks = asyncio.all_tasks(loop)
    if not tasks:
        loop.stop()
        return
    for task in tasks:
        task.cancel()
    asyncio.gather(*tasks, return_exceptions=True).add_done_callback(lambda _: loop.stop())


class Executor:
    """Runs activities. ``threads=0`` runs sync ones inline when nothing else runs (one
    workflow at a time); ``serial=True`` runs every activity inline, one after the other,
    in the order they were yielded (deterministic completion order, for tests).

    ``overrides`` maps activity names to functions run instead (test doubles).
    """

    def __init__(self, threads: int, overrides: Mapping[str, Callable[..., Any]] | None = None, *,
                 serial: bool = False) -> None:
        self.serial = serial
        self.inline = threads == 0 or serial
        self._threads = threads or 8  # inline executors still need threads for parallel groups
        self._overrides = dict(overrides or {})
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inline_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        # A worker's: whether an activity submitted may still start once a thread takes it up (see Worker)
        self.gate: Gate | None = None

    def _function(self, call: ActivityCall) -> tuple[Callable[..., Any], bool]:
        fn = self._overrides.get(call.activity.name)
        if fn is None:
            return call.activity.fn, call.activity.is_async
        return fn, inspect.iscoroutinefunction(fn)

    def run_inline(self, call: ActivityCall, info: Execution) -> Outcome:
        """Run in this thread and return the outcome (only when ``inline``)."""
        if not self._overrides and not call.activity.is_async:  # the hot path
            return _call(call.activity.fn, call, info)
        fn, is_async = self._function(call)
        if is_async:
            return self._event_loop_inline().run_until_complete(_acall(fn, call, info))
        return _call(fn, call, info)

    def submit(self, call: ActivityCall, info: Execution, done: Done) -> None:
        """Run in the background; ``done(outcome)`` is called from another thread."""
        fn, is_async = self._function(call)
        check = None if self.gate is None else self.gate(info.workflow_id)
        if is_async:
            import asyncio

            future = asyncio.run_coroutine_threadsafe(_acall(fn, call, info, check), self._event_loop_thread())
            # cancelled only at close (the engine wants no result then): nothing to hand over
            future.add_done_callback(lambda f: None if f.cancelled() else done(f.result()))
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="replaykit-activity")
            self._pool.submit(lambda: done(_gated_call(fn, call, info, check)))

    def _event_loop_inline(self) -> asyncio.AbstractEventLoop:
        if self._inline_loop is None:
            import asyncio

            self._inline_loop = asyncio.new_event_loop()
        return self._inline_loop

    def _event_loop_thread(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            import asyncio

            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                 name="replaykit-async-activities")
            self._loop_thread.start()
        return self._loop

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(_cancel_then_stop, self._loop)
            self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()
        if self._inline_loop is not None:
            self._inline_loop.close()
