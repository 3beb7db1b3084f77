"""A slice of the behavioural suite run against SQLite and PostgreSQL alike, through the ``db``
argument users pass: an SQLite path, or a ``postgresql://`` URL (``rk.Engine(db)``, ``rk.run(db=)``,
the operations by path and the command line). Crashes are real processes killed with SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.store import open_store

from conftest import PYTHON, ROOT
from helpers import read_journal

log: list[str] = []


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """What a user passes as ``db``: a path, or a PostgreSQL URL."""
    log.clear()
    yield request.getfixturevalue("pg_url") if request.param == "postgres" else str(tmp_path / "store.db")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "replaykit", *args], env=env, capture_output=True, text=True, timeout=60)


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@rk.activity
def note(text: str) -> str:
    log.append(text)
    return text


@rk.workflow(name="stores.approval")
def approval(ctx: rk.Context, order: str):
    checked = yield note(f"checked {order}")
    yield rk.sleep(0.05)
    answer = yield rk.wait_signal("approved", timeout=30)
    extra = yield rk.wait_signal("extra", timeout=0.05)  # times out: recorded as None
    return [checked, answer, extra]


def test_activities_timers_and_signals_from_another_process(db: str, child_env: dict[str, str]) -> None:
    with rk.Engine(db, poll_interval=0.02) as engine:
        handle = engine.start(approval, "o-1", workflow_id="o-1")
        wait_for(lambda: log)
        sent = cli(child_env, "signal", db, "o-1", "approved", '{"by": "ann"}')
        assert sent.returncode == 0, sent.stderr
        assert handle.result(timeout=20) == ["checked o-1", {"by": "ann"}, None]
    assert rk.run(approval, "o-1", workflow_id="o-1", db=db) == ["checked o-1", {"by": "ann"}, None]
    assert log == ["checked o-1"]  # the rerun only read the recorded result
    listed = cli(child_env, "list", db, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["workflow_id"], r["name"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("o-1", "stores.approval", "completed")]
    history = cli(child_env, "history", db, "o-1")
    assert "signal 'approved'" in history.stdout and history.stdout.count("\n") == 1 + 6, history.stdout  # a header
    refused = cli(child_env, "signal", db, "o-1", "approved", "true")
    assert refused.returncode == 1 and "can no longer take signals" in refused.stderr


def test_sigkill_mid_run_then_rerun_continues(db: str, tmp_path: Path, child_env: dict[str, str]) -> None:
    child, journal = str(ROOT / "tests" / "crash_child.py"), str(tmp_path / "journal")
    killed = subprocess.run([PYTHON, child, db, journal, "inside:4"], env=child_env, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rerun = subprocess.run([PYTHON, child, db, journal, "none"], env=child_env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0 and rerun.stdout.strip() == str(sum(i * i for i in range(10))), rerun.stderr
    done = Counter(int(line.split()[1]) for line in read_journal(journal))
    assert done == {**{i: 1 for i in range(10)}, 4: 2}  # only the step in flight ran again
    with open_store(db, create=False) as store:
        assert [e.seq for e in store.events("ten")] == list(range(12))


def test_a_killed_engine_leaves_its_runs_to_the_next_one(db: str, child_env: dict[str, str]) -> None:
    code = ("import sys, time, replaykit as rk, test_engine_on_stores as t\n"
            "engine = rk.Engine(sys.argv[1])\n"
            "engine.start(t.approval, 'o-2', workflow_id='o-2')\n"
            "while len(list(engine.store.events('o-2'))) < 3:  # started, checked, slept: waits for the signal\n"
            "    time.sleep(0.01)\n"
            "print('parked', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([PYTHON, "-c", code, db], env=child_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "parked\n", holder.stderr
        with rk.Engine(db, workflows=[approval], poll_interval=0.02) as engine:
            owner = engine.store.lock_owner("o-2")  # a live process drives it
            assert owner is not None and f"pid {holder.pid} " in owner, owner
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            assert [h.workflow_id for h in engine.recover()] == ["o-2"]
            engine.signal("o-2", "approved", True)
            assert engine.handle("o-2").result(timeout=20) == ["checked o-2", True, None]
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert log == []  # the activity ran in the killed process, and was not run again here


step_2_began, step_2_may_end = threading.Event(), threading.Event()


@rk.activity
def gated_note(text: str) -> str:
    """``note``; but step 2 waits until the test lets it end (it is the step under way when the run pauses)."""
    if text == "step 2":
        step_2_began.set()
        assert step_2_may_end.wait(timeout=30)
    log.append(text)
    return text


@rk.workflow(name="stores.steps")
def steps(ctx: rk.Context, total: int):
    done: list[int] = []

    @ctx.query("progress")
    def progress() -> str:
        return f"{len(done)}/{total}"

    for i in range(total):
        yield rk.sleep(0.05)
        yield gated_note(f"step {i}")
        done.append(i)
        ctx.set_status({"done": len(done)})
    return "done"


def test_pause_resume_query_and_custom_status(db: str) -> None:
    step_2_began.clear()
    step_2_may_end.clear()
    paused = threading.Event()
    with rk.Engine(db, poll_interval=0.02) as engine:
        engine.on("run_paused", lambda event: paused.set())
        handle = engine.start(steps, 6, workflow_id="p")
        assert step_2_began.wait(timeout=20)
        rk.pause(db, "p")
        assert handle.status() is rk.Status.PAUSED
        assert paused.wait(timeout=20)  # the engine holds the pause, with step 2 under way
        step_2_may_end.set()
        # The step under way ends, and the run stops at its next yield (its custom status saved there).
        wait_for(lambda: engine.store.info("p").custom_status == {"done": 3}, timeout=30)  # type: ignore[union-attr]
        assert log == ["step 0", "step 1", "step 2"]
        assert rk.query(db, "p", "progress", workflows={"stores.steps": steps}) == "3/6"
        rk.resume(db, "p")
        assert handle.result(timeout=20) == "done"
    assert log == [f"step {i}" for i in range(6)]


@rk.workflow(name="stores.cancellable")
def cancellable(ctx: rk.Context):
    try:
        yield note("started")
        yield rk.sleep(3600)
    except rk.Cancelled:
        yield note("compensated")
        raise


def test_cancel_from_a_shell(db: str, child_env: dict[str, str]) -> None:
    with rk.Engine(db, poll_interval=0.02) as engine:
        handle = engine.start(cancellable, workflow_id="c")
        wait_for(lambda: log)
        assert cli(child_env, "cancel", db, "c").returncode == 0
        with pytest.raises(rk.WorkflowCancelled):
            handle.result(timeout=20)
    assert log == ["started", "compensated"]
    assert [i.status for i in open_store(db, create=False).list()] == [rk.Status.CANCELLED]


@rk.workflow(name="stores.counter")
def counter(ctx: rk.Context, n: int, total: int):
    total += yield note(f"round {n}")  # type: ignore[operator]
    if n < 3:
        yield rk.continue_as_new(n + 1, total)
    return total


@rk.workflow(name="stores.child")
def child(ctx: rk.Context, item: str):
    return (yield note(f"child {item}"))


@rk.workflow(name="stores.parent")
def parent(ctx: rk.Context):
    a = yield rk.child_workflow(child, "a")
    b, c = yield rk.all(rk.child_workflow(child, "b"), rk.child_workflow(child, "c"))
    return [a, b, c]


def test_continue_as_new_and_children(db: str) -> None:
    assert rk.run(counter, 1, "", workflow_id="n", db=db) == "round 1round 2round 3"
    with rk.Engine(db) as engine:
        assert engine.start(parent, workflow_id="par").result(timeout=20) == ["child a", "child b", "child c"]
        listed = {i.workflow_id: i.status for i in engine.store.list()}
    assert listed == {"n": rk.Status.COMPLETED, "par": rk.Status.COMPLETED, "par/1": rk.Status.COMPLETED,
                      "par/2": rk.Status.COMPLETED, "par/3": rk.Status.COMPLETED}
