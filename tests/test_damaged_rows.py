"""A damaged row outside the histories (a run's status or custom status, the worker registry) is a
CorruptStoreError naming the store, never a raw json or ValueError, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import replaykit as rk
from replaykit.store import open_store
from replaykit.store.work import WorkerRecord

from helpers import adder


def _sql(db: str, sqlite_sql: str, pg_sql: str) -> None:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            assert conn.execute(pg_sql).rowcount == 1
    else:
        import sqlite3

        conn = sqlite3.connect(db)
        with conn:
            assert conn.execute(sqlite_sql).rowcount == 1
        conn.close()


DEEP = "'" + "[" * 100_000 + "'"  # parses as far as the interpreter's stack goes (a raw RecursionError before)


@pytest.mark.parametrize(("column", "value"), [("custom_status", "'{not json'"), ("status", "'exploded'"),
                                               ("updated_at", "1e300"), ("created_at", "-5"),
                                               ("custom_status", DEEP)])
def test_a_damaged_run_row_is_a_corrupt_store(any_db: str, column: str, value: str) -> None:
    assert rk.run(adder, 2, workflow_id="a", db=any_db) == 1
    _sql(any_db, f"UPDATE runs SET {column} = {value}", f"UPDATE replaykit_runs SET {column} = {value}")
    with open_store(any_db, create=False) as store:
        with pytest.raises(rk.CorruptStoreError, match="run 'a' is damaged"):
            store.list()
        with pytest.raises(rk.CorruptStoreError, match="run 'a' is damaged"):
            store.info("a")
        with pytest.raises(rk.CorruptStoreError, match="run 'a' is damaged"):  # filtered in the query: not hidden
            store.find(statuses=["completed"], workflows=[adder.name], prefix="a")


def test_a_damaged_worker_row_is_a_corrupt_store(any_db: str) -> None:
    with open_store(any_db) as store:
        store.register_worker(WorkerRecord("w1", "host", 1, ("q",), ("w",), "v1", 1.0, 1.0, False))
        _sql(any_db, "UPDATE workers SET queues = '[broken'", "UPDATE replaykit_workers SET queues = '[broken'")
        with pytest.raises(rk.CorruptStoreError, match="worker registry holds a damaged row"):
            store.workers()
        _sql(any_db, f"UPDATE workers SET queues = {DEEP}", f"UPDATE replaykit_workers SET queues = {DEEP}")
        with pytest.raises(rk.CorruptStoreError, match="worker registry holds a damaged row"):
            store.workers()


def test_a_damaged_status_is_refused_by_every_write_that_reads_it(any_db: str) -> None:
    """A status changes only through a check of the status before it: a damaged one is named there."""
    from replaykit.history import Event, Status

    assert rk.run(adder, 2, workflow_id="a", db=any_db) == 1
    _sql(any_db, "UPDATE runs SET status = 'exploded'", "UPDATE replaykit_runs SET status = 'exploded'")
    start = Event(0, 0, "start", "adder", 1.0, "ok", "json", "{}")
    with open_store(any_db, create=False) as store:
        for change in (lambda: store.send_signal("a", "go", "json", "null", 1.0),
                       lambda: store.set_status("a", Status.PAUSED, 1.0), lambda: store.restart("a", start)):
            with pytest.raises(rk.CorruptStoreError, match="run 'a' is damaged .status 'exploded'"):
                change()
