"""Restarting a failed or cancelled run, and forking a run from step N into a new id, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.history import RESULT
from replaykit.store import open_store

calls: list[str] = []
broken: set[str] = set()


@rk.activity
def step(name: str) -> str:
    calls.append(name)
    if name in broken:
        raise RuntimeError(f"{name} is down")
    return f"{name}-done"


@rk.workflow(name="three_steps")
def three_steps(ctx: rk.Context, tag: str) -> Any:
    a = yield step(f"{tag}-a")
    b = yield step(f"{tag}-b")
    c = yield step(f"{tag}-c")
    return [a, b, c, ctx.random().random()]


@pytest.fixture(autouse=True)
def _clean() -> Any:
    calls.clear()
    broken.clear()
    yield
    broken.clear()


def _fail_at_b(db: str) -> None:
    broken.add("t-b")
    with pytest.raises(rk.WorkflowFailed, match="t-b is down"):
        rk.run(three_steps, "t", workflow_id="w", db=db)
    broken.clear()
    calls.clear()


def test_restart_runs_a_failed_run_again_from_the_beginning(any_db: str) -> None:
    _fail_at_b(any_db)
    rk.restart(any_db, "w")
    result = rk.run(three_steps, "t", workflow_id="w", db=any_db)
    assert result[:3] == ["t-a-done", "t-b-done", "t-c-done"]
    assert calls == ["t-a", "t-b", "t-c"]
    with open_store(any_db) as store:
        assert store.info("w").status is rk.Status.COMPLETED


def test_restart_from_a_step_reuses_the_steps_before_it(any_db: str) -> None:
    broken.add("t-b")
    with pytest.raises(rk.WorkflowFailed):
        rk.run(three_steps, "t", workflow_id="w", db=any_db)
    broken.clear()
    calls.clear()
    rk.restart(any_db, "w", from_step=2)
    result = rk.run(three_steps, "t", workflow_id="w", db=any_db)
    assert calls == ["t-b", "t-c"]  # step 1 was reused as recorded
    assert result[:3] == ["t-a-done", "t-b-done", "t-c-done"]


def test_restart_of_a_cancelled_run(any_db: str) -> None:

    @rk.workflow(name="waits")
    def waits(ctx: rk.Context) -> Any:
        got = yield rk.wait_signal("go")
        return got

    with rk.Engine(any_db) as engine:
        handle = engine.start(waits, workflow_id="c")
        engine.cancel("c", "operator said so")
        with pytest.raises(rk.WorkflowCancelled):
            handle.result(timeout=10)
        rk.restart(any_db, "c", workflows=[waits])
        [handle] = engine.recover()
        engine.signal("c", "go", 7)
        assert handle.result(timeout=10) == 7


@pytest.mark.parametrize("status", ["completed", "running"])
def test_only_runs_that_ended_badly_restart(any_db: str, status: str) -> None:
    if status == "completed":
        rk.run(three_steps, "t", workflow_id="w", db=any_db)
    else:
        with open_store(any_db) as store:
            from replaykit.history import OK, START, Event

            store.create("w", "three_steps", Event(0, 0, START, "three_steps", 0.0, OK, "json",
                                                   '{"args": ["t"], "kwargs": {}, "seed": 1, "rules": 2}'))
    with pytest.raises(rk.IllegalTransitionError, match=f"is {status}; only a failed"):
        rk.restart(any_db, "w")


def test_fork_reuses_steps_before_n_and_leaves_the_original_alone(any_db: str) -> None:
    original = rk.run(three_steps, "t", workflow_id="w", db=any_db)
    calls.clear()
    rk.fork(any_db, "w", "w-fork", step=3)
    forked = rk.run(three_steps, "t", workflow_id="w-fork", db=any_db)
    assert calls == ["t-c"]
    assert forked == original  # same arguments, same seed, same recorded steps
    with open_store(any_db) as store:
        assert store.info("w").status is rk.Status.COMPLETED
        assert [e.kind for e in store.events("w")][-1] == RESULT
        assert len(list(store.events("w"))) == 5
    with pytest.raises(rk.IllegalTransitionError, match="is taken"):
        rk.fork(any_db, "w", "w-fork", step=2)


def test_a_prefix_the_code_can_no_longer_replay_is_refused_and_nothing_is_written(any_db: str) -> None:
    _fail_at_b(any_db)

    def changed_code(ctx: rk.Context, tag: str) -> Any:
        yield rk.sleep(1)  # was: an activity
        return None

    changed = rk.Workflow(changed_code, "three_steps")  # not registered: the module's stays in place

    with pytest.raises(rk.NonDeterminismError):
        rk.restart(any_db, "w", from_step=2, workflows=[changed])
    with pytest.raises(rk.NonDeterminismError):
        rk.fork(any_db, "w", "w2", step=2, workflows=[changed])
    with open_store(any_db) as store:
        assert store.info("w").status is rk.Status.FAILED
        assert store.info("w2") is None


def test_restart_and_fork_on_the_memory_store() -> None:
    store = rk.MemoryStore()
    broken.add("t-b")
    with rk.Engine(store, activity_threads=0) as engine:
        with pytest.raises(rk.WorkflowFailed):
            engine.start(three_steps, "t", workflow_id="w").result(timeout=10)
    broken.clear()
    calls.clear()
    rk.restart(store, "w", from_step=2)
    with rk.Engine(store, activity_threads=0) as engine:
        assert engine.start(three_steps, "t", workflow_id="w").result(timeout=10)[:3] == [
            "t-a-done", "t-b-done", "t-c-done"]
    assert calls == ["t-b", "t-c"]


def test_a_store_never_reads_an_older_generation_another_store_replaced(any_db: str) -> None:
    """A store object must not keep answering for a generation another process has since replaced."""
    _fail_at_b(any_db)
    with open_store(any_db) as reader:
        before = list(reader.events("w"))
        assert before[-1].kind == RESULT
        rk.restart(any_db, "w")  # another store object writes generation 2
        assert [e.kind for e in reader.events("w")] == ["start"]
        last = reader.last_event("w")
        assert last is not None and last.kind == "start"


def test_cli_restart_and_fork(any_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fail_at_b(any_db)
    assert main(["fork", any_db, "w", "w2", "--step", "2"]) == 0
    assert main(["restart", any_db, "w", "--from-step", "2"]) == 0
    assert main(["restart", any_db, "w"]) == 1  # running now: refused
    assert "is running; only a failed" in capsys.readouterr().err
    assert rk.run(three_steps, "t", workflow_id="w", db=any_db)[:2] == ["t-a-done", "t-b-done"]
    assert rk.run(three_steps, "t", workflow_id="w2", db=any_db)[:2] == ["t-a-done", "t-b-done"]
    assert calls == ["t-b", "t-c", "t-b", "t-c"]
    assert main(["fork", str(tmp_path / "missing.db"), "w", "w3", "--step", "1"]) == 1
    assert not (tmp_path / "missing.db").exists()


@rk.workflow(name="child_step")
def child_step(ctx: rk.Context, tag: str) -> Any:
    return (yield step(tag))


@rk.workflow(name="parent_of_one")
def parent_of_one(ctx: rk.Context) -> Any:
    return (yield rk.child_workflow(child_step, "kid"))


def test_a_restarted_parent_starts_its_children_afresh(any_db: str) -> None:
    broken.add("kid")
    with rk.Engine(any_db) as engine:
        with pytest.raises(rk.WorkflowFailed):
            engine.start(parent_of_one, workflow_id="p").result(timeout=10)
    broken.clear()
    calls.clear()
    rk.restart(any_db, "p")
    with rk.Engine(any_db) as engine:
        [handle] = engine.recover()
        assert handle.result(timeout=10) == "kid-done"  # not the first child's recorded failure
    assert calls == ["kid"]
    with open_store(any_db) as store:
        assert store.info("p/1").status is rk.Status.FAILED  # the first child, untouched


def test_engine_restart_and_fork_drive_the_new_runs(any_db: str) -> None:
    broken.add("t-b")
    with rk.Engine(any_db) as engine:
        with pytest.raises(rk.WorkflowFailed):
            engine.start(three_steps, "t", workflow_id="w").result(timeout=10)
        broken.clear()
        calls.clear()
        assert engine.restart("w", from_step=2).result(timeout=10)[:3] == ["t-a-done", "t-b-done", "t-c-done"]
        assert engine.fork("w", "w2", step=3).result(timeout=10)[:3] == ["t-a-done", "t-b-done", "t-c-done"]
    assert calls == ["t-b", "t-c", "t-c"]


def test_cli_mistakes_are_one_line_errors(any_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fail_at_b(any_db)
    for argv in (["fork", any_db, "w", "w3", "--step", "0"], ["restart", any_db, "w", "--from-step", "-3"]):
        assert main(argv) == 2  # a usage error
        assert "steps count from 1" in capsys.readouterr().err
    assert main(["restart", any_db, "w", "--from-step", "2", "-m", "no_such_module_here"]) == 1
    assert "-m no_such_module_here: the module cannot be imported" in capsys.readouterr().err
    assert main(["fork", any_db, "w", "", "--step", "1"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["list", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="from_step counts from 1"):
        rk.restart(any_db, "w", from_step=0)
