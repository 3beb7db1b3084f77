"""A store made before 0.1 (SQLite schema 3, PostgreSQL 4) that a process of this version writes to
must stay usable by 0.1's processes (a rolling deploy still holding some, or a rollback): schema 5/6
differs from 4/5 only in how *new* stores are made (with an identity), and the store gets none. The
changelog: "A store made before keeps its schema ... and gets no identity, so processes of the
previous version go on with it (a rollback too)". Before the fix this version migrated it to its own new
number (SQLite 3 -> 5, PostgreSQL 4 -> 6), and every 0.1 process then refused it (StoreTooNewError)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import replaykit as rk

import upgrade_versions as v


def _schema_pg(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT value FROM replaykit_meta WHERE key = 'schema_version'").fetchall()[0][0]


def test_a_schema_3_sqlite_store_written_by_this_version_is_still_read_by_0_1(tmp_path: Path) -> None:
    db = str(tmp_path / "orders.db")
    v.run(v.PREVIOUS, v.MAKE_STORE, db)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchall() == [(3,)]

    with rk.Engine(db) as engine:  # a writer of this version (an engine of a freshly deployed service)
        assert engine.store.info("done") is not None

    listed = v.cli(v.OLD, "list", db)
    assert listed.returncode == 0, listed.stderr  # before the fix: "store schema 5; this version reads up to 4"
    assert "done" in listed.stdout


def test_a_schema_4_postgres_store_written_by_this_version_is_still_read_by_0_1(pg_url: str) -> None:
    v.run(v.PREVIOUS, v.MAKE_STORE, pg_url)
    assert _schema_pg(pg_url) == "4"

    with rk.Engine(pg_url) as engine:
        assert engine.store.info("done") is not None

    listed = v.cli(v.OLD, "list", pg_url)
    assert listed.returncode == 0, listed.stderr  # before the fix: "store schema 6; this version reads up to 5"
    assert "done" in listed.stdout
