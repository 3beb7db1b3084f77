"""The hash chain of an SQLite store's histories (store/chain.py): a damaged, dropped, reordered or
spliced row is a CorruptStoreError naming the run and the event, raised before anything is replayed
from it; nothing runs again and nothing is recorded."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaykit as rk
from replaykit import cli

from helpers import journal, read_journal


@rk.activity
def step(ledger: str, i: int) -> str:
    journal(ledger, f"step {i}")
    return f"v-{i:05d}"


@rk.workflow(name="chained")
def chained(ctx: rk.Context, ledger: str, n: int):
    got = []
    for i in range(n):
        got.append((yield step(ledger, i)))
    go = yield rk.wait_signal("go")
    return [*got, go]


def _recorded(tmp: Path, n: int = 5) -> tuple[str, str]:
    """A run of ``n`` steps, waiting for its signal (not ended: a rerun replays its history)."""
    db, ledger = str(tmp / "store.db"), str(tmp / "ledger")
    with rk.Engine(db, workflows=[chained]) as engine:
        engine.start(chained, ledger, n, workflow_id="c")
        _wait(lambda: len(list(engine.store.events("c"))) >= n + 1)
    return db, ledger


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the run did not record its steps in 30 s"
        time.sleep(0.01)


def _sql(db: str, *statements: str) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        conn.close()


def _rows(db: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT * FROM events ORDER BY run, seq").fetchall()
    finally:
        conn.close()


def _refused(db: str, ledger: str, match: str) -> None:
    """A rerun and a read both refuse the history; no activity ran again; nothing was recorded."""
    before, ran = _rows(db), len(read_journal(ledger))
    with rk.Engine(db, workflows=[chained]) as engine, pytest.raises(rk.CorruptStoreError, match=match):
        engine.start(chained, ledger, 5, workflow_id="c").result(timeout=10)  # a rerun (not waiting forever)
    with rk.SqliteStore(db) as store, pytest.raises(rk.CorruptStoreError, match="'c'"):
        list(store.events("c"))
    assert (_rows(db), len(read_journal(ledger))) == (before, ran)


@pytest.mark.parametrize(("change", "match"), [
    ("UPDATE events SET payload = '\"v-00004\"' WHERE seq = 3", "event 3: its checksum does not match"),
    ("UPDATE events SET at = at + 1 WHERE seq = 2", "event 2"),
    ("UPDATE events SET name = 'other' WHERE seq = 1", "event 1"),
    ("UPDATE events SET digest = NULL WHERE seq = 4", "event 4: it has no checksum"),
    ("DELETE FROM events WHERE seq = 2", "event 2 is missing"),
])
def test_a_changed_or_dropped_row_is_refused_before_anything_replays(tmp_path: Path, change: str,
                                                                      match: str) -> None:
    db, ledger = _recorded(tmp_path)
    _sql(db, change)
    _refused(db, ledger, match)


def test_swapped_rows_are_refused(tmp_path: Path) -> None:
    db, ledger = _recorded(tmp_path)
    _sql(db, "UPDATE events SET seq = -1 WHERE seq = 2", "UPDATE events SET seq = 2 WHERE seq = 3",
         "UPDATE events SET seq = 3 WHERE seq = -1")
    _refused(db, ledger, "event 2")


def test_a_row_spliced_in_from_another_run_is_refused(tmp_path: Path) -> None:
    db, ledger = _recorded(tmp_path)
    with rk.Engine(db, workflows=[chained]) as engine:  # another run: the same steps, other values
        engine.start(chained, ledger + "2", 6, workflow_id="d")
        _wait(lambda: len(list(engine.store.events("d"))) >= 7)
    _sql(db, "DELETE FROM events WHERE run = 1 AND seq = 5",
         "INSERT INTO events SELECT 1, seq, step, kind, name, at, outcome, encoding, payload, digest "
         "FROM events WHERE run = 2 AND seq = 5")
    _refused(db, ledger, "event 5")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(0, 5), column=st.sampled_from(["payload", "name", "kind", "outcome", "encoding"]),
       position=st.integers(0, 40), bit=st.integers(0, 6))
def test_any_flipped_bit_is_refused_or_harmless(tmp_path_factory: pytest.TempPathFactory, seq: int, column: str,
                                                position: int, bit: int) -> None:
    """One bit flipped in one text field of one row: the history is refused, or the flip changed
    nothing (a position past the value's end)."""
    db, ledger = _recorded(tmp_path_factory.mktemp("flip"))
    conn = sqlite3.connect(db)
    try:
        (value,) = conn.execute(f"SELECT CAST({column} AS BLOB) FROM events WHERE seq = ?", (seq,)).fetchone()
        if position >= len(value):
            return
        flipped = bytearray(value)
        flipped[position] ^= 1 << bit
        with conn:
            conn.execute(f"UPDATE events SET {column} = CAST(? AS TEXT) WHERE seq = ?", (bytes(flipped), seq))
    finally:
        conn.close()
    _refused(db, ledger, "'c'")


def test_a_store_of_schema_2_is_chained_when_its_owner_vouches_for_it_and_goes_on(tmp_path: Path) -> None:
    """Checksumming the rows of a store from before checksums vouches for them, so it is not done on
    open (a writer could set the schema back and have its rows checksummed with the key): the store is
    refused, unchanged, until ``replaykit migrate``."""
    db, ledger = _recorded(tmp_path)
    _sql(db, "ALTER TABLE events DROP COLUMN digest", "ALTER TABLE runs DROP COLUMN head",
         "ALTER TABLE signals DROP COLUMN digest", "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
         "PRAGMA user_version = 2")
    before = Path(db).read_bytes()
    with pytest.raises(rk.MigrationRequiredError, match="schema 2.*replaykit migrate"):
        rk.send_signal(db, "c", "go", "yes")
    with pytest.raises(rk.MigrationRequiredError):
        rk.run(chained, ledger, 5, workflow_id="c", db=db)
    assert Path(db).read_bytes() == before
    assert cli.main(["migrate", db]) == 0  # the rows as they stand chained
    rk.send_signal(db, "c", "go", "yes")
    assert rk.run(chained, ledger, 5, workflow_id="c", db=db) == [f"v-{i:05d}" for i in range(5)] + ["yes"]
    assert len(read_journal(ledger)) == 5  # nothing ran again
    assert all(row[-1] is not None for row in _rows(db))


def _finished(tmp: Path, n: int = 5) -> tuple[str, str, list[str]]:
    """A run of ``n`` steps that got its signal and ended."""
    db, ledger = _recorded(tmp, n)
    rk.send_signal(db, "c", "go", "yes")
    result = rk.run(chained, ledger, n, workflow_id="c", db=db)
    return db, ledger, result


@pytest.mark.parametrize(("change", "match"), [
    ("DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)", "ends at event 6"),
    ("DELETE FROM events WHERE seq >= 4", "ends at event 3"),
    ("UPDATE runs SET head = NULL", "lost the seal of its end"),
    ("UPDATE runs SET status = 'running'", "says the run has not ended"),
])
def test_a_finished_history_cut_short_or_unsealed_is_refused(tmp_path: Path, change: str, match: str) -> None:
    """The tail of a finished run is covered by its seal: without it, deleting the last events would
    leave a valid, shorter chain, and a rerun would run those steps again."""
    db, ledger, _ = _finished(tmp_path)
    _sql(db, change)
    ran = len(read_journal(ledger))
    with pytest.raises(rk.CorruptStoreError, match=match):
        rk.run(chained, ledger, 5, workflow_id="c", db=db)
    with rk.SqliteStore(db) as store, pytest.raises(rk.CorruptStoreError, match=match):
        store.last_event("c")
    assert len(read_journal(ledger)) == ran


def test_a_finished_history_lengthened_is_refused(tmp_path: Path) -> None:
    db, ledger, result = _finished(tmp_path)
    with rk.SqliteStore(db) as store:  # an event appended after the end, checksummed with the store's key
        end = list(store.events("c"))[-1]
        conn = store._conn()
        store._insert(conn, 1, end._replace(seq=end.seq + 1))
    with pytest.raises(rk.CorruptStoreError, match="added after it"):
        rk.run(chained, ledger, 5, workflow_id="c", db=db)


def test_a_forger_without_the_key_cannot_rechain_a_history(tmp_path: Path) -> None:
    """Whoever changes a row and recomputes the chain without the store's key (here: with another
    key, as an unkeyed chain would be) is refused: the chain is keyed."""
    from replaykit.history import Event
    from replaykit.store import chain

    db, ledger = _recorded(tmp_path)
    _sql(db, "UPDATE events SET payload = '\"forged\"' WHERE seq = 2")
    forger = chain.Chain([b"a key that is not the store's one"])
    conn = sqlite3.connect(db)
    with conn:
        prev = chain.seed("c", 1)
        for row in conn.execute("SELECT seq, step, kind, name, at, outcome, encoding, payload FROM events "
                                "WHERE run = 1 ORDER BY seq").fetchall():
            prev = forger.link(prev, Event._make(row))
            conn.execute("UPDATE events SET digest = ? WHERE run = 1 AND seq = ?", (prev, row[0]))
    conn.close()
    _refused(db, ledger, "'c'")


def test_a_changed_signal_is_refused_before_it_is_delivered(tmp_path: Path) -> None:
    db, ledger = _recorded(tmp_path)
    rk.send_signal(db, "c", "go", "yes")
    _sql(db, "UPDATE signals SET payload = '\"no\"'")
    ran = len(read_journal(ledger))
    with pytest.raises(rk.CorruptStoreError, match="signal #1 to 'c'.*not delivered"):
        rk.run(chained, ledger, 5, workflow_id="c", db=db)
    assert len(read_journal(ledger)) == ran


def test_histories_recorded_under_an_old_secret_read_after_rotation(tmp_path: Path) -> None:
    """The first secret chains new events; older ones still verify: a run started under the old
    secret goes on, and ends, under the new one."""
    db, ledger = str(tmp_path / "store.db"), str(tmp_path / "ledger")
    old, new = "the-old-secret-of-this-app", "the-new-secret-of-this-app"
    with rk.Engine(db, workflows=[chained], secret=old) as engine:
        engine.start(chained, ledger, 3, workflow_id="c")
        _wait(lambda: len(list(engine.store.events("c"))) >= 4)
    with rk.Engine(db, workflows=[chained], secret=new) as engine, pytest.raises(
            rk.PayloadAuthenticationError, match="recorded with another secret"):
        engine.start(chained, ledger, 3, workflow_id="c").result(timeout=10)
    with rk.SqliteStore(db, secret=[new, old]) as store:
        rk.send_signal(store, "c", "go", "yes")
    with rk.Engine(db, workflows=[chained], secret=[new, old]) as engine:
        assert engine.start(chained, ledger, 3, workflow_id="c").result(timeout=10)[-1] == "yes"
    assert len(read_journal(ledger)) == 3


def test_a_payload_stored_as_the_other_kind_is_refused(tmp_path: Path) -> None:
    """Found by the corruption campaign: one flipped bit turned a text payload into a blob of the
    same bytes, which the chain did not tell apart (the checksum now covers the payload's kind)."""
    db, ledger = _recorded(tmp_path)
    _sql(db, "UPDATE events SET payload = CAST(payload AS BLOB) WHERE seq = 3")
    _refused(db, ledger, "event 3: its checksum does not match")


def test_a_row_the_drivers_reads_missed_is_damage_not_another_driver(tmp_path: Path) -> None:
    """Found by the corruption campaign: a damaged page can hide rows from every scan of a history
    while the insert of the next step still meets them. The run is held here, so nobody else should
    have written that row: the error says the store may be damaged (not "two processes are driving
    the same workflow"), and nothing is overwritten."""
    db, ledger = str(tmp_path / "store.db"), str(tmp_path / "ledger")
    with rk.Engine(db, workflows=[chained]) as engine:
        handle = engine.start(chained, ledger, 3, workflow_id="c")
        _wait(lambda: len(list(engine.store.events("c"))) >= 4)
        _sql(db, "INSERT INTO events SELECT run, 4, 4, 'signal', 'go', at, 'ok', 'json', '\"x\"', NULL "
                 "FROM events WHERE seq = 3")
        rk.send_signal(db, "c", "go", "yes")
        with pytest.raises(rk.WorkflowLockedError, match="event 4 of 'c' is already in the store, though "
                                                         "this process holds the run.*damaged"):
            handle.result(timeout=20)
