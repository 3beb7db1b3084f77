"""Bad input gets a specific error, and nothing already recorded is lost or changed.

The tests that take ``any_db`` run on SQLite and on PostgreSQL; those about the SQLite file itself take ``db``."""

from __future__ import annotations

import hashlib
import inspect
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.history import OK, START, Event
from replaykit.store import open_store
from replaykit.store.sqlite_schema import SCHEMA_VERSION

from helpers import adder, waits_for_approval


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def kinds(db: str, workflow_id: str) -> list[str]:
    with open_store(db) as store:
        return [e.kind for e in store.events(workflow_id)]


@rk.activity
def returns_lock() -> object:
    return threading.Lock()


def test_unserializable_workflow_argument_writes_nothing(any_db: str) -> None:
    expected = r"arguments of workflow 'adder': args\[0\] is a value of type lock"
    with pytest.raises(rk.SerializationError, match=expected):
        rk.run(adder, threading.Lock(), workflow_id="a", db=any_db)
    with open_store(any_db) as store:
        assert store.list() == []


def test_unserializable_activity_result_is_not_recorded(any_db: str) -> None:
    @rk.workflow
    def flow(ctx: rk.Context):
        yield rk.side_effect(lambda: 1)
        yield returns_lock()

    with pytest.raises(rk.SerializationError) as err:
        rk.run(flow, workflow_id="r", db=any_db)
    message = str(err.value)
    assert "result of activity returns_lock() (step 2 of 'r')" in message and "type lock" in message
    assert kinds(any_db, "r") == ["start", "side_effect"]  # the step was not recorded; the run stays open
    with open_store(any_db) as store:
        assert store.info("r").status is rk.Status.RUNNING  # type: ignore[union-attr]


def test_unserializable_return_value_and_signal_payload(any_db: str) -> None:
    @rk.workflow
    def flow(ctx: rk.Context):
        yield rk.sleep(0)
        return threading.Lock()

    with pytest.raises(rk.SerializationError, match="return value of workflow 'ret'"):
        rk.run(flow, workflow_id="ret", db=any_db)
    assert kinds(any_db, "ret") == ["start", "timer"]
    with pytest.raises(rk.SerializationError, match="payload of signal 'go' to 'ret'"):
        rk.send_signal(any_db, "ret", "go", threading.Lock())


def test_non_generator_is_not_a_workflow(any_db: str) -> None:
    def plain(ctx: rk.Context) -> int:
        return 1

    with pytest.raises(rk.NotAWorkflowError, match="is a plain function; a workflow must be a generator"):
        rk.workflow(plain)
    with pytest.raises(rk.NotAWorkflowError):
        rk.run(plain, workflow_id="p", db=any_db)
    with pytest.raises(TypeError):  # also a TypeError, for code that does not know replaykit
        rk.run(42, workflow_id="p", db=any_db)


def test_yielding_something_else_records_nothing(any_db: str) -> None:
    @rk.workflow
    def flow(ctx: rk.Context):
        yield "charge the card"

    with pytest.raises(rk.InvalidCommandError, match="yielded 'charge the card' at .*test_bad_input.py"):
        rk.run(flow, workflow_id="y", db=any_db)
    assert kinds(any_db, "y") == ["start"]


def test_unknown_workflow_in_stored_history(any_db: str) -> None:
    with open_store(any_db) as store:
        store.create("g", "ghost.flow", Event(0, 0, START, "ghost.flow", 1.0, OK, "json",
                                              '{"args":[],"kwargs":{},"seed":1,"rules":1}'))
    with rk.Engine(any_db) as engine, pytest.raises(rk.UnknownWorkflowError) as err:
        engine.recover()
    assert "workflow 'ghost.flow'" in str(err.value) and "Engine(workflows=[...])" in str(err.value)


def test_id_reused_for_another_workflow_or_other_arguments(any_db: str) -> None:
    rk.run(adder, 3, workflow_id="id", db=any_db)
    with pytest.raises(rk.WorkflowConflictError, match="belongs to a run of workflow 'adder'"):
        rk.run(waits_for_approval, 0, workflow_id="id", db=any_db)
    with pytest.raises(rk.WorkflowConflictError, match=r"started with args=\(3,\).*passes args=\(4,\)"):
        rk.run(adder, 4, workflow_id="id", db=any_db)
    assert kinds(any_db, "id") == ["start", "activity", "activity", "activity", "result"]


def test_changed_code_is_refused_with_file_and_line_and_history_kept(any_db: str) -> None:
    version = {"v": 1}

    @rk.activity
    def a() -> str:
        return "a"

    @rk.activity
    def b() -> str:
        return "b"

    @rk.workflow
    def flow(ctx: rk.Context):
        yield a()
        yield (a() if version["v"] == 1 else b())
        yield rk.wait_signal("go")
        return "done"

    with rk.Engine(any_db) as engine:
        engine.start(flow, workflow_id="nd")
        deadline = time.monotonic() + 10
        while len(kinds(any_db, "nd")) < 3:
            assert time.monotonic() < deadline, "the run never reached its signal"
            time.sleep(0.01)
    before = kinds(any_db, "nd")
    version["v"] = 2
    with pytest.raises(rk.NonDeterminismError) as err:
        rk.run(flow, workflow_id="nd", db=any_db)
    line = inspect.getsourcelines(flow.fn)[1] + 3  # [1] is the decorator's line
    assert f"test_bad_input.py:{line}" in str(err.value)
    assert "history recorded: activity 'test_changed_code" in str(err.value)
    assert "b()" in str(err.value)
    assert kinds(any_db, "nd") == before
    version["v"] = 1  # the fix: the original code resumes where it was
    rk.send_signal(any_db, "nd", "go")
    assert rk.run(flow, workflow_id="nd", db=any_db) == "done"


def test_text_file_is_not_a_store(tmp_path: Path) -> None:
    path = str(tmp_path / "notes.txt")
    Path(path).write_text("shopping list\n")
    digest = sha(path)
    with pytest.raises(rk.NotAStoreError, match="is not an SQLite database"):
        rk.SqliteStore(path)
    with pytest.raises(rk.NotAStoreError):
        rk.run(adder, 1, workflow_id="x", db=path)
    assert sha(path) == digest


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = str(tmp_path / "app.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ann')")
    conn.commit()
    conn.close()
    digest = sha(path)
    with pytest.raises(rk.NotAStoreError, match="database of something else.*users"):
        rk.SqliteStore(path)
    assert sha(path) == digest


def test_store_from_a_newer_schema_is_refused(db: str) -> None:
    rk.run(adder, 2, workflow_id="x", db=db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    digest = sha(db)
    with pytest.raises(rk.StoreTooNewError, match=f"store schema {SCHEMA_VERSION + 1}"):
        rk.run(adder, 2, workflow_id="x", db=db)
    assert sha(db) == digest


def _store_with_history(db: str) -> None:
    rk.run(adder, 300, workflow_id="big", db=db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # move everything into the main file
    conn.close()


def test_truncated_store_is_refused_untouched(db: str) -> None:
    _store_with_history(db)
    size = os.path.getsize(db)
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    digest = sha(db)
    with pytest.raises(rk.CorruptStoreError, match="SQLite cannot read the database: database disk image is "
                                                   "malformed. Restore it from a backup"):
        rk.run(adder, 300, workflow_id="big", db=db)
    assert sha(db) == digest
    Path(db).write_bytes(b"SQLite fo")
    with pytest.raises(rk.CorruptStoreError, match=r"the file is truncated or damaged, 9 bytes"):
        rk.SqliteStore(db)
    assert Path(db).read_bytes() == b"SQLite fo"


def test_corrupt_pages_are_reported_not_reset(db: str) -> None:
    _store_with_history(db)
    data = bytearray(Path(db).read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), page):  # scribble over every page but the first
        data[offset:offset + 64] = b"\xff" * 64
    Path(db).write_bytes(bytes(data))
    digest = sha(db)
    with pytest.raises(rk.CorruptStoreError, match="SQLite cannot read the database"):
        with rk.SqliteStore(db) as store:
            list(store.events("big"))
    assert sha(db) == digest
