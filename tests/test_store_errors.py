"""What SQLite reports (full disk, read-only file, a lock held too long) arrives as a replaykit error
naming the store; and a store leaves nothing open behind it once closed."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.store.sqlite_errors import translate

from conftest import PYTHON
from helpers import adder, read_journal

CHILD = str(Path(__file__).with_name("store_child.py"))


def _fill(db: str, ledger: str, limit: int, env: dict[str, str], mode: str = "full") -> dict[str, object]:
    out = subprocess.run([PYTHON, CHILD, mode, db, ledger, str(limit)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out
    if mode == "full":
        assert out.stderr == "", out
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("mode", ["full", "full-engine"])
def test_a_full_file_size_limit_stops_the_run_and_the_rerun_continues(db: str, tmp_path: Path, mode: str,
                                                                       child_env: dict[str, str]) -> None:
    """``full``: rk.run, a commit per step. ``full-engine``: an Engine whose group commit is rolled back
    (before the fix its driver thread died and result() waited forever)."""
    ledger = str(tmp_path / "ledger")
    first = _fill(db, ledger, 256 * 1024, child_env, mode)  # a real EFBIG from write(2), as on a full disk
    assert first.get("error") == "StoreFullError", first
    assert db in str(first["message"]) and "free" in str(first["message"]), first
    assert "OSError" in first["mro"]  # type: ignore[operator]
    with rk.SqliteStore(db) as store:
        recorded = sum(e.kind == "activity" for e in store.events("fill"))
    assert 0 < recorded < 400
    assert _fill(db, ledger, 0, child_env, mode) == {"result": 400}  # space freed: the rerun continues
    ran = Counter(read_journal(ledger))
    assert all(ran[f"ran {i}"] == 1 for i in range(recorded)), "a recorded activity ran again"
    assert all(ran[f"ran {i}"] >= 1 for i in range(400))
    with rk.SqliteStore(db) as store:
        assert [e.seq for e in store.events("fill")] == list(range(402))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files anyway")
def test_a_read_only_store_names_its_path(db: str) -> None:
    rk.run(adder, 1, workflow_id="a", db=db)
    os.chmod(db, stat.S_IRUSR)
    try:
        with pytest.raises(rk.StoreReadOnlyError, match="cannot be written") as err:
            rk.run(adder, 1, workflow_id="b", db=db)
        assert db in str(err.value)
    finally:
        os.chmod(db, stat.S_IRUSR | stat.S_IWUSR)


def test_a_store_on_a_read_only_connection_names_its_path(db: str) -> None:
    rk.run(adder, 1, workflow_id="a", db=db)
    with rk.SqliteStore(db) as store:
        store._conn().execute("PRAGMA query_only = 1")  # what SQLite reports for a file it may not write
        with pytest.raises(rk.StoreReadOnlyError, match="cannot be written") as err:
            rk.send_signal(store, "a", "go")
    assert db in str(err.value)


def test_a_lock_held_past_the_busy_timeout_is_a_store_error(db: str) -> None:
    rk.run(adder, 1, workflow_id="a", db=db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer that never lets go
    try:
        with rk.SqliteStore(db) as store:
            store._conn().execute("PRAGMA busy_timeout = 50")
            with pytest.raises(rk.StoreError, match="locked") as err:
                store.set_status("a", rk.Status.PAUSED, 1.0)
        assert db in str(err.value) and not isinstance(err.value, sqlite3.Error)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_closed_stores_leave_no_descriptor_open(tmp_path: Path) -> None:
    rk.SqliteStore(str(tmp_path / "warm.db")).close()  # first-use imports and caches
    before = _open_fds()
    for i in range(300):
        store = rk.SqliteStore(str(tmp_path / f"s{i}.db"))
        assert store.try_lock("w")  # uses the lock file too
        if i % 2:
            store.unlock("w")  # half of them closed with the lock still held
        store.close()
    assert _open_fds() == before
    with rk.SqliteStore(str(tmp_path / "s0.db")) as again:
        assert again.try_lock("w")  # closing a store gave back the locks it held


def test_closing_one_of_two_stores_of_a_file_keeps_the_others_locks(db: str, child_env: dict[str, str]) -> None:
    a, b = rk.SqliteStore(db), rk.SqliteStore(db)
    assert a.try_lock("w") and not b.try_lock("w")  # one lock file per path in a process
    b.close()  # must not close the descriptor the process's locks hang on
    probe = "import replaykit as rk, sys; print(rk.SqliteStore(sys.argv[1]).try_lock('w'))"
    other = subprocess.run([PYTHON, "-c", probe, db], capture_output=True, text=True, env=child_env, timeout=30)
    assert other.stdout.strip() == "False", other
    a.close()
    other = subprocess.run([PYTHON, "-c", probe, db], capture_output=True, text=True, env=child_env, timeout=30)
    assert other.stdout.strip() == "True", other


@pytest.mark.parametrize(("message", "error"), [
    ("database or disk is full", rk.StoreFullError), ("attempt to write a readonly database", rk.StoreReadOnlyError),
    ("database is locked", rk.StoreError), ("disk I/O error", rk.StoreError),
    ("database disk image is malformed", rk.CorruptStoreError),
])
def test_errors_are_read_from_the_message_where_python_gives_no_code(message: str, error: type) -> None:
    """Python 3.10's sqlite3 errors carry no ``sqlite_errorcode``; a hand-made one neither."""
    raw = sqlite3.OperationalError(message)
    assert getattr(raw, "sqlite_errorcode", None) is None
    translated = translate("/data/orders.db", raw)
    assert type(translated) is error and "/data/orders.db" in str(translated) and message in str(translated)


def test_a_batch_rolled_back_by_a_full_disk_commits_nothing_of_its_tail(db: str, child_env: dict[str, str]) -> None:
    out = subprocess.run([PYTHON, CHILD, "batch", db], capture_output=True, text=True, env=child_env, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out
    errors = json.loads(out.stdout)
    failed = int(errors[0].split(":")[0].split()[1])  # "write N: ..."
    assert [e.split(":")[0] for e in errors[1:]] == [f"write {failed + 1}", f"write {failed + 2}", "commit",
                                                     f"again {failed}"], errors
    assert "None of this batch's writes was recorded" in errors[-2]
    assert f"event {failed - 1} before it is missing" in errors[-1]  # not chained to a head that was rolled back
    with rk.SqliteStore(db) as store:
        assert [e.seq for e in store.events("b")] == [0]  # not the tail without its head: no hole in the history


def test_a_store_gives_back_only_the_locks_it_took(db: str) -> None:
    with rk.SqliteStore(db) as mine, rk.SqliteStore(db) as other:
        assert mine.try_lock("x")
        other.unlock("x")  # not its lock: nothing happens
        assert not other.try_lock("x")
        assert mine.lock_owner("x") is not None


def test_text_that_is_not_utf8_is_a_corrupt_store_and_nothing_is_recorded(db: str) -> None:
    def rows() -> list[tuple[object, ...]]:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT seq, CAST(payload AS BLOB) FROM events ORDER BY run, seq").fetchall()
        finally:
            conn.close()

    assert rk.run(adder, 5, workflow_id="a", db=db) == 10
    conn = sqlite3.connect(db)
    with conn:  # one damaged byte where a text value is stored, as a flaky disk leaves it: in the result
        conn.execute("UPDATE events SET payload = CAST(x'31ff' AS TEXT) WHERE seq = (SELECT max(seq) FROM events)")
    conn.close()
    before = rows()
    with pytest.raises(rk.CorruptStoreError, match="not valid UTF-8"):
        rk.run(adder, 5, workflow_id="a", db=db)
    assert rows() == before
    with rk.SqliteStore(db) as store, pytest.raises(rk.CorruptStoreError, match=db):
        list(store.events("a"))


def test_a_lock_taken_while_its_store_closes_is_refused_not_kept(tmp_path: Path) -> None:
    # close() used to give its locks back before marking itself closed: a try_lock from another
    # thread in between succeeded, and the closed store kept that lock (and its descriptors).
    import threading

    from replaykit.store.locks import stores_open

    db = str(tmp_path / "s.db")
    kept = 0
    for _ in range(300):
        store = rk.SqliteStore(db)
        store.try_lock("early")
        go = threading.Event()

        def grab(store: rk.SqliteStore = store, go: threading.Event = go) -> None:
            go.wait()
            try:
                store.try_lock("late")
            except rk.StoreError:
                pass  # closed first: refused

        thread = threading.Thread(target=grab)
        thread.start()
        go.set()
        store.close()
        thread.join()
        with rk.SqliteStore(db) as other:
            if other.lock_owner("late") is not None:
                kept += 1
                store._locks._closed = False  # hand it back, to go on counting
                store._locks.release("late")
        assert stores_open(db) == 0
    assert kept == 0


def test_a_batch_rolled_back_behind_its_back_refuses_the_rest_of_it(db: str) -> None:
    # SQLite rolls a transaction back by itself on some errors of any statement (an I/O error, no memory),
    # a read included, and then the next write would begin a fresh transaction: the batch's later writes
    # committed without its earlier ones, the next event chained to a rolled-back one (a gap in the history).
    from replaykit.history import OK, START, Event

    with rk.SqliteStore(db) as store:
        store.create("b", "wf", Event(0, 0, START, "wf", 1.0, OK, "json", "[]"))
        assert store.try_lock("b")
        store.batch()
        store.record("b", Event(1, 1, "activity", "x", 1.0, OK, "json", "1"))
        store.commit()
        store.record("b", Event(2, 2, "activity", "x", 1.0, OK, "json", "2"))
        store._conn().execute("ROLLBACK")  # what SQLite does on its own after such an error
        with pytest.raises(rk.StoreError, match="rolled back this batch"):
            store.record("b", Event(3, 3, "activity", "x", 1.0, OK, "json", "3"))
        with pytest.raises(rk.StoreError, match="None of this batch's writes was recorded"):
            store.commit()
        assert [e.seq for e in store.events("b")] == [0, 1]  # whole, no gap


def test_a_run_created_in_a_lost_batch_is_forgotten_not_written_into_anothers_row(db: str) -> None:
    # The store caches the row id of a run it holds; a batch that created the run and is then lost
    # rolls the row back, and SQLite hands its id to the next run created (here by another process's
    # store). Writing the held run's next event must not land in that other run's history.
    from replaykit.history import OK, START, Event

    with rk.SqliteStore(db) as store, rk.SqliteStore(db) as other:
        assert store.try_lock("w")
        store.batch()
        store.create("w", "wf", Event(0, 0, START, "wf", 1.0, OK, "json", "[]"))
        store.record("w", Event(1, 1, "activity", "x", 1.0, OK, "json", "1"))
        store._conn().execute("ROLLBACK")  # what SQLite does on its own after an I/O error
        with pytest.raises(rk.StoreError, match="rolled back this batch"):
            store.record("w", Event(2, 2, "activity", "x", 1.0, OK, "json", "2"))
        with pytest.raises(rk.StoreError, match="None of this batch's writes was recorded"):
            store.commit()
        other.create("x", "wf", Event(0, 0, START, "wf", 1.0, OK, "json", "[]"))
        with pytest.raises(rk.WorkflowNotFoundError, match="'w'"):
            store.record("w", Event(1, 1, "activity", "x", 1.0, OK, "json", "1"))
        assert [e.seq for e in other.events("x")] == [0]
