"""Bad store paths: reading never creates a store, and every path error names the path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.testing import export_history, replay, replay_all

from conftest import PYTHON
from helpers import adder

READERS: dict[str, Callable[[str], Any]] = {
    "send_signal": lambda db: rk.send_signal(db, "x", "go"),
    "query": lambda db: rk.query(db, "x", "progress"),
    "cancel": lambda db: rk.cancel(db, "x"),
    "pause": lambda db: rk.pause(db, "x"),
    "resume": lambda db: rk.resume(db, "x"),
    "runs_without_patch": lambda db: rk.runs_without_patch(db, "change"),
    "export_history": lambda db: export_history(db, "x"),
    "replay_all": lambda db: replay_all(db),
}


@pytest.mark.parametrize("name", list(READERS))
def test_reading_a_missing_store_raises_and_creates_nothing(tmp_path: Path, name: str) -> None:
    for db in (str(tmp_path / "nope.db"), str(tmp_path / "no-such-dir" / "nope.db")):
        with pytest.raises(rk.StoreNotFoundError, match="no replaykit store at") as err:
            READERS[name](db)
        assert db in str(err.value)
        assert isinstance(err.value, FileNotFoundError)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("verb", [["list"], ["history", "x"], ["signal", "x", "go"], ["check"], ["cancel", "x"],
                                  ["pause", "x"], ["resume", "x"], ["describe", "x"], ["result", "x"],
                                  ["workers"]])
def test_cli_on_a_missing_store_exits_1_and_creates_nothing(tmp_path: Path, child_env: dict[str, str],
                                                           verb: list[str]) -> None:
    db = str(tmp_path / "nope.db")
    out = subprocess.run([PYTHON, "-m", "replaykit", verb[0], db, *verb[1:]], capture_output=True, text=True,
                         env=child_env, cwd=tmp_path, timeout=30)
    assert out.returncode == 1, out
    assert out.stderr.startswith("replaykit: ") and db in out.stderr and "Traceback" not in out.stderr
    assert os.listdir(tmp_path) == []


def test_creating_a_store_in_a_missing_directory_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "missing"
    db = str(folder / "orders.db")
    for create in (lambda: rk.run(adder, 1, workflow_id="a", db=db), lambda: rk.Engine(db), lambda: rk.SqliteStore(db)):
        with pytest.raises(rk.StoreNotFoundError, match="directory .* does not exist") as err:
            create()
        assert str(folder) in str(err.value) and "mkdir" in str(err.value)
    assert not folder.exists()


def test_reading_commands_work_on_an_existing_store(db: str) -> None:
    rk.run(adder, 2, workflow_id="a", db=db)
    assert export_history(db, "a").workflow == "adder"
    assert [r.ok for r in replay_all(db)] == [True]
    assert rk.runs_without_patch(db, "change") == []
    with pytest.raises(rk.WorkflowNotFoundError, match="'zz'"):
        rk.send_signal(db, "zz", "go")


def test_an_empty_file_is_not_a_store_to_read(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    with pytest.raises(rk.StoreNotFoundError, match="holds no replaykit store"):
        rk.send_signal(str(db), "x", "go")
    assert db.read_bytes() == b""
    rk.run(adder, 1, workflow_id="a", db=str(db))  # a creating entry point makes it one
    with rk.SqliteStore(str(db)) as store:
        assert store.info("a") is not None


def test_a_store_passed_as_a_history_export_is_not_opened_as_a_file(db: str) -> None:
    rk.run(adder, 2, workflow_id="a", db=db)
    with rk.SqliteStore(db) as store:
        with pytest.raises(ValueError, match="is a replaykit store, not a history export"):
            replay(adder, db)  # reading it with open() would drop the open store's SQLite locks
        assert store.info("a") is not None


def test_a_store_created_while_it_is_being_recognised_is_not_taken_for_a_foreign_file(tmp_path: Path) -> None:
    """Found by a test racing three processes on a new store (once in about ten runs): the header
    and the table list were two reads, and another process's creation could fall between them,
    which looked like someone else's tables (NotAStoreError). Forced here: the store is created
    by another connection right after the recognising connection's first statement."""
    import sqlite3

    from replaykit.store.sqlite_schema import _version

    path = str(tmp_path / "s.db")
    sqlite3.connect(path).close()  # an empty database, as a first opener finds it
    conn = sqlite3.connect(path, isolation_level=None)

    class CreatedAfterTheFirstRead:
        calls = 0

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            cursor = conn.execute(sql, *args)
            rows = cursor.fetchall()
            self.calls += 1
            if self.calls == 1:
                rk.SqliteStore(path).close()  # another opener creates the store now
            return _Rows(rows)  # type: ignore[return-value]

    class _Rows:
        def __init__(self, rows: list[object]) -> None:
            self.rows = rows

        def fetchall(self) -> list[object]:
            return self.rows

    try:
        assert _version(CreatedAfterTheFirstRead(), path) is None  # type: ignore[arg-type]  # empty when read
    finally:
        conn.close()
    with rk.SqliteStore(path) as store:  # and the store the other opener made is a store
        assert store.list() == []


def test_creating_a_store_runs_no_sqlite_utils_plugin(tmp_path: Path) -> None:
    import sqlite_utils
    from sqlite_utils.plugins import pm

    touched: list[object] = []

    class Plugin:
        @sqlite_utils.hookimpl
        def prepare_connection(self, conn: object) -> None:  # an installed plugin's hook, on any Database(conn)
            touched.append(conn)

    plugin = Plugin()
    pm.register(plugin)
    try:
        with rk.SqliteStore(str(tmp_path / "new.db")):
            pass
        sqlite_utils.Database(memory=True)  # the plugin is live: it runs where plugins are asked for
    finally:
        pm.unregister(plugin)
    assert len(touched) == 1  # only the control's, never on replaykit's connection
