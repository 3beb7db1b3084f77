"""A store this process may not write is read as it stands: finished runs, lists, histories,
queries and `replaykit check` work; anything that must record says the store is read-only, naming
its path; the file is never changed.

The file and directory cases run in real processes that file permissions bind: when the tests run
as root (who may write any file), processes of root without its capabilities."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import replaykit as rk

from conftest import ROOT

APP = textwrap.dedent('''
    import json, sys
    import replaykit as rk

    @rk.activity
    def add(a: int, b: int) -> int:
        return a + b

    @rk.workflow(name="ro.w")
    def w(ctx, x):
        y = yield add(x, 1)
        ctx.set_status({"y": y})

        @ctx.query("y")
        def current():
            return y

        if x > 5:
            yield rk.wait_signal("go")
        return [y, "done"]

    def outcome(fn):
        try:
            return {"value": fn()}
        except rk.ReplayKitError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    if __name__ == "__main__":
        db, what = sys.argv[1], sys.argv[2]
        if what == "make":
            print(rk.run(w, 1, workflow_id="done", db=db))
            with rk.Engine(db) as engine:
                engine.start(w, 9, workflow_id="open")
                while len(list(engine.store.events("open"))) < 2:
                    pass
            sys.exit(0)
        results = {
            "rerun": outcome(lambda: rk.run(w, 1, workflow_id="done", db=db)),
            "query": outcome(lambda: rk.query(db, "open", "y")),
            "list": outcome(lambda: sorted(i.workflow_id for i in rk.SqliteStore(db, create=False).list())),
            "drive": outcome(lambda: rk.run(w, 9, workflow_id="open", db=db)),
            "start": outcome(lambda: rk.run(w, 2, workflow_id="new", db=db)),
            "signal": outcome(lambda: rk.send_signal(db, "open", "go")),
        }
        print(json.dumps(results))
''')


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "d").mkdir()
    (tmp_path / "app.py").write_text(APP)
    yield tmp_path
    (tmp_path / "d").chmod(0o755)


def _without_privileges() -> list[str]:
    """The command prefix of a process that file permissions bind: as root, one without capabilities
    (root may otherwise write any file); as anyone else, nothing."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")  # util-linux: on every Debian system
    if setpriv is None:
        pytest.skip("the tests run as root, and setpriv (util-linux) is missing to drop root's capabilities")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all"]


def _child(folder: Path, what: str, *, unprivileged: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = _without_privileges() if unprivileged else []
    return subprocess.run([*prefix, sys.executable, str(folder / "app.py"), str(folder / "d" / "s.db"), what],
                          capture_output=True, text=True, timeout=120, cwd=folder)


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_without_privileges(), sys.executable, "-m", "replaykit", *args], capture_output=True,
                          text=True, timeout=120, cwd=folder, env={**os.environ, "PYTHONPATH": str(folder)})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_read_only_store_reads_and_refuses_writes_by_name(shared_dir: Path, what: str) -> None:
    made = _child(shared_dir, "make", unprivileged=False)
    assert made.returncode == 0, made.stderr
    db = shared_dir / "d" / "s.db"
    assert not (shared_dir / "d" / "s.db-wal").exists()  # closed cleanly: the file holds everything
    before = _digest(db)
    (db if what == "file" else shared_dir / "d").chmod(0o444 if what == "file" else 0o555)

    got = _child(shared_dir, "read")
    assert got.returncode == 0, got.stderr
    results = json.loads(got.stdout)
    assert results["rerun"] == {"value": [2, "done"]}  # the finished run's result, from its history
    assert results["query"] == {"value": 10}  # replayed, read-only
    assert results["list"] == {"value": ["done", "open"]}
    for write in ("drive", "start", "signal"):
        assert results[write]["error"] == "StoreReadOnlyError", results[write]
        assert str(db) in results[write]["message"] and "read-only" in results[write]["message"]
    for args in (["list", str(db)], ["history", str(db), "done"], ["check", "-m", "app", str(db)]):
        out = _cli(shared_dir, *args)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stdout, out.stderr)
    assert "done" in _cli(shared_dir, "list", str(db)).stdout
    assert _digest(db) == before


def test_a_read_only_store_of_an_older_schema_says_it_needs_a_migration(shared_dir: Path) -> None:
    assert _child(shared_dir, "make", unprivileged=False).returncode == 0
    db = shared_dir / "d" / "s.db"
    conn = sqlite3.connect(db)
    conn.executescript("ALTER TABLE events DROP COLUMN digest; ALTER TABLE runs DROP COLUMN head; "
                       "ALTER TABLE signals DROP COLUMN digest; PRAGMA user_version = 2;")
    conn.close()
    db.chmod(0o444)
    out = _cli(shared_dir, "list", str(db))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "read-only" in out.stderr and "schema 2" in out.stderr and str(db) in out.stderr


def test_a_write_ahead_log_left_in_a_read_only_directory_is_named(shared_dir: Path) -> None:
    """A writer killed with its last writes still in the WAL: SQLite could not apply them without
    writing, and reading the file without them would show an older state. Said, not guessed."""
    assert _child(shared_dir, "make", unprivileged=False).returncode == 0
    db = shared_dir / "d" / "s.db"
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, sqlite3
        conn = sqlite3.connect({str(db)!r}, isolation_level=None)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("UPDATE runs SET updated_at = updated_at + 1")
        os._exit(0)  # no close: the WAL keeps the write
    """)], check=True)
    assert (shared_dir / "d" / "s.db-wal").stat().st_size > 0
    (shared_dir / "d" / "s.db-shm").unlink()
    (shared_dir / "d").chmod(0o555)
    out = _cli(shared_dir, "list", str(db))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "write-ahead log" in out.stderr and str(db) in out.stderr


def test_a_store_opened_read_only_on_purpose_never_writes(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    from helpers import adder

    assert rk.run(adder, 1, workflow_id="a", db=db) == rk.run(adder, 1, workflow_id="a", db=db)
    before = _digest(Path(db))
    with rk.SqliteStore(db, read_only=True) as store:
        assert store.read_only and [i.workflow_id for i in store.list()] == ["a"]
        with rk.Engine(store) as engine:
            assert engine.start(adder, 1, workflow_id="a").result(timeout=10) == rk.run(adder, 1, workflow_id="a",
                                                                                        db=db)
            with pytest.raises(rk.StoreReadOnlyError, match="starting workflow 'b'"):
                engine.start(adder, 1, workflow_id="b")
        with pytest.raises(rk.StoreReadOnlyError, match="read-only"):
            store.set_custom_status("a", "changed")
    assert _digest(Path(db)) == before
    with pytest.raises(rk.StoreNotFoundError):
        rk.SqliteStore(str(tmp_path / "absent.db"), read_only=True)
    assert not (tmp_path / "absent.db").exists()
    assert stat.S_ISREG(os.stat(db).st_mode)


LOCKS_CHILD = """
import sys, replaykit as rk
from replaykit.store import SqliteStore

@rk.workflow(name="needs-a-lock")
def needs_a_lock(ctx):
    return "ok"
    yield

store = SqliteStore(sys.argv[1])
assert not store.read_only
for attempt in (lambda: store.try_lock("run-1"), lambda: store.lock_owner("run-1")):
    try:
        print("answered", attempt())
    except rk.StoreError as exc:
        print("refused", exc)
store.close()
with rk.Engine(sys.argv[1]) as engine:
    try:
        engine.start(needs_a_lock, workflow_id="run-1").result(timeout=30)
    except rk.StoreError as exc:
        print("result refused", exc)
"""


def test_lock_files_this_user_cannot_write_are_an_error_naming_them_not_a_held_lock(tmp_path: Path) -> None:
    # Before: the failed open read as "another process holds it" and the run's result() never came.
    folder = tmp_path / "d"
    folder.mkdir()
    db = folder / "s.db"
    with rk.SqliteStore(str(db)) as store:
        assert store.try_lock("probe")  # makes the lock files
    folder.chmod(0o777)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666)
    for shard in (folder / "s.db-locks.d").iterdir():
        shard.chmod(0o444)  # made by another user, say: readable, not writable
    done = subprocess.run([*_without_privileges(), sys.executable, "-c", LOCKS_CHILD, str(db)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all("refused" in lines[i] and "s.db-locks.d" in lines[i] for i in (0, 2)), done.stdout
    assert lines[1] == "answered None"  # who holds a lock is read: reading them is enough
    assert "Permission denied" in lines[0]
