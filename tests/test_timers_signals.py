"""Durable timers and signals, including signals sent from other processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

import replaykit as rk
from replaykit.store import open_store

from conftest import PYTHON
from helpers import waits_for_approval


@rk.workflow
def nap(ctx: rk.Context, seconds: float):
    yield rk.sleep(timedelta(seconds=seconds))
    return ctx.now().timestamp()


def _events(db: str, workflow_id: str) -> list[rk.Event]:
    with open_store(db) as store:
        return list(store.events(workflow_id))


def test_timer_fires_at_its_deadline_not_before(any_db: str) -> None:
    woke_at = rk.run(nap, 0.3, workflow_id="n", db=any_db)
    start, timer, result = _events(any_db, "n")
    assert timer.kind == "timer" and timer.at >= start.at + 0.3
    assert abs(woke_at - timer.at) < 1e-5  # ctx.now() after the timer is the recorded firing time


def test_timer_deadline_survives_a_restart(any_db: str) -> None:
    from replaykit.testing.timeskip import FakeClock

    # Fake clocks (they move only while somebody waits for a result): the first engine cannot fire the
    # timer however long it takes to close, and the firing time recorded is exact, whatever the load.
    began = time.time()
    with rk.Engine(any_db, clock=FakeClock(began)) as engine:
        engine.start(nap, 1.5, workflow_id="n")
    with rk.Engine(any_db, clock=FakeClock(began + 0.5)) as engine:  # restarted 0.5 s later
        engine.start(nap, 1.5, workflow_id="n").result(timeout=10)
    start, timer, _ = _events(any_db, "n")
    assert timer.kind == "timer"
    # Counted from the original start (from the restart, it would have fired 0.5 s later).
    assert timer.at - start.at == pytest.approx(1.5, abs=1e-5)


def test_sleep_until_absolute_time(any_db: str) -> None:
    @rk.workflow
    def until(ctx: rk.Context, when: float):
        yield rk.sleep_until(datetime.fromtimestamp(when, tz=timezone.utc))
        return "woke"

    target = time.time() + 0.3
    assert rk.run(until, target, workflow_id="u", db=any_db) == "woke"
    assert _events(any_db, "u")[1].at >= target


def test_signal_sent_before_the_wait_is_kept_in_the_inbox(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        handle = engine.start(waits_for_approval, workflow_id="s")
        engine.signal("s", "approved", {"by": "ann"})
        assert handle.result(timeout=10) == {"answer": {"by": "ann"}}


def test_signals_of_one_name_are_taken_in_order(any_db: str) -> None:
    @rk.workflow
    def two(ctx: rk.Context):
        a = yield rk.wait_signal("n")
        b = yield rk.wait_signal("n")
        return [a, b]

    with rk.Engine(any_db) as engine:
        handle = engine.start(two, workflow_id="two")
        engine.signal("two", "other", 3)  # first: once both "n" arrive the run may end and refuse more mail
        engine.signal("two", "n", 1)
        engine.signal("two", "n", 2)
        assert handle.result(timeout=10) == [1, 2]


def test_signal_timeout_returns_none_and_is_recorded(any_db: str) -> None:
    assert rk.run(waits_for_approval, 0.2, workflow_id="t", db=any_db) == {"answer": None}
    start, wait, _ = _events(any_db, "t")
    assert (wait.kind, wait.name, wait.outcome) == ("signal", "approved", "timeout")
    assert wait.at >= start.at + 0.2


def test_signal_from_a_shell_command_reaches_a_waiting_workflow(any_db: str, child_env: dict[str, str]) -> None:
    with rk.Engine(any_db, poll_interval=0.02) as engine:
        handle = engine.start(waits_for_approval, workflow_id="order-1")
        _wait_until_waiting(engine, "order-1")
        subprocess.run([PYTHON, "-m", "replaykit", "signal", any_db, "order-1", "approved", '{"by": "bob"}'],
                       check=True, env=child_env, timeout=60)
        assert handle.result(timeout=10) == {"answer": {"by": "bob"}}


def test_signal_from_another_python_process(any_db: str, child_env: dict[str, str]) -> None:
    code = "import replaykit as rk, sys; rk.send_signal(sys.argv[1], 'order-2', 'approved', ('a', 1))"
    with rk.Engine(any_db, poll_interval=0.02) as engine:
        handle = engine.start(waits_for_approval, workflow_id="order-2")
        _wait_until_waiting(engine, "order-2")
        subprocess.run([PYTHON, "-c", code, any_db], check=True, env=child_env, timeout=60)
        assert handle.result(timeout=10) == {"answer": ("a", 1)}  # pickled: a tuple stays a tuple


def test_signal_to_unknown_workflow_is_an_error(any_db: str, child_env: dict[str, str]) -> None:
    rk.run(waits_for_approval, 0, workflow_id="exists", db=any_db)
    with pytest.raises(rk.WorkflowNotFoundError, match="no workflow with id 'nope'"):
        rk.send_signal(any_db, "nope", "approved", True)
    done = subprocess.run([PYTHON, "-m", "replaykit", "signal", any_db, "nope", "approved"],
                          env=child_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no workflow with id 'nope'" in done.stderr


def _wait_until_waiting(engine: rk.Engine, workflow_id: str) -> None:
    deadline = time.monotonic() + 10
    while workflow_id not in engine._runs or not any(
            leaf.command.kind == "signal" for leaf in engine._runs[workflow_id].machine.outstanding.values()):
        assert time.monotonic() < deadline, "workflow never started waiting"
        time.sleep(0.01)


def test_runs_parked_on_timers_are_evicted_and_replayed_when_due() -> None:
    from replaykit.clock import FakeClock

    clock = FakeClock(1_000_000.0)
    with rk.Engine(rk.MemoryStore(), clock=clock, max_cached_runs=2) as engine:
        handles = [engine.start(nap, 3600.0 + i, workflow_id=f"n{i}") for i in range(10)]
        deadline = time.monotonic() + 10
        while len(engine._evicted) < 8:
            assert time.monotonic() < deadline, "parked runs were not evicted"
            time.sleep(0.01)
        assert len(engine._runs) == 2  # only two stay in memory
        clock.waiting(+1)  # let time skip, as a test environment does while waiting
        engine._post(lambda: None)
        assert [h.result(timeout=10) for h in handles] == [1_000_000.0 + 3600 + i for i in range(10)]
        assert not engine._evicted and not engine._runs
