"""The hash chain of a PostgreSQL store's histories (store/postgres_history.py): the same promises as
SQLite's (tests/test_chain.py), kept by the statements that write a step in one round trip."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import replaykit as rk
from replaykit import cli
from replaykit.store.open import open_store

from helpers import journal, read_journal


@rk.activity(name="pgchain.step")
def step(ledger: str, i: int) -> str:
    journal(ledger, f"step {i}")
    return f"v-{i:05d}"


@rk.workflow(name="pgchain")
def chained(ctx: rk.Context, ledger: str, n: int):
    got = []
    for i in range(n):
        got.append((yield step(ledger, i)))
    go = yield rk.wait_signal("go")
    return [*got, go]


def _sql(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the run did not record its steps in 30 s"
        time.sleep(0.01)


def _recorded(url: str, ledger: str, n: int = 5) -> None:
    with rk.Engine(url, workflows=[chained]) as engine:
        engine.start(chained, ledger, n, workflow_id="c")
        _wait(lambda: len(list(engine.store.events("c"))) >= n + 1)


def _refused(url: str, ledger: str, match: str) -> None:
    ran = len(read_journal(ledger))
    with rk.Engine(url, workflows=[chained]) as engine, pytest.raises(rk.CorruptStoreError, match=match):
        engine.start(chained, ledger, 5, workflow_id="c").result(timeout=10)
    with open_store(url) as store, pytest.raises(rk.CorruptStoreError, match="'c'"):
        list(store.events("c"))
    assert len(read_journal(ledger)) == ran


@pytest.mark.parametrize(("change", "match"), [
    ("UPDATE replaykit_events SET payload = '\"v-00004\"' WHERE seq = 3", "event 3: its checksum does not match"),
    ("UPDATE replaykit_events SET name = 'other' WHERE seq = 1", "event 1"),
    ("DELETE FROM replaykit_events WHERE seq = 2", "event 2 is missing"),
    ("UPDATE replaykit_events SET digest = NULL WHERE seq = 4", "event 4: it has no checksum"),
])
def test_a_changed_or_dropped_row_is_refused(pg_url: str, tmp_path: Path, change: str, match: str) -> None:
    ledger = str(tmp_path / "ledger")
    _recorded(pg_url, ledger)
    _sql(pg_url, change)
    _refused(pg_url, ledger, match)


def test_steps_written_in_one_round_trip_chain_across_a_takeover(pg_url: str, tmp_path: Path) -> None:
    """The driver keeps its last checksum; another store, taking the run over, reads it from the history."""
    ledger = str(tmp_path / "ledger")
    _recorded(pg_url, ledger, 3)
    with rk.Engine(pg_url, workflows=[chained]) as engine:  # a rerun that goes on: its steps chain on
        handle = engine.start(chained, ledger, 3, workflow_id="c")
        rk.send_signal(engine.store, "c", "go", "yes")
        assert handle.result(timeout=20) == ["v-00000", "v-00001", "v-00002", "yes"]
    with open_store(pg_url) as store:
        assert [e.seq for e in store.events("c")][-1] == store.last_event("c").seq  # type: ignore[union-attr]


def test_a_finished_history_cut_short_is_refused(pg_url: str, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    _recorded(pg_url, ledger)
    rk.send_signal(pg_url, "c", "go", "yes")
    with rk.Engine(pg_url, workflows=[chained]) as engine:
        engine.start(chained, ledger, 5, workflow_id="c").result(timeout=20)
    _sql(pg_url, "DELETE FROM replaykit_events WHERE seq >= 4")
    ran = len(read_journal(ledger))
    with pytest.raises(rk.CorruptStoreError, match="ends at event 3"):
        rk.run(chained, ledger, 5, workflow_id="c", db=pg_url)
    assert len(read_journal(ledger)) == ran


def test_without_the_secret_a_history_cannot_be_forged(pg_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer of the database without the secret rechains a changed history with the chain of a
    store without a secret (the only one he can compute): refused."""
    from replaykit.store import postgres_schema
    from replaykit.store.postgres import PostgresStore

    ledger = str(tmp_path / "ledger")
    _recorded(pg_url, ledger)
    _sql(pg_url, "UPDATE replaykit_events SET payload = '\"forged\"' WHERE seq = 2")
    import psycopg

    monkeypatch.delenv("REPLAYKIT_SECRET")
    with PostgresStore(pg_url) as keyless, psycopg.connect(pg_url, autocommit=True) as conn:
        postgres_schema.checksum_all(conn, keyless.chain)
    monkeypatch.setenv("REPLAYKIT_SECRET", "replaykit-test-suite-secret")
    _refused(pg_url, ledger, "'c'")


def test_a_changed_signal_is_not_delivered(pg_url: str, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    _recorded(pg_url, ledger)
    rk.send_signal(pg_url, "c", "go", "yes")
    _sql(pg_url, "UPDATE replaykit_signals SET payload = '\"no\"'")
    with pytest.raises(rk.CorruptStoreError, match="signal #1 to 'c'.*not delivered"):
        rk.run(chained, ledger, 5, workflow_id="c", db=pg_url)


def test_a_store_of_schema_3_gets_its_rows_checksummed_and_goes_on(pg_url: str, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    _recorded(pg_url, ledger)
    _sql(pg_url, "ALTER TABLE replaykit_events DROP COLUMN digest", "ALTER TABLE replaykit_runs DROP COLUMN head",
         "ALTER TABLE replaykit_signals DROP COLUMN digest",
         "UPDATE replaykit_meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(rk.MigrationRequiredError, match="schema 3"):
        rk.send_signal(pg_url, "c", "go", "yes")
    assert cli.main(["migrate", pg_url]) == 0  # migrated to 4, the rows as they stand checksummed
    rk.send_signal(pg_url, "c", "go", "yes")
    assert rk.run(chained, ledger, 5, workflow_id="c", db=pg_url)[-1] == "yes"
    assert len(read_journal(ledger)) == 5  # nothing ran again
