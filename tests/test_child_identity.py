"""A child workflow's id never aliases an unrelated run.

A child's default id is ``<parent id>/<step>``. When a run with that id already
exists, it is the child only if it was started by this parent at this step, for this
workflow, with these arguments (a parent that crashed after starting its child finds
it again). Otherwise the parent gets ``WorkflowConflictError`` at its yield, recorded
in its history, and the other run is left alone. (On SQLite and on PostgreSQL.)
"""

from __future__ import annotations

import pytest

import replaykit as rk
from replaykit.starting import start_payload
from replaykit.testing import TestEnv, export_history, replay

from helpers import add, waits_for_approval


@rk.workflow
def plain(ctx: rk.Context, n: int):
    return (yield add(n, 100))


@rk.workflow
def parent_of_plain(ctx: rk.Context, n: int):
    try:
        return (yield rk.child_workflow(plain, n))
    except rk.WorkflowConflictError as exc:
        return f"conflict: {exc}"


@rk.workflow
def parent_of_approval(ctx: rk.Context):
    return (yield rk.child_workflow(waits_for_approval))


def test_an_unrelated_run_under_the_child_id_is_a_conflict_not_the_child(any_db: str) -> None:
    with TestEnv(db=any_db, strict_replay=True) as env:
        assert env.run(plain, 1, workflow_id="par/1") == 101  # not started by "par"
        before = env.history("par/1")

        result = env.run(parent_of_plain, 2, workflow_id="par")
        assert result.startswith("conflict: ")
        assert "'par'" in result and "'par/1'" in result  # both runs named
        assert "plain" in result and "[1]" in result  # what the existing run is

        assert env.history("par/1") == before  # the unrelated run is untouched
        child_events = [e for e in env.history("par") if e.kind == "child"]
        assert len(child_events) == 1 and child_events[0].outcome == "error"  # recorded: replays the same
        assert replay(parent_of_plain, export_history(env.store, "par")).ok


def test_a_child_of_the_same_parent_but_other_arguments_is_a_conflict(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        # As if an older version of the parent had started its child with other arguments.
        env.engine._create(plain, "par/1", start_payload(env.store.codec, plain, (7,), {}, parent=("par", 1)))
        result = env.run(parent_of_plain, 2, workflow_id="par")
    assert result.startswith("conflict: ") and "[7]" in result


def test_a_parent_resumed_after_starting_its_child_finds_the_same_child_again(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        env.engine._create(plain, "par/1", start_payload(env.store.codec, plain, (2,), {}, parent=("par", 1)))
        assert env.run(parent_of_plain, 2, workflow_id="par") == 102


def test_the_parent_closing_does_not_cancel_the_unrelated_run(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        other = env.start(waits_for_approval, workflow_id="p/1")
        with pytest.raises(rk.WorkflowFailed) as failed:  # same workflow and arguments, but no parent
            env.start(parent_of_approval, workflow_id="p").result(timeout=10)
        assert isinstance(failed.value.__cause__, rk.WorkflowConflictError)
        assert env.store.info("p/1").status is rk.Status.RUNNING  # type: ignore[union-attr]
        env.signal("p/1", "approved", "yes")
        assert other.result(timeout=10) == {"answer": "yes"}


@rk.workflow
def one_child_per_run(ctx: rk.Context, n: int, results: list[int]):
    results = [*results, (yield rk.child_workflow(plain, n))]
    if n < 3:
        yield rk.continue_as_new(n + 1, results)
    return results


def test_each_run_of_a_parent_that_continues_as_new_has_children_of_its_own(any_db: str) -> None:
    with TestEnv(db=any_db, strict_replay=True) as env:
        assert env.run(one_child_per_run, 1, [], workflow_id="loop") == [101, 102, 103]
        assert {info.workflow_id for info in env.store.list()} == {"loop", "loop/1", "loop#2/1", "loop#3/1"}
