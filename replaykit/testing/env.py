"""``TestEnv``: run workflows in-process on a fake clock that skips ahead.

A workflow that sleeps for a month and waits for a human runs in milliseconds:
whenever nothing can make progress (no activity running) while a test waits for
a result, the clock jumps to the next due timer. The same engine, interpreter and
store interface as production; the in-memory store by default.
"""

from __future__ import annotations

import inspect
import itertools
import os
import types
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload
from unittest import mock

try:
    import freezegun
except ImportError as exc:  # an extra: production installs need no fake clock
    raise ImportError('replaykit.testing.TestEnv needs freezegun: pip install "replaykit[testing]"') from exc

from ..activity import Activity, Execution
from ..clock import seconds
from ..commands import A1, A2, A3, A4, A5, A6, ActivityCall, R, utc
from ..executor import Executor, Outcome
from ..handle import WorkflowHandle
from ..history import Event
from ..runtime import Engine
from ..store import MemoryStore, Store, open_store
from ..workflow import as_workflow
from .timeskip import DEFAULT_START, FakeClock

if TYPE_CHECKING:
    from ..workflow import Takes0, Takes1, Takes2, Takes3, Takes4, Takes5, Takes6, Workflow

# Test tooling that keeps the real clock: pytest times tests with functions it imported from `time`.
_TOOLING = ("_pytest", "pytest", "pluggy", "xdist", "hypothesis", "coverage")


def _spare_tooling(freezer: Any) -> None:
    """Give the test tooling its real clock back.

    freezegun replaces the clock functions in every loaded module (``from time import
    perf_counter`` included), so pytest's own timing read fake time: ``--durations``
    reported 1.9e9 s. Its ``ignore`` option is no help: it also hands real time to any
    code called from a pytest frame, test bodies included.
    """
    for owner, attribute, real in getattr(freezer, "undo_changes", ()):
        if isinstance(owner, types.ModuleType) and owner.__name__.startswith(_TOOLING):
            setattr(owner, attribute, real)  # freezegun's stop() sets the same value again


class _RecordingExecutor(Executor):
    """An executor that notes every activity it runs, in order: the call, and its (step, attempt)."""

    def __init__(self, threads: int, overrides: Mapping[str, Callable[..., Any]],
                 calls: list[ActivityCall], runs: list[tuple[int, int]], serial: bool) -> None:
        super().__init__(threads, overrides, serial=serial)
        self._calls = calls
        self._runs = runs

    def _note(self, call: ActivityCall, info: Execution) -> None:
        self._calls.append(call)
        self._runs.append((info.step, info.attempt))

    def run_inline(self, call: ActivityCall, info: Execution) -> Outcome:
        self._note(call, info)
        return super().run_inline(call, info)

    def submit(self, call: ActivityCall, info: Execution, done: Callable[[Outcome], None]) -> None:
        self._note(call, info)
        super().submit(call, info, done)


class TestEnv:
    """A time-skipping test environment; use it as a context manager.

    ``activities`` replaces activities (given as the decorated activity or its
    name) by test doubles; each double is wrapped in a ``unittest.mock.Mock``
    (``AsyncMock`` for ``async def``), returned by :meth:`mock`, so tests can
    assert on calls. ``freeze_time`` makes ``datetime.now()``, ``time.time()``
    and friends return the fake time while the environment is open (freezegun).
    ``db`` is a path for a real SQLite store instead of the in-memory one.
    ``strict_replay`` replays every run from scratch after each step to catch
    non-determinism on the first run; ``warn_nondeterminism`` warns when
    workflow code calls the clock, ``random``, ``uuid`` or does I/O directly.
    ``concurrent_activities=False`` runs activities one at a time, in the order they
    were yielded, so that parallel groups complete in a repeatable order.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        *,
        start: datetime = DEFAULT_START,
        activities: Mapping[Any, Any] | None = None,  # an Activity or its name -> its double (a callable)
        workflows: Iterable[Any] = (),
        db: str | os.PathLike[str] | Store | None = None,
        freeze_time: bool = True,
        strict_replay: bool = False,
        warn_nondeterminism: bool = True,
        activity_threads: int = 8,
        concurrent_activities: bool = True,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError(f"TestEnv(start=...) needs a timezone-aware datetime, got {start!r}")
        self.clock = FakeClock(start.timestamp())
        self.activity_calls: list[ActivityCall] = []
        self.activity_runs: list[tuple[int, int]] = []  # (step, attempt) of each execution, in order
        self._mocks: dict[str, mock.Mock] = {}
        for key, fake in (activities or {}).items():
            name = key.name if isinstance(key, Activity) else key
            double = mock.AsyncMock if inspect.iscoroutinefunction(fake) else mock.Mock
            self._mocks[name] = double(side_effect=fake)
        if db is None:
            self.store: Store = MemoryStore()
        else:
            self.store = db if isinstance(db, Store) else open_store(db)
        self._own_store = db is not None and not isinstance(db, Store)
        self.engine = Engine(
            self.store, workflows=workflows, clock=self.clock, poll_interval=0.01,
            executor=_RecordingExecutor(activity_threads, self._mocks, self.activity_calls, self.activity_runs,
                                        serial=not concurrent_activities),
            warn_nondeterminism=warn_nondeterminism, strict_replay=strict_replay,
        )
        self._freeze = freeze_time
        self._freezer: Any = None
        self._ids = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> TestEnv:
        if self._freeze:
            # real_asyncio: an async activity's event loop keeps real time, or its awaited timers never end
            self._freezer = freezegun.freeze_time(self.now(), real_asyncio=True)
            frozen = self._freezer.start()
            _spare_tooling(self._freezer)
            self.clock.on_move.append(lambda t: frozen.move_to(utc(t)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()
        if self._freezer is not None:
            self._freezer.stop()
            self._freezer = None
        if self._own_store:
            self.store.close()

    # -- running workflows ------------------------------------------------------------

    # Typed by arity, as Engine.start: positional arguments are checked against the workflow's parameters.
    @overload
    def start(self, workflow: Takes0[R], /, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes1[A1, R], /, a1: A1, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes2[A1, A2, R], /, a1: A1, a2: A2, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes3[A1, A2, A3, R], /, a1: A1, a2: A2, a3: A3, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes4[A1, A2, A3, A4, R], /, a1: A1, a2: A2, a3: A3, a4: A4, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes5[A1, A2, A3, A4, A5, R], /, a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Takes6[A1, A2, A3, A4, A5, A6, R], /, a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: Workflow[..., R], /, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None,
              **kwargs: Any) -> WorkflowHandle[R]: ...

    def start(self, workflow: Any, /, *args: Any, workflow_id: str | None = None, **kwargs: Any) -> WorkflowHandle[Any]:
        """Start a run (id defaults to ``<workflow name>-<n>``); returns its handle at once."""
        if workflow_id is None:
            workflow_id = f"{as_workflow(workflow).name}-{next(self._ids)}"
        return self.engine.start(workflow, *args, workflow_id=workflow_id, **kwargs)

    @overload
    def run(self, workflow: Takes0[R], /, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> R: ...
    @overload
    def run(self, workflow: Takes1[A1, R], /, a1: A1, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> R: ...
    @overload
    def run(self, workflow: Takes2[A1, A2, R], /, a1: A1, a2: A2, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> R: ...
    @overload
    def run(self, workflow: Takes3[A1, A2, A3, R], /, a1: A1, a2: A2, a3: A3, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> R: ...
    @overload
    def run(self, workflow: Takes4[A1, A2, A3, A4, R], /, a1: A1, a2: A2, a3: A3, a4: A4, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> R: ...
    @overload
    def run(self, workflow: Takes5[A1, A2, A3, A4, A5, R], /, a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> R: ...
    @overload
    def run(self, workflow: Takes6[A1, A2, A3, A4, A5, A6, R], /, a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None) -> R: ...
    @overload
    def run(self, workflow: Workflow[..., R], /, *,
              workflow_id: str | None = None, timeout: timedelta | float | None = None,
              start_at: datetime | None = None, start_delay: timedelta | float | None = None,
              **kwargs: Any) -> R: ...

    def run(self, workflow: Any, /, *args: Any, workflow_id: str | None = None, **kwargs: Any) -> Any:
        """Start a run and wait for its result, skipping time as needed."""
        return self.start(workflow, *args, workflow_id=workflow_id, **kwargs).result(timeout=60)

    def signal(self, workflow_id: str, name: str, payload: Any = None, *,
               at: datetime | timedelta | None = None) -> None:
        """Send a signal now, or at a fake time (``at``: a datetime, or a delay from now)."""
        if at is None:
            self.engine.signal(workflow_id, name, payload)
            return
        when = (self.now() + at if isinstance(at, timedelta) else at).timestamp()
        encoded = self.store.codec.encode(payload, f"payload of signal {name!r} to {workflow_id!r}")

        def deliver() -> None:
            self.store.send_signal(workflow_id, name, *encoded, when)
            self.engine._deliver_signals(workflow_id)

        self.engine._call_at(when, deliver)

    # -- time -------------------------------------------------------------------------

    def now(self) -> datetime:
        """The fake time."""
        return utc(self.clock.now())

    def sleep(self, duration: timedelta | float) -> None:
        """Move fake time forward by ``duration``, running every timer that falls due on the way."""
        reached = self.clock.begin_sleep(seconds(duration, "the test environment's sleep (fake time never goes "
                                                 "backwards)"))
        self.engine._post(lambda: None)  # wake the driver
        if not reached.wait(timeout=60):
            raise TimeoutError("fake time could not advance: an activity has been running for 60 real seconds")

    def advance_to(self, when: datetime) -> None:
        """Move fake time forward to ``when`` (which must not be in the fake past)."""
        self.sleep(when - self.now())

    # -- inspection -------------------------------------------------------------------

    def mock(self, activity: Activity[Any] | str) -> mock.Mock:
        """The ``Mock`` standing in for a replaced activity, for ``assert_called_with`` & co."""
        name = activity.name if isinstance(activity, Activity) else activity
        try:
            return self._mocks[name]
        except KeyError:
            raise KeyError(f"activity {name!r} was not replaced; pass it in TestEnv(activities={{...}})") from None

    def history(self, workflow_id: str) -> list[Event]:
        """The recorded events of a run."""
        return list(self.store.events(workflow_id))

