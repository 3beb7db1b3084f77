"""A writer of an SQLite store without its secret (plain SQL on the file) cannot make replaykit return a
value, run a workflow or run an activity that the store's histories do not vouch for: each change is
refused with a replaykit error and nothing runs (found by a security review of the chain)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit import cli
from replaykit.handle import ended_with
from replaykit.testing import replay_all
from replaykit.testing.timeskip import FakeClock

from helpers import journal, read_journal

SECRET = "forgery-test-secret-0123456789"


@rk.activity
def pay(ledger: str, to: str, cents: int) -> str:
    journal(ledger, f"pay {cents} to {to}")
    return f"paid {cents} to {to}"


@rk.workflow(name="transfer")
def transfer(ctx: rk.Context, ledger: str, to: str, cents: int):
    return (yield pay(ledger, to, cents))


@rk.workflow(name="approval")
def approval(ctx: rk.Context, ledger: str, to: str, cents: int):
    quote = yield pay(ledger, to, cents)
    ok = yield rk.wait_signal("approved")
    return f"approved {quote}" if ok else "cancelled"


@rk.activity
def debit(ledger: str, to: str, cents: int) -> str:
    journal(ledger, f"DEBIT {cents} from {to}")
    return "debited"


@rk.workflow(name="close_account")
def close_account(ctx: rk.Context, ledger: str, to: str, cents: int):
    return (yield debit(ledger, to, cents))


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAYKIT_SECRET", SECRET)  # for rk.run, which takes the secret from the environment


def _wait_for_its_step(engine: rk.Engine, workflow_id: str) -> None:
    """Until the run has recorded its first step (it then waits for its signal)."""
    deadline = time.monotonic() + 20
    while len(list(engine.store.events(workflow_id))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _sql(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            for statement, params in statements:
                conn.execute(statement, params)
    finally:
        conn.close()


def test_the_end_of_another_run_copied_in_is_refused(tmp_path: Path) -> None:
    """The last two rows of another finished run, and its seal, copied over a run's last rows: the last
    event checks out against the stored digest of the row before it, so only a seal that binds the run
    (its workflow id and generation) refuses it."""
    db, ledger = tmp_path / "pay.db", str(tmp_path / "ledger")
    with rk.Engine(db, secret=SECRET) as engine:
        assert engine.start(transfer, ledger, "alice", 100, workflow_id="t-alice").result(timeout=10) == \
            "paid 100 to alice"
        engine.start(transfer, ledger, "mallory", 999999, workflow_id="t-mallory").result(timeout=10)
    mallory = "(SELECT id FROM runs WHERE workflow_id = 't-mallory')"
    alice = "(SELECT id FROM runs WHERE workflow_id = 't-alice')"
    _sql(db, (f"DELETE FROM events WHERE run = {alice} AND seq >= 1", ()),
         (f"INSERT INTO events SELECT {alice}, seq, step, kind, name, at, outcome, encoding, payload, digest "
          f"FROM events WHERE run = {mallory} AND seq >= 1", ()),
         (f"UPDATE runs SET head = (SELECT head FROM runs WHERE id = {mallory}) WHERE id = {alice}", ()))
    with rk.Engine(db, secret=SECRET) as engine, pytest.raises(rk.CorruptStoreError, match="sealed"):
        engine.handle("t-alice").result(timeout=10)
    with pytest.raises(rk.CorruptStoreError, match="'t-alice'.*damaged"):
        rk.run(transfer, ledger, "alice", 100, workflow_id="t-alice", db=db)
    with rk.SqliteStore(db, secret=SECRET) as store, pytest.raises(rk.CorruptStoreError):
        store.last_event("t-alice")


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_run_marked_ended_with_a_seal_anyone_can_read_is_refused(tmp_path: Path, status: str) -> None:
    """A run waiting for its signal, marked ended and given its last event's digest (readable by anyone)
    as its seal: before, a bare assert failed (and under ``python -O`` the activity's value came back
    as the run's result). The seal binds the status and is keyed."""
    db, ledger = tmp_path / "ap.db", str(tmp_path / "ledger")
    with rk.Engine(db, secret=SECRET) as engine:
        engine.start(approval, ledger, "x", 1, workflow_id="ap")
        _wait_for_its_step(engine, "ap")
    _sql(db, ("UPDATE runs SET status = ?, head = (SELECT digest FROM events e WHERE e.run = runs.id "
              "ORDER BY seq DESC LIMIT 1) WHERE workflow_id = 'ap'", (status,)))
    with pytest.raises(rk.CorruptStoreError, match="'ap'.*not how the run was sealed"):
        rk.run(approval, ledger, "x", 1, workflow_id="ap", db=db)
    with rk.Engine(db, secret=SECRET) as engine, pytest.raises(rk.CorruptStoreError):
        engine.handle("ap").result(timeout=10)
    assert read_journal(ledger) == ["pay 1 to x"]


def test_a_run_renamed_to_another_workflow_runs_nothing(tmp_path: Path) -> None:
    """The run row's workflow name is an index, not covered by the chain: a pending ``transfer`` renamed
    ``close_account`` must not be driven by ``close_account`` with its authenticated arguments."""
    db, ledger = tmp_path / "bank.db", str(tmp_path / "ledger")
    # A fake clock: the first engine cannot reach the due time and start the run, however long it takes to close.
    with rk.Engine(db, workflows=[transfer, close_account], secret=SECRET, clock=FakeClock(time.time())) as engine:
        engine.start(transfer, ledger, "acct-7", 5000, workflow_id="dep", start_delay=0.3)
    _sql(db, ("UPDATE runs SET name = 'close_account' WHERE workflow_id = 'dep'", ()))
    time.sleep(0.4)
    with rk.Engine(db, workflows=[transfer, close_account], secret=SECRET) as engine:
        [handle] = engine.recover()
        with pytest.raises(rk.CorruptStoreError, match="names workflow 'close_account'.*started by workflow "
                                                       "'transfer'"):
            handle.result(timeout=10)
    with pytest.raises(rk.ReplayKitError):
        rk.run(close_account, ledger, "acct-7", 5000, workflow_id="dep", db=db)
    assert read_journal(ledger) == []


def test_a_store_set_back_to_the_schema_before_checksums_is_not_checksummed_on_open(tmp_path: Path) -> None:
    """A writer drops the checksum columns, sets the schema back to 2 and changes a run's arguments: before,
    the next process to open the store checksummed the forged rows with the key, and drove the run with
    them. Now it refuses the store, unchanged, until its owner runs ``replaykit migrate``."""
    db, ledger = tmp_path / "pay.db", str(tmp_path / "ledger")
    with rk.Engine(db, secret=SECRET) as engine:
        engine.start(approval, ledger, "alice", 100, workflow_id="ap")
        _wait_for_its_step(engine, "ap")
    _sql(db, ("ALTER TABLE events DROP COLUMN digest", ()), ("ALTER TABLE runs DROP COLUMN head", ()),
         ("ALTER TABLE signals DROP COLUMN digest", ()),
         ("UPDATE meta SET value = '2' WHERE key = 'schema_version'", ()), ("PRAGMA user_version = 2", ()),
         ("UPDATE events SET payload = replace(payload, '\"alice\",100', '\"mallory\",999999') WHERE seq = 0", ()))
    before = db.read_bytes()
    with pytest.raises(rk.MigrationRequiredError, match="schema 2.*replaykit migrate"):
        with rk.Engine(db, secret=SECRET) as engine:
            engine.recover()
    with pytest.raises(rk.MigrationRequiredError):
        rk.send_signal(db, "ap", "approved", True)
    assert db.read_bytes() == before
    assert read_journal(ledger) == ["pay 100 to alice"]


def test_looking_at_a_store_prints_no_control_characters_from_it(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A run's name and custom status are written by whoever writes the store: printed raw, escape
    sequences in them clear the screen, retitle the terminal or hide lines."""
    db, ledger = tmp_path / "pay.db", str(tmp_path / "ledger")
    rk.run(transfer, ledger, "alice", 1, workflow_id="t", db=db)
    _sql(db, ("UPDATE runs SET name = 'transfer\x1b[2J\x1b]0;owned\x07', custom_status = '\"\\u001b[8m\"'", ()),
         ("UPDATE events SET name = 'pay\x1b[1A' WHERE seq = 1", ()))
    for verb in (["list", str(db)], ["history", str(db), "t"]):
        cli.main(verb)
        out, err = capsys.readouterr()
        assert "\x1b" not in out + err and "\x07" not in out + err
    cli.main(["list", str(db)])
    assert "transfer\\x1b[2J\\x1b]0;owned\\x07" in capsys.readouterr().out  # shown, escaped


@rk.workflow(name="audit")
def audit(ctx: rk.Context, ledger: str, to: str, cents: int):
    @ctx.query("flagged")
    def flagged() -> bool:
        return True

    yield rk.sleep(3600)


def test_a_renamed_run_is_refused_by_query_check_and_fork_too(tmp_path: Path) -> None:
    """Found by a second review: the rename was refused when driving a run, but ``rk.query``,
    ``replaykit check`` and ``rk.fork`` still chose the workflow by the run row's name."""
    db, ledger = tmp_path / "q.db", str(tmp_path / "ledger")
    with rk.Engine(db, workflows=[approval, audit], secret=SECRET) as engine:
        engine.start(approval, ledger, "x", 1, workflow_id="t")
        _wait_for_its_step(engine, "t")
    _sql(db, ("UPDATE runs SET name = 'audit' WHERE workflow_id = 't'", ()))
    with pytest.raises(rk.CorruptStoreError, match="names workflow 'audit'.*started by workflow 'approval'"):
        rk.query(db, "t", "flagged", workflows={"audit": audit, "approval": approval})
    with pytest.raises(rk.CorruptStoreError, match="names workflow 'audit'"):
        rk.fork(db, "t", "t2", step=1)
    [report] = replay_all(db, workflows=[approval, audit])
    assert not report.ok and isinstance(report.error, rk.CorruptStoreError)


def test_a_run_whose_events_were_all_deleted_is_refused_everywhere(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a raw StopIteration from rk.run, rk.query and a repeated start, an IndexError from fork,
    a traceback from ``replaykit check`` (a pending run has no seal to miss)."""
    db, ledger = tmp_path / "e.db", str(tmp_path / "ledger")
    with rk.Engine(db, secret=SECRET) as engine:
        engine.start(transfer, ledger, "x", 1, workflow_id="e", start_delay=3600)
    _sql(db, ("DELETE FROM events", ()))
    for attempt in (lambda: rk.run(transfer, ledger, "x", 1, workflow_id="e", db=db),
                    lambda: rk.query(db, "e", "anything", workflows={"transfer": transfer}),
                    lambda: rk.fork(db, "e", "e2", step=1)):
        with pytest.raises(rk.CorruptStoreError, match="no events, not even its start"):
            attempt()
    assert cli.main(["check", str(db)]) == 1
    assert "no events, not even its start" in capsys.readouterr().out
    assert read_journal(ledger) == []


def test_migrating_a_store_whose_schema_number_was_set_back_is_refused(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Its tables already carry checksums: ``replaykit migrate`` says it was set back (before: a raw
    "duplicate column name" traceback)."""
    db, ledger = tmp_path / "m.db", str(tmp_path / "ledger")
    rk.run(transfer, ledger, "x", 1, workflow_id="m", db=db)
    _sql(db, ("UPDATE meta SET value = '2' WHERE key = 'schema_version'", ()), ("PRAGMA user_version = 2", ()))
    with pytest.raises(rk.MigrationRequiredError):
        rk.run(transfer, ledger, "x", 1, workflow_id="m", db=db)
    assert cli.main(["migrate", str(db)]) == 1
    assert "schema number was set back" in capsys.readouterr().err


def test_a_result_asked_for_while_the_run_is_restarted_waits_for_the_new_generation(tmp_path: Path) -> None:
    """Found by a second review: a restart between reading a run's status (ended) and its last event
    (the new generation's start) made ``handle.result()`` call the store damaged."""
    db = tmp_path / "r.db"
    with rk.Engine(db, secret=SECRET) as engine:
        engine.start(approval, str(tmp_path / "ledger"), "x", 1, workflow_id="r")
        rk.cancel(db, "r")
        with pytest.raises(rk.WorkflowCancelled):
            engine.handle("r").result(timeout=10)
    rk.restart(db, "r")
    with rk.SqliteStore(db, secret=SECRET) as store:
        assert ended_with(store, "r") is None  # the newest generation has not ended: not damage
