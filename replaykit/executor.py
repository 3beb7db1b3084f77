"""Running activity functions: inline, or on a thread pool; ``async def`` ones on an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .activity import _current
from .commands import ActivityCall

Outcome = tuple[bool, Any]  # (True, value) or (False, exception)
Done = Callable[[Outcome], None]


def _call(call: ActivityCall, info: tuple[str, int, int, str]) -> Outcome:
    token = _current.set(info)
    try:
        if call.kwargs:
            return True, call.activity.fn(*call.args, **dict(call.kwargs))
        return True, call.activity.fn(*call.args)
    except Exception as exc:
        return False, exc
    finally:
        _current.reset(token)


async def _acall(call: ActivityCall, info: tuple[str, int, int, str]) -> Outcome:
    _current.set(info)  # each task runs in its own context copy
    try:
        coro: Coroutine[Any, Any, Any] = call.activity.fn(*call.args, **dict(call.kwargs))
        return True, await coro
    except Exception as exc:
        return False, exc


class Executor:
    """Runs activities. ``threads=0`` runs sync ones inline (one workflow at a time)."""

    def __init__(self, threads: int) -> None:
        self.inline = threads == 0
        self._pool = None if self.inline else ThreadPoolExecutor(threads, thread_name_prefix="replaykit-activity")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def run_inline(self, call: ActivityCall, info: tuple[str, int, int, str]) -> Outcome:
        """Run in this thread and return the outcome (only when ``inline``)."""
        if call.activity.is_async:
            return self._event_loop_inline().run_until_complete(_acall(call, info))
        return _call(call, info)

    def submit(self, call: ActivityCall, info: tuple[str, int, int, str], done: Done) -> None:
        """Run in the background; ``done(outcome)`` is called from another thread."""
        if call.activity.is_async:
            future = asyncio.run_coroutine_threadsafe(_acall(call, info), self._event_loop_thread())
            future.add_done_callback(lambda f: done(f.result()))
        else:
            assert self._pool is not None
            self._pool.submit(lambda: done(_call(call, info)))

    def _event_loop_inline(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _event_loop_thread(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                 name="replaykit-async-activities")
            self._loop_thread.start()
        return self._loop

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None:
            if self._loop_thread is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()
