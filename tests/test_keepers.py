"""Runs an engine evicted (``max_cached_runs``) stay that engine's while it lives (store/keepers.py):
other processes' recover(), rk.run and rk.terminate leave them to it; a SIGKILL or a clean close frees
them. Real processes throughout. The tests that take ``any_db`` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import time
from typing import Any

import pytest

import replaykit as rk
from replaykit.store import postgres_schema, sqlite_schema
from replaykit.testing.timeskip import FakeClock

from conftest import PYTHON
from helpers import driver_turn, journal, read_journal, timers_fired, wait_until


@rk.activity
def note(path: str, line: str) -> str:
    journal(path, line)
    return line


@rk.workflow(name="kp_note_nap_note")
def note_nap_note(ctx: rk.Context, path: str, seconds: float) -> Any:
    yield note(path, "before")
    yield rk.sleep(seconds)
    yield note(path, "after")
    return "done"


@rk.workflow(name="kp_naps")
def naps(ctx: rk.Context, seconds: list[float]) -> Any:
    for s in seconds:
        yield rk.sleep(s)
    return "woke"


# A keeper in a child process: starts x, waits until it is evicted, says so; then on "close" closes the
# engine (the process lives on, until killed), saying "closed".
_KEEPER = """
import sys, time
import replaykit as rk
import test_keepers
db, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
engine = rk.Engine(db, max_cached_runs=0, poll_interval=0.02)
engine.start(test_keepers.note_nap_note, path, seconds, workflow_id="x")
while "x" not in engine._evicted:
    time.sleep(0.01)
print("evicted", flush=True)
sys.stdin.readline()
engine.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def _keeper(db: str, path: str, env: dict[str, str], seconds: float = 3600.0) -> subprocess.Popen[str]:
    child = subprocess.Popen([PYTHON, "-c", _KEEPER, db, path, str(seconds)], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == "evicted\n"
    return child


def _driven_after_a_turn(engine: rk.Engine, workflow_id: str) -> bool:
    driver_turn(engine)  # after what recover() posted
    return workflow_id in engine._runs


def test_a_run_evicted_by_a_live_process_is_refused_here_until_that_process_is_killed(
        any_db: str, tmp_path: Any, child_env: dict[str, str]) -> None:
    """recover() and rk.run leave a run kept by another live process's engine (rk.run's error names the
    keeper); once that process is SIGKILLed, recover() here takes it and ends it, no activity repeated."""
    path = str(tmp_path / "journal")
    child = _keeper(any_db, path, child_env)
    try:
        clock = FakeClock(time.time())
        with rk.Engine(any_db, poll_interval=0.02, clock=clock) as engine:
            engine.recover()
            assert not _driven_after_a_turn(engine, "x")  # before: taken over here
            with pytest.raises(rk.WorkflowLockedError, match=r"pid \d+ .*keeps it out of memory"):
                rk.run(note_nap_note, path, 3600.0, workflow_id="x", db=any_db)
            child.kill()
            child.wait(timeout=30)
            [handle] = engine.recover()
            wait_until(lambda: _driven_after_a_turn(engine, "x"), "the run is taken here")
            clock.advance_to(clock.now() + 3601)
            timers_fired(engine)
            assert handle.result(timeout=20) == "done"
    finally:
        child.kill()
        child.wait(timeout=30)
    assert read_journal(path) == ["before", "after"]


def test_an_engine_that_closes_lets_its_evicted_runs_go(any_db: str, tmp_path: Any,
                                                      child_env: dict[str, str]) -> None:
    """A clean close (its process still alive) frees the runs its engine kept: recover() elsewhere ends them."""
    path = str(tmp_path / "journal")
    child = _keeper(any_db, path, child_env, seconds=0.5)  # its timer comes due after the test's first look
    try:
        with rk.Engine(any_db, poll_interval=0.02) as engine:
            engine.recover()
            assert not _driven_after_a_turn(engine, "x")
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("close\n")
            child.stdin.flush()
            assert child.stdout.readline() == "closed\n"
            assert child.poll() is None  # the process lives: only its engine let go
            [handle] = engine.recover()
            assert handle.result(timeout=20) == "done"
    finally:
        child.kill()
        child.wait(timeout=30)
    assert read_journal(path) == ["before", "after"]


def _terminated_elsewhere_told_once(db: str, env: dict[str, str], paused: bool) -> None:
    told: list[str] = []

    def elsewhere(code: str) -> None:
        subprocess.run([PYTHON, "-c", f"import replaykit as rk, sys; {code}", db], env=env, check=True, timeout=60)

    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02) as engine:
        engine.on("*", lambda event: told.append(event.kind))
        handle = engine.start(naps, [3600.0], workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        if paused:
            elsewhere("rk.pause(sys.argv[1], 'x')")
            wait_until(lambda: "run_paused" in told, "the engine is told the pause", timeout=20)
            assert "x" in engine._evicted and "x" in engine._paused_here  # kept paused, out of memory
        elsewhere("rk.terminate(sys.argv[1], 'x', 'from afar', wait=15)")
        with pytest.raises(rk.WorkflowTerminated, match="from afar"):
            handle.result(timeout=20)
        wait_until(lambda: "run_cancelled" in told, "the engine's hooks are told")  # before: never
        timers_fired(engine)  # a poll or two later: told once only
        time.sleep(0.1)
        timers_fired(engine)
    assert told.count("run_cancelled") == 1 and told.count("run_paused") == int(paused)


def test_terminate_from_another_process_is_applied_by_the_engine_that_keeps_the_run(
        any_db: str, child_env: dict[str, str]) -> None:
    """rk.terminate elsewhere on a run a live engine keeps evicted (waiting on its timer) leaves it to that
    engine: its hooks hear run_cancelled once, and its handle raises WorkflowTerminated."""
    _terminated_elsewhere_told_once(any_db, child_env, paused=False)


def test_terminate_from_another_process_of_a_paused_kept_run(any_db: str, child_env: dict[str, str]) -> None:
    """The same for a run kept paused out of memory: the engine's poll wakes it for the request (it did
    not at b3049f0, once the engine had been told the pause) and ends it without replaying it."""
    _terminated_elsewhere_told_once(any_db, child_env, paused=True)


def test_a_schema_3_sqlite_store_reads_as_it_stands_and_migrates(tmp_path: Any) -> None:
    """A reader opens a store of schema 3 (no keeper column) without writing; the first writer migrates it."""
    db = str(tmp_path / "s.db")
    assert rk.run(naps, [0.0], workflow_id="old", db=db) == "woke"
    with sqlite3.connect(db) as conn:
        conn.executescript("ALTER TABLE runs DROP COLUMN keeper; PRAGMA user_version = 3; "
                           "UPDATE meta SET value = '3' WHERE key = 'schema_version';")
    reader = rk.SqliteStore(db, read_only=True)
    try:
        assert [info.workflow_id for info in reader.list()] == ["old"]
        assert reader.info("old").status is rk.Status.COMPLETED  # type: ignore[union-attr]
        assert [event.kind for event in reader.events("old")][0] == "start"
    finally:
        reader.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3  # the reader wrote nothing
    with rk.Engine(db, max_cached_runs=0) as engine:
        assert engine.handle("old").result(timeout=10) == "woke"
        assert engine.start(naps, [0.05, 0.05], workflow_id="new").result(timeout=20) == "woke"  # evicted: marked
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.MIGRATED_TO
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            sqlite_schema.MIGRATED_TO)
        assert "keeper" in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]


def test_a_schema_4_postgres_store_migrates(pg_url: str) -> None:
    """An older PostgreSQL store (no keeper column) is migrated on open, its runs kept."""
    import psycopg

    assert rk.run(naps, [0.0], workflow_id="old", db=pg_url) == "woke"
    with psycopg.connect(pg_url) as conn:
        conn.execute("ALTER TABLE replaykit_runs DROP COLUMN keeper")
        conn.execute("UPDATE replaykit_meta SET value = '4' WHERE key = 'schema_version'")
    with rk.Engine(pg_url, max_cached_runs=0) as engine:
        assert engine.handle("old").result(timeout=10) == "woke"
        assert engine.start(naps, [0.05, 0.05], workflow_id="new").result(timeout=20) == "woke"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM replaykit_meta WHERE key = 'schema_version'").fetchone() == (
            str(postgres_schema.MIGRATED_TO),)
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'replaykit_runs' "
                            "AND column_name = 'keeper'").fetchone() == (1,)


# Engine B: recover() in a loop until STOP exists; every event its hooks hear is journaled.
_PROBER = """
import os, sys, time
import replaykit as rk
import test_keepers
from helpers import journal
db, told, stop = sys.argv[1:4]
with rk.Engine(db, poll_interval=0.02) as engine:
    engine.on("*", lambda event: journal(told, event.kind + " " + event.workflow_id))
    journal(told, "ready -")
    while not os.path.exists(stop):
        engine.recover()
        time.sleep(0.005)
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_another_process_recovering_in_a_loop_never_drives_a_run_a_live_engine_keeps(
        any_db: str, tmp_path: Any, child_env: dict[str, str], seed: int) -> None:
    """Randomized: N runs with random naps, evicted by engine A here between naps, while engine B in another
    process calls recover() in a loop. B's hooks never hear of them; all end under A. (B starts once every
    run is evicted: a run just created, not yet opened by A, is anyone's recovery's, as before.)"""
    rnd = random.Random(seed)
    n = rnd.randint(4, 10)
    told, stop = str(tmp_path / "told"), str(tmp_path / "stop")
    ended: list[str] = []
    prober = None
    try:
        clock = FakeClock(time.time())  # A's runs wake when the test moves it: all while B recovers
        with rk.Engine(any_db, max_cached_runs=0, poll_interval=0.02, clock=clock) as a:
            a.on("run_completed", lambda event: ended.append(event.workflow_id))
            handles = [a.start(naps, [round(rnd.uniform(0.0, 0.5), 3) for _ in range(rnd.randint(1, 6))],
                               workflow_id=f"r{i}") for i in range(n)]
            wait_until(lambda: len(a._evicted) + len(ended) == n, "A keeps every run evicted (or ended)")
            prober = subprocess.Popen([PYTHON, "-c", _PROBER, any_db, told, stop], env=child_env)
            wait_until(lambda: read_journal(told) == ["ready -"], "B is up", timeout=30)
            for _ in range(200):
                if len(ended) == n:
                    break
                clock.advance_to(clock.now() + rnd.uniform(0.01, 0.2))
                timers_fired(a)
                time.sleep(rnd.uniform(0.0, 0.05))  # B's tries land anywhere among A's wake-ups
            assert [h.result(timeout=60) for h in handles] == ["woke"] * n
            wait_until(lambda: len(ended) == n, "A's hooks hear every end")
        open(stop, "w").close()
        assert prober.wait(timeout=30) == 0
    finally:
        if prober is not None:
            prober.kill()
            prober.wait(timeout=30)
    assert read_journal(told) == ["ready -"]  # before: B took runs over (run_started, run_completed, ...)
    assert sorted(ended) == sorted(f"r{i}" for i in range(n))


_HOLDER = """
import sys
from replaykit.store.locks import FileLocks
locks = FileLocks(sys.argv[1])
assert locks.try_acquire("x")
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_kept_run_whose_lock_is_held_elsewhere_when_it_wakes_is_taken_back_once_it_is_free(
        tmp_path: Any, child_env: dict[str, str]) -> None:
    """Another process holds an evicted run's lock when its timer wakes it (a prober stalled inside try_lock,
    between taking the lock and giving it back: here, the raw lock). The engine tries the lock again at its
    poll interval for as long as it is held, and the run stays its own meanwhile. At b3049f0 it gave up after
    5 s and only followed the run, whose mark still named it: nobody drove it until the engine closed."""
    db = str(tmp_path / "s.db")
    clock = FakeClock(time.time())
    with rk.Engine(db, max_cached_runs=0, poll_interval=0.02, clock=clock) as engine:
        handle = engine.start(naps, [60.0], workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        holder = subprocess.Popen([PYTHON, "-c", _HOLDER, db], env=child_env, text=True, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            clock.advance_to(clock.now() + 61)
            timers_fired(engine)  # woken: its lock is tried again and again
            time.sleep(6)  # the holder outlasts b3049f0's 5 s of retries (a setup wait, not an assertion)
        finally:
            holder.kill()
            holder.wait(timeout=30)
        with rk.Engine(db, poll_interval=0.02) as other:
            other.recover()  # finds x only if the engine has not finished it yet
            assert not _driven_after_a_turn(other, "x")  # refused: still this engine's
        assert handle.result(timeout=15) == "woke"  # at b3049f0: ResultTimeoutError, stuck while the engine lived


def test_a_refused_probe_of_a_kept_run_writes_nothing_on_postgres(pg_url: str) -> None:
    """Another store's try_lock of a run a live keeper marked reads the mark and lets go, without stamping its
    fencing token on the row (a recover() loop elsewhere would otherwise rewrite every kept row each rescan);
    once the keeper has gone, the run is taken and stamped."""
    import psycopg

    from replaykit.history import OK, START, Event
    from replaykit.store import PostgresStore

    def row() -> tuple[Any, ...]:
        with psycopg.connect(pg_url) as conn:
            return tuple(conn.execute("SELECT owner, xmin::text, keeper FROM replaykit_runs").fetchall()[0])

    with PostgresStore(pg_url, secret="s" * 32) as keeper, PostgresStore(pg_url, secret="s" * 32) as prober:
        keeper.create("x", "w", Event(0, 0, START, "w", 0.0, OK, "json", "{}"))
        assert keeper.try_lock("x", keeper="k1")
        keeper.keep("x", "k1")
        keeper.unlock("x")
        kept = row()
        assert kept[2] == "k1"
        assert not prober.try_lock("x") and not prober.try_lock("x", keeper="k2")
        assert row() == kept  # before: each refused probe stamped its own token (a new row version)
        keeper.let_go("k1")
        assert prober.try_lock("x")
        assert row()[0] != kept[0]  # stamped with the prober's token: its writes pass the fence
        prober.unlock("x")


@pytest.mark.parametrize("column, value", [("keeper", b"\x00\xff"), ("status", "bogus")])
def test_a_tampered_keeper_mark_is_refused_as_a_damaged_store(tmp_path: Any, column: str, value: Any) -> None:
    """A run row whose keeper mark is not text, or whose status is unknown, once it carries a mark: taking
    the run, asking who keeps it and rk.run say the store is damaged (CorruptStoreError), nothing changed."""
    db = str(tmp_path / "s.db")
    with rk.Engine(db, max_cached_runs=0) as engine:
        engine.start(naps, [3600.0], workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET keeper = 'k' WHERE workflow_id = 'x'")
        conn.execute(f"UPDATE runs SET {column} = ? WHERE workflow_id = 'x'", (value,))
    def row() -> list[Any]:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT r.*, (SELECT count(*) FROM events e WHERE e.run = r.id) FROM runs r").fetchall()

    before = row()
    with rk.SqliteStore(db) as store:
        for call in (lambda: store.try_lock("x"), lambda: store.lock_owner("x"), lambda: store.keeper_of("x")):
            with pytest.raises(rk.CorruptStoreError, match="'x' is damaged"):
                call()
    with pytest.raises(rk.CorruptStoreError, match="'x' is damaged"):
        rk.run(naps, [3600.0], db=db, workflow_id="x")
    assert row() == before


def test_a_keeper_taking_its_run_back_clears_its_mark(any_db: str) -> None:
    """The keeper's own try_lock takes the run back and clears its mark (on PostgreSQL in the stamp itself);
    given up again without a mark, the run is anyone's though the keeper lives."""
    from replaykit.history import OK, START, Event
    from replaykit.store import open_store

    with open_store(any_db, secret="s" * 32) as keeper, open_store(any_db, secret="s" * 32) as other:
        keeper.create("x", "w", Event(0, 0, START, "w", 0.0, OK, "json", "{}"))
        assert keeper.try_lock("x", keeper="k1")
        keeper.keep("x", "k1")
        keeper.unlock("x")
        assert other.keeper_of("x") == "k1" and not other.try_lock("x")
        assert keeper.try_lock("x", keeper="k1")
        keeper.unlock("x")
        assert other.keeper_of("x") is None and other.try_lock("x")
        other.unlock("x")


def test_starting_a_new_run_reads_no_keeper_mark(tmp_path: Any) -> None:
    """A run an engine's start creates under its lock cannot carry a mark: its start takes the lock without
    reading one (a SELECT per new run, about 2 % of an engine's CPU per one-step workflow). A start of an
    existing run still reads it, and is refused while a live keeper keeps the run."""
    from replaykit.store.sqlite import _MARK

    db = str(tmp_path / "s.db")
    with rk.Engine(db, max_cached_runs=0) as keeper:
        keeper.start(naps, [3600.0], workflow_id="kept")
        wait_until(lambda: "kept" in keeper._evicted, "kept is evicted")
        with rk.Engine(db) as engine:
            statements: list[str] = []
            read_one = engine.store._read_one  # type: ignore[attr-defined]

            def traced(sql: str, params: tuple[Any, ...] = ()) -> Any:
                statements.append(sql)
                return read_one(sql, params)

            engine.store._read_one = traced  # type: ignore[attr-defined]
            handles = [engine.start(naps, [0.0], workflow_id=f"new{i}") for i in range(3)]
            assert [handle.result(timeout=10) for handle in handles] == ["woke"] * 3
            assert _MARK not in statements  # before: one read of the mark per new run
            with pytest.raises(rk.WorkflowLockedError, match="keeps it out of memory"):
                engine.start(naps, [3600.0], workflow_id="kept").result(timeout=10)
            assert _MARK in statements
