"""Reading a store never writes it: the CLI's reading verbs and the reading functions leave an SQLite
store of the previous schema at that schema (an operator's `sudo replaykit list` must not migrate a
service's store under it), and describing a run driven by another process names that process
without making lock files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.store.postgres import PostgresStore
from replaykit.store.sqlite_schema import MIGRATED_TO
from replaykit.testing import export_history, replay_all

from conftest import ROOT
from helpers import adder, wait_until, waits_for_approval

READERS = [  # each verb, and what it prints
    (["list"], "waiting"), (["describe", "done"], "completed"),
    (["describe", "waiting", "-m", "helpers"], "approved"), (["history", "done"], "result"),
    (["history", "waiting", "--json"], "waits_for_approval"), (["result", "done"], "3"),
    (["workers", "--json"], "[]"), (["export", "done"], '"adder"'), (["check", "-m", "helpers"], "2 passed"),
]


def _schema_3(db: Path) -> None:
    """Set the store back to the schema before keepers, as replaykit 0.1's previous release left it."""
    conn = sqlite3.connect(db)
    try:
        conn.executescript("ALTER TABLE runs DROP COLUMN keeper; PRAGMA user_version = 3; "
                           "UPDATE meta SET value = '3' WHERE key = 'schema_version';")
    finally:
        conn.close()  # the last close folds the log back in: the file alone holds the store


def _digest(db: Path) -> dict[str, str]:
    """What is in the store's folder: the file, its lock directory's files, its key (SQLite's own
    shared-memory index aside)."""
    return {str(p.relative_to(db.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(db.parent.rglob("*")) if p.is_file() and not p.name.endswith("-shm")}


def _user_version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:  # closed at once: a connection left open keeps a -wal file beside the store
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    db = tmp_path / "s.db"
    assert rk.run(adder, 3, workflow_id="done", db=str(db)) == 3
    with rk.Engine(str(db)) as engine:
        engine.start(waits_for_approval, workflow_id="waiting")
    _schema_3(db)
    return db


@pytest.mark.parametrize(("verb", "shown"), READERS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_reading_verb_leaves_a_store_of_the_previous_schema_as_it_was(
        old_store: Path, verb: list[str], shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(old_store)
    assert main([verb[0], str(old_store), *verb[1:]]) == 0, capsys.readouterr().err
    assert shown in capsys.readouterr().out
    assert _digest(old_store) == before
    assert _user_version(old_store) == 3


def test_reading_functions_leave_a_store_of_the_previous_schema_as_it_was(old_store: Path) -> None:
    before = _digest(old_store)
    assert rk.runs_without_patch(str(old_store), "some-change") == ["waiting"]
    assert [r.ok for r in replay_all(str(old_store), [adder, waits_for_approval])] == [True, True]
    assert len(export_history(str(old_store), "done").events) > 3
    assert _digest(old_store) == before
    with rk.Engine(str(old_store)) as engine:  # a writer brings it up to the previous version's
        rk.send_signal(str(old_store), "waiting", "approved", True)
        engine.recover()
        assert engine.handle("waiting").result(timeout=20) == {"answer": True}
    assert _user_version(old_store) == MIGRATED_TO


DRIVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    import replaykit as rk
    from helpers import waits_for_approval
    with rk.Engine(sys.argv[1]) as engine:
        engine.start(waits_for_approval, workflow_id="held")
        print("driving", flush=True)
        time.sleep(60)
""")


def test_describe_names_another_process_driving_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.db")
    child = subprocess.Popen([sys.executable, "-c", DRIVER, db, str(ROOT / "tests")], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "driving\n"
        described: dict[str, str] = {}

        def named() -> bool:
            assert main(["describe", db, "held", "--json"]) == 0
            described.update(json.loads(capsys.readouterr().out))
            return bool(described["driven_by"])

        wait_until(named, "describe names the driving process", timeout=20)
        assert described["driven_by"].startswith(f"pid {child.pid} ")
    finally:
        child.kill()
        child.wait()
    assert main(["describe", db, "held", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["driven_by"] is None  # the kernel let its lock go


def _postgres_schema_4(url: str) -> None:
    """Set the store back to PostgreSQL schema 4 (before keepers), as the release before 0.1 left it."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE replaykit_runs DROP COLUMN keeper")
        conn.execute("DELETE FROM replaykit_meta WHERE key = 'identity'")
        conn.execute("UPDATE replaykit_meta SET value = '4' WHERE key = 'schema_version'")


def _postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return str(conn.execute("SELECT value FROM replaykit_meta WHERE key = 'schema_version'").fetchone()[0])


def test_reading_verbs_leave_a_postgres_store_of_the_previous_schema_as_it_was(
        pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, a reading verb migrated it (4 to 6), and every process of the version before then
    refused the database."""
    PostgresStore(pg_url).close()
    _postgres_schema_4(pg_url)  # before it holds anything: its runs are then checksummed without an identity
    assert rk.run(adder, 3, workflow_id="done", db=pg_url) == 3
    with rk.Engine(pg_url) as engine:
        engine.start(waits_for_approval, workflow_id="waiting")
    _postgres_schema_4(pg_url)
    for verb, shown in READERS:
        assert main([verb[0], pg_url, *verb[1:]]) == 0, capsys.readouterr().err
        assert shown in capsys.readouterr().out, verb
        assert _postgres_version(pg_url) == "4", verb
    with PostgresStore(pg_url, read_only=True) as store:
        assert store.info("done") is not None and store.lock_owner("done") is None
        with pytest.raises(rk.StoreReadOnlyError):
            store.set_custom_status("done", {"changed": True})
    assert _postgres_version(pg_url) == "4"
    assert rk.run(adder, 3, workflow_id="done", db=pg_url) == 3  # a writer brings it to 5, not 6
    assert _postgres_version(pg_url) == "5"
