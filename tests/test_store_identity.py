"""A store's histories are chained under its own identity (a random value made with the store), so a
run copied in from another store is refused even where both stores share the secret (staging and
production given one secret): before, its checksums verified and its recorded payments were
returned as this store's. A store made before identities keeps its checksums and reads on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.testing import export_history, import_history

from helpers import journal, read_journal
from pgserver import PgServer

SECRET = "identity-test-secret-0123456789"


@rk.activity
def pay(ledger: str, to: str, cents: int) -> str:
    journal(ledger, f"pay {cents} to {to}")
    return f"paid {cents} to {to}"


@rk.workflow(name="identity.transfer")
def transfer(ctx: rk.Context, ledger: str, to: str, cents: int) -> rk.Flow[str]:
    return (yield pay(ledger, to, cents))


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAYKIT_SECRET", SECRET)  # for rk.run, which takes the secret from the environment


def _copy_sqlite_run(source: str, target: str, workflow_id: str) -> None:
    """What a writer of both files can do with plain SQL: the run's row and events, under a free row id."""
    conn = sqlite3.connect(target)
    try:
        conn.execute("ATTACH DATABASE ? AS other", (source,))
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        shifted = ", ".join("id + 1000" if c == "id" else c for c in columns)
        with conn:
            conn.execute(f"INSERT INTO runs ({', '.join(columns)}) SELECT {shifted} FROM other.runs "
                         "WHERE workflow_id = ?", (workflow_id,))
            conn.execute("INSERT INTO events SELECT run + 1000, seq, step, kind, name, at, outcome, encoding, payload, "
                         "digest FROM other.events WHERE run IN (SELECT id FROM other.runs WHERE workflow_id = ?)",
                         (workflow_id,))
    finally:
        conn.close()


def test_a_run_copied_from_another_sqlite_store_with_the_same_secret_is_refused(tmp_path: Path) -> None:
    production, staging, ledger = str(tmp_path / "prod.db"), str(tmp_path / "staging.db"), str(tmp_path / "ledger")
    with rk.Engine(production, secret=SECRET) as engine:
        assert engine.start(transfer, ledger, "alice", 5, workflow_id="t-0").result(timeout=20) == "paid 5 to alice"
    with rk.Engine(staging, secret=SECRET) as engine:
        engine.start(transfer, ledger, "mallory", 999_999, workflow_id="t-1").result(timeout=20)
    _copy_sqlite_run(staging, production, "t-1")
    with rk.Engine(production, secret=SECRET) as engine:
        with pytest.raises(rk.CorruptStoreError, match="'t-1'.*copied in from another store"):
            engine.handle("t-1").result(timeout=20)
        assert engine.handle("t-0").result(timeout=20) == "paid 5 to alice"  # its own runs read on
    with pytest.raises(rk.CorruptStoreError, match="t-1"):
        rk.run(transfer, ledger, "mallory", 999_999, workflow_id="t-1", db=production)
    assert read_journal(ledger) == ["pay 5 to alice", "pay 999999 to mallory"]  # nothing paid again


def _copy_postgres_run(source: str, target: str, workflow_id: str) -> None:
    import psycopg

    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        for table, where in (("replaykit_runs", "workflow_id = %s"),
                             ("replaykit_events", "run IN (SELECT id FROM replaykit_runs WHERE workflow_id = %s)")):
            cur = src.execute(f"SELECT * FROM {table} WHERE {where}", (workflow_id,))
            names = [d.name for d in cur.description or ()]
            for row in cur.fetchall():
                values: list[Any] = [v + 1000 if n in ("id", "run") else v for n, v in zip(names, row, strict=True)]
                dst.execute(f"INSERT INTO {table} ({', '.join(names)}) OVERRIDING SYSTEM VALUE "
                            f"VALUES ({', '.join(['%s'] * len(names))})", values)


def test_a_run_copied_from_another_postgres_database_with_the_same_secret_is_refused(
        pg_server: PgServer, tmp_path: Path) -> None:
    names = [pg_server.create_database() for _ in range(2)]
    production, staging = (pg_server.url(name) for name in names)
    ledger = str(tmp_path / "ledger")
    try:
        with rk.Engine(production, secret=SECRET) as engine:
            assert engine.start(transfer, ledger, "alice", 5, workflow_id="t-0").result(timeout=20) == "paid 5 to alice"
        with rk.Engine(staging, secret=SECRET) as engine:
            engine.start(transfer, ledger, "mallory", 999_999, workflow_id="t-1").result(timeout=20)
        _copy_postgres_run(staging, production, "t-1")
        with pytest.raises(rk.CorruptStoreError, match="t-1"):
            rk.run(transfer, ledger, "mallory", 999_999, workflow_id="t-1", db=production)
        assert rk.run(transfer, ledger, "alice", 5, workflow_id="t-0", db=production) == "paid 5 to alice"
        assert read_journal(ledger) == ["pay 5 to alice", "pay 999999 to mallory"]
    finally:
        for name in names:
            pg_server.release_database(name)


def _identity(db: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
    return None if row is None else str(row[0])


def test_each_new_store_has_an_identity_of_its_own_and_keeps_it(tmp_path: Path) -> None:
    first, second = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    for db in (first, second):
        rk.run(transfer, str(tmp_path / "ledger"), "alice", 1, workflow_id="t", db=db)
    made = _identity(first)
    assert made is not None and len(bytes.fromhex(made)) == 16 and made != _identity(second)
    rk.run(transfer, str(tmp_path / "ledger"), "alice", 1, workflow_id="u", db=first)
    assert _identity(first) == made


@pytest.mark.parametrize("identity", ["00" * 16, "not hex", "abcd", None])
def test_a_changed_or_removed_identity_is_refused_not_reset(tmp_path: Path, identity: str | None) -> None:
    db, ledger = str(tmp_path / "s.db"), str(tmp_path / "ledger")
    assert rk.run(transfer, ledger, "alice", 5, workflow_id="t", db=db) == "paid 5 to alice"
    made = _identity(db)
    with sqlite3.connect(db) as conn:
        if identity is None:
            conn.execute("DELETE FROM meta WHERE key = 'identity'")
        else:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'identity'", (identity,))
    with pytest.raises(rk.CorruptStoreError):
        rk.run(transfer, ledger, "alice", 5, workflow_id="t", db=db)
    assert read_journal(ledger) == ["pay 5 to alice"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone() == (
            None if identity is None else (identity,))  # left as found, never made again
    assert made is not None


@pytest.mark.parametrize("schema", [3, 4])
def test_a_store_made_before_identities_reads_on_and_is_never_given_one(tmp_path: Path, schema: int) -> None:
    """A store of schema 4, or 3 (no identity row: its checksums were made without one) is opened,
    read and written on, migrated up to schema 4 only, without one: processes of the version before
    (which read up to 4) go on with it, and can be rolled back to. Before, a schema-3 store that this
    version wrote to went to 5, which they refuse."""
    db, ledger = str(tmp_path / "s.db"), str(tmp_path / "ledger")
    with rk.SqliteStore(db):
        pass  # an empty store: set back before it holds anything
    with sqlite3.connect(db) as conn:
        conn.executescript("DELETE FROM meta WHERE key = 'identity'; PRAGMA user_version = 4; "
                           "UPDATE meta SET value = '4' WHERE key = 'schema_version';")
    assert rk.run(transfer, ledger, "alice", 5, workflow_id="old", db=db) == "paid 5 to alice"
    if schema == 3:
        with sqlite3.connect(db) as conn:
            conn.executescript("ALTER TABLE runs DROP COLUMN keeper; PRAGMA user_version = 3; "
                               "UPDATE meta SET value = '3' WHERE key = 'schema_version';")
    assert rk.run(transfer, ledger, "alice", 5, workflow_id="old", db=db) == "paid 5 to alice"
    assert rk.run(transfer, ledger, "bob", 7, workflow_id="new", db=db) == "paid 7 to bob"
    assert _identity(db) is None
    with sqlite3.connect(db) as conn:  # left at 4: the version before can go on with it (and be rolled back to)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    newer = str(tmp_path / "newer.db")  # the way to a store with an identity: export, then import
    rk.run(transfer, ledger, "carol", 1, workflow_id="first", db=newer)
    import_history(newer, export_history(db, "old"))
    assert _identity(newer) is not None
    assert rk.run(transfer, ledger, "alice", 5, workflow_id="old", db=newer) == "paid 5 to alice"
    assert read_journal(ledger) == ["pay 5 to alice", "pay 7 to bob", "pay 1 to carol"]
