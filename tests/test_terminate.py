"""rk.terminate: a run ends ``cancelled`` without running more of its code, driven or not."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main as cli

from conftest import PYTHON
from helpers import read_journal, wait_until

CHILD = str(Path(__file__).with_name("terminate_child.py"))


def _engine_process(db: str, marker: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([PYTHON, CHILD, db, str(marker)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _result_error(db: str, workflow_id: str) -> BaseException:
    with rk.Client(db) as client, pytest.raises(rk.WorkflowCancelled) as caught:
        client.handle(workflow_id).result(timeout=10)
    return caught.value


@pytest.mark.parametrize("how", ["terminate", "cancel"])
def test_a_run_another_process_drives_ends_without_its_code_running(any_db: str, tmp_path: Path, how: str,
                                                                   child_env: dict[str, str]) -> None:
    marker = tmp_path / "marker"
    proc = _engine_process(any_db, marker, child_env)
    try:
        if how == "terminate":
            rk.terminate(any_db, "guarded", "by the test")
        else:  # the contrast: a cancellation runs the workflow's except block and its compensation
            rk.cancel(any_db, "guarded", "by the test")
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    if how == "terminate":
        assert out == "WorkflowTerminated workflow 'guarded' was terminated: by the test\n"
        assert read_journal(str(marker)) == ["waiting"]
        assert isinstance(_result_error(any_db, "guarded"), rk.WorkflowTerminated)
    else:
        assert out == "WorkflowCancelled workflow 'guarded' was cancelled: by the test\n"
        assert read_journal(str(marker)) == ["waiting", "compensated"]
    with rk.Client(any_db) as client:
        assert client.handle("guarded").status() is rk.Status.CANCELLED
        with pytest.raises(rk.IllegalTransitionError, match="already cancelled; nothing to terminate"):
            client.terminate("guarded")


def test_a_run_left_by_a_killed_process_is_ended_at_once_without_its_code(db: str, tmp_path: Path,
                                                                         child_env: dict[str, str]) -> None:
    marker = tmp_path / "marker"
    proc = _engine_process(db, marker, child_env)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    rk.terminate(db, "guarded", "its code is gone")  # this process has never imported the workflow
    error = _result_error(db, "guarded")
    assert isinstance(error, rk.WorkflowTerminated) and isinstance(error.__cause__, rk.Terminated)
    assert error.reason == "its code is gone"
    with rk.SqliteStore(db) as store:
        history = list(store.events("guarded"))  # read back through the hash chain and the run's seal
        assert [e.kind for e in history] == ["start", "activity", "result"]
        assert store.info("guarded").status is rk.Status.CANCELLED
    assert read_journal(str(marker)) == ["waiting"]
    with rk.Engine(db) as engine:
        assert engine.recover() == []  # nothing left to drive, and nothing locked behind


@rk.workflow(name="terminate.child")
def child(ctx: rk.Context):
    yield rk.wait_signal("never")


@rk.workflow(name="terminate.parent")
def parent(ctx: rk.Context):
    return (yield rk.child_workflow(child, workflow_id="terminate-kid"))


def test_terminating_a_run_nobody_drives_cancels_its_unfinished_children(db: str) -> None:
    with rk.Engine(db, workflows=[parent, child]) as engine:
        engine.start(parent, workflow_id="terminate-parent")
        wait_until(lambda: engine.store.info("terminate-kid") is not None, "the child has started")
    rk.terminate(db, "terminate-parent")
    with rk.Engine(db, workflows=[parent, child]) as engine:
        kids = {h.workflow_id: h for h in engine.recover()}
        assert set(kids) == {"terminate-kid"}
        with pytest.raises(rk.WorkflowCancelled, match="parent terminated") as caught:
            kids["terminate-kid"].result(timeout=10)
        assert not isinstance(caught.value, rk.WorkflowTerminated)
        with pytest.raises(rk.WorkflowTerminated):
            engine.handle("terminate-parent").result(timeout=1)


def test_the_cli_terminates_and_refuses_what_cannot_be(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(db, workflows=[child]) as engine:
        engine.start(child, workflow_id="kid")
    assert cli(["terminate", db, "kid", "--reason", "from the shell"]) == 0
    assert cli(["terminate", db, "kid"]) == 1
    assert "workflow 'kid' is already cancelled; nothing to terminate" in capsys.readouterr().err
    assert cli(["terminate", db, "nobody"]) == 1
    assert "no workflow with id 'nobody'" in capsys.readouterr().err
    with rk.Engine(db) as engine, pytest.raises(rk.WorkflowTerminated, match="from the shell"):
        engine.handle("kid").result(timeout=1)


HOLDER = """
import sys, time
from replaykit.store import open_store
with open_store(sys.argv[1], create=False) as store:
    assert store.try_lock("guarded")
    print("locked", flush=True)
    sys.stdin.readline()  # until the test has asked for the run's end
    time.sleep(0.3)
    store.unlock("guarded")  # lets it go without ending it, as a process whose code cannot replay it does
"""


def test_a_run_let_go_without_being_ended_is_ended_by_the_call(any_db: str, tmp_path: Path,
                                                               child_env: dict[str, str]) -> None:
    proc = _engine_process(any_db, tmp_path / "marker", child_env)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    holder = subprocess.Popen([PYTHON, "-c", HOLDER, any_db], env=child_env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with rk.Client(any_db) as client:
            with pytest.raises(rk.ResultTimeoutError, match="has not ended it after 0.1s"):
                client.terminate("guarded", "held", wait=0.1)  # the holder did neither: the request stays
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()
            client.terminate("guarded", "let go")  # returns once it ended: here, after the holder let it go
            assert client.handle("guarded").status() is rk.Status.CANCELLED
            with pytest.raises(rk.WorkflowTerminated, match="let go"):
                client.handle("guarded").result(timeout=1)
            assert client.store.next_signal("guarded", "__replaykit_terminate__") is None  # both answered
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_restarted_run_is_not_ended_by_requests_meant_for_the_run_before() -> None:
    from replaykit.terminating import request

    with rk.Engine(rk.MemoryStore(), workflows=[waiting]) as engine:
        handle = engine.start(waiting, workflow_id="twice")
        wait_until(lambda: engine.store.lock_owner("twice") is not None, "the engine holds it, waiting for go")
        gate = threading.Event()
        engine._post(lambda: None if gate.wait(timeout=10) else None)  # the driver applies neither yet
        assert not request(engine.store, "twice", "first call", time.time())  # held by the engine: requests
        assert not request(engine.store, "twice", "second call", time.time())
        gate.set()
        with pytest.raises(rk.WorkflowTerminated, match="first call"):
            handle.result(timeout=10)
        assert engine.store.next_signal("twice", "__replaykit_terminate__") is None  # both answered
        again = engine.restart("twice")
        engine.signal("twice", "go", "at last")
        assert again.result(timeout=10) == "at last"


@rk.workflow(name="terminate.waiting")
def waiting(ctx: rk.Context) -> rk.Flow[str]:
    answer: str = yield rk.wait_signal("go")
    return answer


def test_terminate_from_an_activity_on_the_engines_own_thread_does_not_hold_it_up() -> None:
    engines: list[rk.Engine] = []

    @rk.activity
    def end_the_other() -> str:
        try:
            engines[0].terminate("victim", "from an activity", wait=5)
        except rk.ResultTimeoutError as exc:  # it waited on the thread that had to end the run
            return f"timed out: {exc}"
        return "ended"

    @rk.workflow(name="terminate.killer")
    def killer(ctx: rk.Context) -> rk.Flow[str]:
        return (yield end_the_other())

    with rk.Engine(rk.MemoryStore(), activity_threads=0) as engine:  # activities inline, on the driver
        engines.append(engine)
        victim = engine.start(waiting, workflow_id="victim")
        assert engine.start(killer, workflow_id="killer").result(timeout=20) == "ended"
        with pytest.raises(rk.WorkflowTerminated, match="from an activity"):
            victim.result(timeout=10)


@rk.workflow(name="terminate.sleeper")
def sleeper(ctx: rk.Context) -> rk.Flow[str]:
    yield rk.sleep(3600)
    return "woke"


def test_the_handle_of_a_run_the_engine_evicted_learns_of_its_termination() -> None:
    with rk.Engine(rk.MemoryStore(), max_cached_runs=0) as engine:
        handle = engine.start(sleeper, workflow_id="evicted")
        wait_until(lambda: "evicted" in engine._evicted, "it is parked on its timer and evicted")
        engine.terminate("evicted", "not an hour more")  # ended here, under its lock
        with pytest.raises(rk.WorkflowTerminated, match="not an hour more"):
            handle.result(timeout=10)  # not when its hour-long timer would have woken it
