"""Tampered and half-migrated stores (PostgreSQL first, SQLite where it differs), found by a hostile
review that wrote the tables directly: each is refused with a replaykit error that says what and where,
nothing is rewritten, and nothing recorded runs again."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit import cli
from replaykit.store import open_store

from helpers import journal, read_journal


@rk.activity(name="hostile.step")
def step(ledger: str, i: int) -> int:
    journal(ledger, f"step {i}")
    return i


@rk.workflow(name="hostile.flow")
def flow(ctx: rk.Context, ledger: str):
    a = yield step(ledger, 1)
    b = yield step(ledger, 2)
    return a + b


def _sql(db: str, *statements: str) -> None:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())
    else:
        conn = sqlite3.connect(db)
        with conn:
            for statement in statements:
                conn.execute(statement)
        conn.close()


def _rows(db: str, sql: str) -> list[tuple[object, ...]]:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            return conn.execute(sql.encode()).fetchall()
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _runs(db: str) -> str:
    return "replaykit_runs" if db.startswith("postgresql://") else "runs"


@pytest.mark.parametrize("generation", [0, 2])
def test_a_run_whose_generation_was_changed_is_refused_not_run_again(any_db: str, tmp_path: Path,
                                                                     generation: int) -> None:
    """A finished run whose row's generation was changed (a flipped bit, a hand edit): ``rk.run`` of its
    id created a second run of generation 1 beside it (``INSERT ... ON CONFLICT DO NOTHING`` /
    ``INSERT OR IGNORE`` only conflict on generation 1) and ran every activity again (generation 0:
    it returned the new result as if nothing were wrong), or wrote that new row and then refused the
    old one as "recorded with another secret" (generation 2)."""
    ledger = str(tmp_path / "ledger")
    assert rk.run(flow, ledger, workflow_id="g", db=any_db) == 3
    _sql(any_db, f"UPDATE {_runs(any_db)} SET generation = {generation}")
    before = _rows(any_db, f"SELECT id, workflow_id, generation, status FROM {_runs(any_db)} ORDER BY id")
    ran = len(read_journal(ledger))
    with pytest.raises(rk.CorruptStoreError, match="'g'"):
        rk.run(flow, ledger, workflow_id="g", db=any_db)
    assert len(read_journal(ledger)) == ran, "a recorded activity ran again"
    assert _rows(any_db, f"SELECT id, workflow_id, generation, status FROM {_runs(any_db)} ORDER BY id") == before


def test_a_postgres_table_missing_a_column_is_a_corrupt_store(pg_url: str, tmp_path: Path) -> None:
    """Schema 5 says the keeper column is there; it was dropped. SQLite says "the store's schema is
    damaged" (CorruptStoreError); PostgreSQL gave a bare StoreError "PostgreSQL refused the operation
    (42703: column "keeper" does not exist ...)", with nothing about damage or what to do."""
    ledger = str(tmp_path / "ledger")
    assert rk.run(flow, ledger, workflow_id="k", db=pg_url) == 3
    _sql(pg_url, "ALTER TABLE replaykit_runs DROP COLUMN keeper")
    with pytest.raises(rk.CorruptStoreError, match="keeper"):
        rk.run(flow, ledger, workflow_id="k2", db=pg_url)
    with open_store(pg_url, create=False) as store, pytest.raises(rk.CorruptStoreError, match="keeper"):
        store.lock_owner("k")  # what ``replaykit describe`` asks


def test_a_postgres_meta_table_of_someone_else_is_not_a_store(pg_url: str) -> None:
    """A ``replaykit_meta`` of other columns (someone else's table of that name): refused as a raw
    "PostgreSQL refused the operation (42703: column "key" does not exist)" instead of NotAStoreError."""
    _sql(pg_url, "CREATE TABLE replaykit_meta (a integer, b integer)", "INSERT INTO replaykit_meta VALUES (1, 2)")
    with pytest.raises(rk.NotAStoreError):
        open_store(pg_url, create=False)
    with pytest.raises(rk.NotAStoreError):
        open_store(pg_url)
    assert _rows(pg_url, "SELECT * FROM replaykit_meta") == [(1, 2)]


@pytest.mark.parametrize("version", ["0", "1", "2"])
def test_a_postgres_store_whose_schema_number_was_set_back_is_refused_as_set_back(
        pg_url: str, tmp_path: Path, version: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``replaykit migrate`` of a store whose schema number was set back below 3 said only "PostgreSQL
    refused the operation (42P07: relation "replaykit_work" already exists)" (or 42701 for 1); set to
    0, even ``replaykit list`` says that. SQLite says "its schema number was set back"."""
    assert rk.run(flow, str(tmp_path / "ledger"), workflow_id="s", db=pg_url) == 3
    _sql(pg_url, f"UPDATE replaykit_meta SET value = '{version}' WHERE key = 'schema_version'")
    assert cli.main(["migrate", pg_url]) == 1
    assert "set back" in capsys.readouterr().err
    assert cli.main(["list", pg_url]) == 1
    err = capsys.readouterr().err
    assert "refused the operation" not in err and ("set back" in err or "migrate" in err)


@pytest.mark.parametrize("version", [0, 1])
def test_migrating_an_sqlite_store_set_back_below_schema_2_is_refused_not_a_traceback(
        db: str, tmp_path: Path, version: int, capsys: pytest.CaptureFixture[str]) -> None:
    """``replaykit migrate`` of a store whose user_version was set back to 0 raised ``KeyError: 1``
    (sqlite_schema.ensure_schema: version 1 has no migration, it is created whole); to 1, a raw
    ``sqlite3.OperationalError: table work already exists``: both a Python traceback from the CLI."""
    assert rk.run(flow, str(tmp_path / "ledger"), workflow_id="s", db=db) == 3
    before = Path(db).read_bytes()
    _sql(db, f"PRAGMA user_version = {version}")
    changed = Path(db).read_bytes()
    assert cli.main(["migrate", db]) == 1
    assert "set back" in capsys.readouterr().err
    assert Path(db).read_bytes() == changed != before


@pytest.mark.parametrize("damage", [
    ("ALTER TABLE runs RENAME TO runs_before", "CREATE TABLE runs (x)"),  # "table runs has no column named ..."
    ("ALTER TABLE events ADD COLUMN extra",),  # "table events has 11 columns but 10 values were supplied"
])
def test_an_sqlite_table_of_other_columns_is_a_corrupt_store(db: str, tmp_path: Path,
                                                             damage: tuple[str, ...]) -> None:
    """Reads of such a table say "the store's schema is damaged"; the insert of a new run raised a raw
    ``sqlite3.OperationalError`` from ``rk.run`` (and a traceback from ``replaykit start``):
    sqlite_errors._SCHEMA_GONE knows "no such column" but not these."""
    assert rk.run(flow, str(tmp_path / "ledger"), workflow_id="a", db=db) == 3
    _sql(db, *damage)
    with pytest.raises(rk.CorruptStoreError, match="schema is damaged"):
        rk.run(flow, str(tmp_path / "ledger"), workflow_id="b", db=db)


@pytest.mark.parametrize(("sqlite_limits", "pg_limits"), [
    ("(-5, NULL, NULL, NULL)", "(-5, NULL, NULL, NULL)"),
    ("(NULL, NULL, 0, 0)", "(NULL, NULL, 0, 0)"),
    ("('x', NULL, NULL, NULL)", "(0, NULL, NULL, NULL)"),
])
def test_a_damaged_queue_limit_is_a_corrupt_store(any_db: str, sqlite_limits: str, pg_limits: str) -> None:
    """A queue's limits row set to junk: every claim raised the API's ``ValueError("Queue concurrency
    must be a whole number of at least 1 ...")`` (store/work.py, from sqlite_work.limits /
    postgres_work._limits), which a worker logs as "failed to claim work" with a traceback at every
    poll, for ever, serving nothing of the queue."""
    with rk.Client(any_db) as client:
        client.start(flow, "unused", workflow_id="q-1", queue="q")
    table = "replaykit_queues" if any_db.startswith("postgresql://") else "queues"
    limits = pg_limits if any_db.startswith("postgresql://") else sqlite_limits
    _sql(any_db, f"INSERT INTO {table} (name, concurrency, per_key, rate_starts, rate_seconds) VALUES ('q', "
                 f"{limits[1:]}")
    with open_store(any_db, create=False) as store, pytest.raises(rk.CorruptStoreError, match="'q'"):
        store.claim("w-1", "q", [flow.name], 1, time.time() + 1, "v1")


def test_a_damaged_ready_time_does_not_kill_an_sqlite_worker(db: str) -> None:
    """``work.ready_at`` holding text: ``next_ready`` raised ``ValueError: could not convert string to
    float`` (sqlite_work.next_ready), which ``Worker._idle`` does not catch: the worker's serving
    thread died ("Exception in thread replaykit-worker-...") and it served nothing more."""
    with rk.Client(db) as client:
        client.start(flow, "unused", workflow_id="q-1", queue="q")
        client.start(flow, "unused", workflow_id="q-2", queue="q")
    _sql(db, "UPDATE work SET ready_at = 'soon' WHERE workflow_id = 'q-1'")
    # among valid rows too: text sorts after every number, so the earliest time alone hid it, and no claim
    # (ready_at <= now) ever took that run
    with open_store(db, create=False) as store, pytest.raises(rk.CorruptStoreError, match="'soon'"):
        store.next_ready(["q"])


def test_a_run_without_a_status_is_not_hidden_by_a_status_filter(pg_url: str, tmp_path: Path) -> None:
    """With NOT NULL dropped and a run's status set to NULL, ``find(statuses=...)`` (``replaykit list
    --status``) left the damaged run out (``status NOT IN (...)`` is NULL for a NULL status) instead
    of refusing it, as it refuses a status that is none of replaykit's."""
    assert rk.run(flow, str(tmp_path / "ledger"), workflow_id="n", db=pg_url) == 3
    _sql(pg_url, "ALTER TABLE replaykit_runs ALTER COLUMN status DROP NOT NULL",
         "UPDATE replaykit_runs SET status = NULL")
    with open_store(pg_url, create=False) as store, pytest.raises(rk.CorruptStoreError, match="'n'"):
        store.find(statuses=[rk.Status.COMPLETED])


_RACER = """
import sys, time
import replaykit as rk

@rk.workflow(name="race.flow")
def flow(ctx, n):
    yield rk.sleep(60)
    return n

db, start_at = sys.argv[1], float(sys.argv[2])
with rk.Client(db) as client:
    while time.time() < start_at:
        pass
    client.start(flow, 7, workflow_id="raced", queue="q")
print("started", flush=True)
"""


def test_processes_starting_one_id_at_once_create_one_run(any_db: str, tmp_path: Path,
                                                          child_env: dict[str, str]) -> None:
    """A run is created only where its id has no row (the refusal of a changed generation): six processes
    starting the same id in the same instant all succeed (the same arguments: the same run), and one
    run row of generation 1 exists, with one start event."""
    import subprocess
    import sys

    (tmp_path / "racer.py").write_text(_RACER)
    with rk.Client(any_db):
        pass  # the store exists before the race
    start_at = time.time() + 2.0
    racers = [subprocess.Popen([sys.executable, str(tmp_path / "racer.py"), any_db, str(start_at)], env=child_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in racers]
    assert all(p.returncode == 0 and "started" in out for p, (out, _) in zip(racers, outs, strict=True)), outs
    assert _rows(any_db, f"SELECT workflow_id, generation FROM {_runs(any_db)}") == [("raced", 1)]
    with open_store(any_db, create=False) as store:
        assert [e.kind for e in store.events("raced")] == ["start"]
