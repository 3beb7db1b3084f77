"""Retention (``rk.prune``, ``replaykit prune`` and ``delete``): only runs that ended long enough ago
go, families stay whole, nothing read from the store runs, and engines sharing the store go on."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.history import OK, RESULT, START, Event
from replaykit.store import open_store

from conftest import PYTHON

CHILD = str(Path(__file__).with_name("prune_child.py"))


@rk.activity
def bump(x: int) -> int:
    return x + 1


@rk.workflow(name="retention.quick")
def quick(ctx: rk.Context, x: int) -> rk.Flow[int]:
    return (yield bump(x))


@rk.workflow(name="retention.waits")
def waits(ctx: rk.Context) -> rk.Flow[str]:
    answer: str = yield rk.wait_signal("answer")
    return answer


def ids(db: str) -> list[str]:
    with open_store(db, create=False) as store:
        return sorted(info.workflow_id for info in store.list())


def test_prune_deletes_what_ended_long_enough_ago_and_nothing_else(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        for i in range(3):
            engine.start(quick, i, workflow_id=f"q-{i}").result(timeout=20)
        engine.start(waits, workflow_id="open")
        engine.cancel(engine.start(waits, workflow_id="stopped").workflow_id)
        with pytest.raises(rk.WorkflowCancelled):
            engine.handle("stopped").result(timeout=20)
    engine_end = time.time()
    assert rk.prune(any_db, older_than=3600) == []  # nothing ended an hour ago
    assert rk.prune(any_db, 60, now=engine_end + 30) == []
    assert rk.prune(any_db, 60, now=engine_end + 90, statuses=["cancelled"], dry_run=True) == ["stopped"]
    assert ids(any_db) == ["open", "q-0", "q-1", "q-2", "stopped"]  # a dry run deletes nothing
    assert sorted(rk.prune(any_db, 60, now=engine_end + 90, batch=2)) == ["q-0", "q-1", "q-2", "stopped"]
    assert ids(any_db) == ["open"]  # running: never deleted, however old
    assert rk.prune(any_db, 0, now=engine_end + 10**9) == []
    with pytest.raises(ValueError, match="running runs are never deleted"):
        rk.prune(any_db, 0, statuses=["completed", "running"])


class _Trap:
    """Unpickling it would run ``touch`` (what a tampered store could try): prune must not."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _run(store: Any, workflow_id: str, parent: str | None, ended: bool, arg: Any = 1) -> None:
    start: dict[str, Any] = {"args": [arg], "kwargs": {}, "seed": 1, "rules": 2}
    if parent is not None:
        start["parent"] = [parent, 1]
    encoding, payload = store.codec.encode(start, "arguments")
    store.create(workflow_id, "family", Event(0, 0, START, "family", 1.0, OK, encoding, payload))
    if ended:
        store.record(workflow_id, Event(1, 0, RESULT, "", 2.0, OK, "json", "1"), status=rk.Status.COMPLETED)


def test_families_stay_whole_and_a_pickled_start_is_read_without_running_it(any_db: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with rk.Engine(any_db):
        pass  # creates the store
    with open_store(any_db, create=False) as store:
        _run(store, "live-parent", None, ended=False)
        _run(store, "child-of-live", "live-parent", ended=True)  # ended, but its parent may still replay it
        _run(store, "pickled-child-of-live", "live-parent", ended=True, arg=_Trap(str(marker)))
        _run(store, "ended-parent", None, ended=True)
        _run(store, "live-child", "ended-parent", ended=False)  # keeps its parent
        _run(store, "done-parent", None, ended=True)
        _run(store, "done-child", "done-parent", ended=True, arg=_Trap(str(marker)))
        assert isinstance(store.events("pickled-child-of-live").__next__().payload, bytes)  # recorded pickled
    assert sorted(rk.prune(any_db, 0, now=time.time() + 10)) == ["done-child", "done-parent"]
    assert not marker.exists()  # the pickled starts were read as data
    assert ids(any_db) == ["child-of-live", "ended-parent", "live-child", "live-parent", "pickled-child-of-live"]


def test_a_pickle_is_read_inert() -> None:
    from replaykit.retention import _Inert

    blob = pickle.dumps({"args": [_Trap("/nonexistent/x")], "parent": ["p", 3]})
    assert _Inert(io.BytesIO(blob)).load()["parent"] == ["p", 3]


def test_prune_beside_a_busy_engine_in_another_process(db: str, child_env: dict[str, str]) -> None:
    n = 30
    child = subprocess.Popen([PYTHON, CHILD, db, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=child_env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ended\n", child.stderr.read() if child.stderr else ""
        deleted: list[str] = []
        for _ in range(20):  # while the long runs step, record, sleep and are evicted beside it
            deleted += rk.prune(db, 0, batch=7, now=time.time() + 1)
            time.sleep(0.02)
        assert sorted(deleted) == sorted(f"ended-{i}" for i in range(n))
        for i in range(n):
            rk.send_signal(db, f"busy-{i}", "finish", 1000)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert json.loads(out) == [sum(k * k for k in range(40 + i % 7)) + 1000 for i in range(n)]
    with open_store(db, create=False) as store:  # every kept history still reads whole and checked
        assert sorted(i.workflow_id for i in store.list()) == sorted(f"busy-{i}" for i in range(n))
        assert all(len(list(store.events(f"busy-{i}"))) > 80 for i in range(n))


def test_prune_and_delete_from_a_shell(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(db) as engine:
        engine.start(quick, 1, workflow_id="a").result(timeout=20)
        engine.start(quick, 2, workflow_id="b").result(timeout=20)
        engine.start(waits, workflow_id="w")
    assert main(["prune", db, "--older-than", "1h"]) == 0
    assert capsys.readouterr().out == "0 runs deleted\n"
    assert main(["delete", db, "a", "w"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "deleted a\n" and "not deleted: 'w'" in captured.err
    assert main(["prune", db, "--older-than", "0s", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"would_delete": ["b"]}
    assert main(["prune", db, "--older-than", "0s", "--status", "failed"]) == 0
    assert ids(db) == ["b", "w"]
    assert main(["prune", db, "--older-than", "soon"]) == 2
    assert "--older-than" in capsys.readouterr().err


def test_an_engine_with_retention_prunes_as_it_runs_and_stops_with_it(any_db: str) -> None:
    with rk.Engine(any_db, retention=1.0, retention_interval=0.05) as engine:
        assert engine.start(quick, 1, workflow_id="short-lived").result(timeout=20) == 2
        engine.start(waits, workflow_id="long-lived")
        deadline = time.monotonic() + 20
        while "short-lived" in ids(any_db):
            assert time.monotonic() < deadline, "the engine's retention never deleted the run that ended"
            time.sleep(0.05)
        assert ids(any_db) == ["long-lived"]
        rk.send_signal(any_db, "long-lived", "answer", "yes")
        assert engine.handle("long-lived").result(timeout=20) == "yes"
    assert not [t for t in threading.enumerate() if t.name == "replaykit-retention"]


@rk.workflow(name="retention.generations")
def generations(ctx: rk.Context, n: int) -> rk.Flow[int]:
    yield bump(n)
    if n < 300:
        yield rk.continue_as_new(n + 1)
    return n


def test_pruning_beside_a_run_that_continues_as_new_leaves_its_cache_true(any_db: str) -> None:
    # The prune thread reads through the engine's own store (given as an object): a read of the run's
    # newest generation overtaken by a continue-as-new must not be cached as the run this store holds,
    # or the next step is written into the generation that ended.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the two threads as much as possible
    try:
        with rk.Engine(any_db):
            pass  # the store exists
        with open_store(any_db, create=False) as store, \
                rk.Engine(store, retention=3600, retention_interval=0) as engine:
            assert engine.start(generations, 0, workflow_id="g").result(timeout=120) == 300
    finally:
        sys.setswitchinterval(switch)


def test_a_typed_start_names_its_parent_and_a_run_that_ended_after_the_cutoff_is_kept(any_db: str) -> None:
    with rk.Engine(any_db):
        pass
    with open_store(any_db, create=False) as store:
        _run(store, "live-parent", None, ended=False)
        _run(store, "typed-child", "live-parent", ended=True, arg=("o", 1))  # a tuple: recorded as a typed value
        assert next(iter(store.events("typed-child"))).encoding == "typed"
        _run(store, "done", None, ended=True)
        assert rk.prune(any_db, 0, now=time.time() + 10) == ["done"]  # the typed child's parent still runs
        ended = store.info("typed-child").updated_at  # type: ignore[union-attr]
        assert store.delete(["typed-child"], ended_before=ended) == []  # it ended at, not before, the cutoff
        assert store.delete(["typed-child"], ended_before=ended + 1) == ["typed-child"]


@rk.workflow(name="retention.side")
def side(ctx: rk.Context, i: int) -> rk.Flow[int]:
    return (yield rk.side_effect(lambda: i))


def test_closing_an_engine_that_prunes_commits_first_and_fails_no_prune(db: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    # close() used to wait for the prune thread before committing its own batch, while the prune waited for
    # SQLite's write lock that batch held: the prune failed after the busy timeout (10 s).
    def feed(engine: rk.Engine, stop: threading.Event, attempt: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                engine.start(side, i, workflow_id=f"s-{attempt}-{threading.get_ident()}-{i}")
            except rk.EngineClosedError:
                return
            i += 1

    for attempt in range(2):
        with caplog.at_level(logging.ERROR, logger="replaykit"):
            engine = rk.Engine(db, retention=0, retention_interval=0.0)
            stop = threading.Event()
            feeders = [threading.Thread(target=feed, args=(engine, stop, attempt)) for _ in range(4)]
            for t in feeders:
                t.start()
            time.sleep(0.5)
            engine.close()
            stop.set()
            for t in feeders:
                t.join()
    assert "could not prune" not in caplog.text, caplog.text


def test_an_unreadable_start_keeps_every_parent_its_id_may_name() -> None:
    from replaykit.retention import _id_parents

    assert _id_parents("order#5/1") == {"order", "order#5"}  # generation 5 of "order", or a run named "order#5"
    assert _id_parents("order/12") == {"order"}
    assert _id_parents("plain") == set() and _id_parents("a/b") == set()


def test_a_store_object_an_engine_used_still_caches_runs_for_rk_run(db: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # An engine's drivers put the store in batch mode; once it closed, rk.run on the same store object must
    # fill the run cache again (else it reads the run's row and previous checksum back at every step).
    import sqlite3

    reads: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: reads.append(sql) if sql.startswith("SELECT") else None)
        return conn

    monkeypatch.setattr("replaykit.store.sqlite.sqlite3.connect", traced)
    with rk.SqliteStore(db) as store:
        with rk.Engine(store) as engine:
            assert engine.start(quick, 1, workflow_id="first").result(timeout=20) == 2
        reads.clear()
        assert rk.run(many, 200, workflow_id="many", db=store) == 200
    newest = [sql for sql in reads if "FROM runs WHERE workflow_id" in sql]
    previous = [sql for sql in reads if sql.startswith("SELECT digest FROM events")]
    assert len(newest) < 10 and len(previous) < 10, (len(newest), len(previous))


@rk.workflow(name="retention.many")
def many(ctx: rk.Context, n: int) -> rk.Flow[int]:
    total = 0
    for _ in range(n):
        total += (yield bump(0))
    return total
