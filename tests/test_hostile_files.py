"""Hostile files around a store: its key file, its lock files, and export files to import.

Each test states what docs/security.md and docs/cli.md promise: a damaged, foreign or planted input is
refused with a specific replaykit error; it is never silently given a new key, never crashes with a
traceback, never hangs, and never creates files elsewhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main

from conftest import PYTHON
from helpers import adder


def _ids(db: str) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT workflow_id, id FROM runs").fetchall())


# -- the key file ---------------------------------------------------------------------------------------


def test_a_store_copied_without_its_key_is_refused_not_given_a_new_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/security.md: "without the key, a store's histories cannot be checked, so they are not read
    (replaykit says the key file is missing...)". A store that already holds histories must not get a
    fresh key made beside it by the next write: its old runs would then read as "recorded with another
    secret", and the runs recorded meanwhile are lost again once the real key is put back."""
    monkeypatch.delenv("REPLAYKIT_SECRET")
    db = str(tmp_path / "orders.db")
    assert rk.run(adder, 3, workflow_id="old", db=db) == 3
    os.unlink(db + ".key")  # the store restored (or copied) without its key file
    with pytest.raises(rk.ReplayKitError, match="key file"):
        rk.run(adder, 4, workflow_id="new", db=db)
    assert not os.path.exists(db + ".key"), "a new key was made beside a store that holds histories"
    assert set(_ids(db)) == {"old"}


def test_a_truncated_key_file_is_refused_not_used_as_a_new_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file cut short (a partial copy, a full disk) still holds 16 bytes or more, so it is taken as the key:
    every run the store holds is then "recorded with another secret", and new runs are recorded under the
    damaged key, beside histories it cannot check. replaykit writes the key file itself (64 hex digits): one of
    another shape, or one that checks none of the store's histories, should be refused as damaged."""
    monkeypatch.delenv("REPLAYKIT_SECRET")
    db = str(tmp_path / "orders.db")
    assert rk.run(adder, 3, workflow_id="old", db=db) == 3
    key = Path(db + ".key")
    key.write_text(key.read_text()[:20])
    with pytest.raises(rk.PayloadAuthenticationError, match="key file"):
        rk.run(adder, 4, workflow_id="new", db=db)
    assert set(_ids(db)) == {"old"}


def _child(db: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """In a process of its own (a read may hang): read the old run and start a new one; print what happened."""
    code = f"""
import replaykit as rk
from helpers import adder
for wid, n in (("old", 3), ("new", 4)):
    try:
        print(wid, "->", rk.run(adder, n, workflow_id=wid, db={db!r}))
    except rk.ReplayKitError as exc:
        print(wid, "refused", type(exc).__name__)
"""
    return subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "fifo"])
def test_a_key_file_that_is_not_a_file_is_refused_clearly(
        tmp_path: Path, kind: str, child_env: dict[str, str]) -> None:
    """A key file replaced by a directory, a dangling symlink or a FIFO: a replaykit error (one line from the
    CLI), not IsADirectoryError / FileNotFoundError tracebacks, and not a process blocked forever in open()."""
    child_env.pop("REPLAYKIT_SECRET")
    db = str(tmp_path / "orders.db")
    made = subprocess.run([PYTHON, "-c", f"import replaykit as rk; from helpers import adder; "
                           f"print(rk.run(adder, 3, workflow_id='old', db={db!r}))"], env=child_env,
                          capture_output=True, text=True, timeout=60)
    assert made.stdout.strip() == "3", made.stderr
    key = db + ".key"
    os.unlink(key)
    if kind == "directory":
        os.mkdir(key, 0o700)
    elif kind == "dangling symlink":
        os.symlink(str(tmp_path / "nowhere" / "key"), key)
    else:
        os.mkfifo(key, 0o600)
    try:
        done = _child(db, child_env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a key file that is a {kind}: the process hangs reading it")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.split("\n")[:2] == ["old refused PayloadAuthenticationError",
                                           "new refused PayloadAuthenticationError"], done.stdout + done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to hand the key file to another user")
@pytest.mark.parametrize("kind", ["owned by another user", "symlink to another file"])
def test_a_key_file_someone_else_controls_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The 0600 check only asks whether *other* users may read the file; it does not ask who the owner is, nor
    whether the name is a symlink to a file elsewhere. Another user's file (whose owner can read it, and so forge)
    is accepted as the key: the old runs are refused as "recorded with another secret" and new values are signed
    with the planted key. A key file not owned by this process's user, or a symlink, should be refused."""
    monkeypatch.delenv("REPLAYKIT_SECRET")
    db = str(tmp_path / "orders.db")
    assert rk.run(adder, 3, workflow_id="old", db=db) == 3
    key = db + ".key"
    if kind == "owned by another user":
        os.unlink(key)
        Path(key).write_text("k" * 64 + "\n")
        os.chmod(key, 0o600)
        os.chown(key, 65534, 65534)  # nobody: who knows this key
    else:
        planted = tmp_path / "planted.key"
        planted.write_text("k" * 64 + "\n")
        planted.chmod(0o600)
        os.unlink(key)
        os.symlink(planted, key)
    with pytest.raises(rk.PayloadAuthenticationError, match="key file"):
        rk.run(adder, 4, workflow_id="new", db=db)  # would be recorded under the planted key
    assert set(_ids(db)) == {"old"}


# -- the lock files ---------------------------------------------------------------------------------------


def test_lock_files_planted_as_symlinks_create_no_file_elsewhere(tmp_path: Path) -> None:
    """A local user who can create ``<db>-locks.d`` before the store's owner does (a shared directory) plants its
    sixteen shards as symlinks: replaykit opens them with O_CREAT, following the links, and so creates (as its own
    user, root included) a file wherever the links point. A lock directory or lock file that is a symlink, or one
    others may write, should be refused with a StoreError naming it."""
    db = str(tmp_path / "orders.db")
    locks = Path(db + "-locks.d")
    locks.mkdir()
    locks.chmod(0o777)
    target = tmp_path / "elsewhere"
    target.mkdir()
    for shard in range(16):
        os.symlink(target / f"made-by-replaykit-{shard:x}", locks / f"{shard:x}")
    try:
        rk.run(adder, 3, workflow_id="old", db=db)
    except rk.StoreError:
        pass  # refused: what is asked
    assert sorted(os.listdir(target)) == [], "replaykit followed planted lock-file symlinks and created files"


# -- export files ---------------------------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path: Path) -> tuple[str, dict]:
    """A store with one run (``dst``), and a good export of another store's run to twist."""
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    rk.run(adder, 3, workflow_id="q", db=src)
    rk.run(adder, 1, workflow_id="seed", db=dst)
    out = tmp_path / "q.json"
    assert main(["export", src, "q", "-o", str(out)]) == 0
    return dst, json.loads(out.read_text())


def _twisted(doc: dict, change: str) -> str:
    doc = json.loads(json.dumps(doc))
    event = doc["events"][1]
    if change == "seq is a float":
        for e in doc["events"]:
            e["seq"] = float(e["seq"])
    elif change == "at is text":
        event["at"] = "yesterday"
    elif change == "at is NaN":
        event["at"] = float("nan")
    elif change == "step is huge":
        event["step"] = 2 ** 70
    elif change == "name is a list":
        event["name"] = ["add"]
    elif change == "workflow id is a number":
        doc["workflow_id"] = 12345
    elif change == "workflow id is null":
        doc["workflow_id"] = None
    elif change == "value nested 100000 deep":
        return json.dumps(doc).replace('"value": 0', '"value": ' + "[" * 100000 + "]" * 100000, 1)
    return json.dumps(doc)


@pytest.mark.parametrize("change", ["seq is a float", "at is text", "at is NaN", "step is huge", "name is a list",
                                    "workflow id is a number", "workflow id is null", "value nested 100000 deep"])
def test_a_hostile_export_file_is_refused_on_one_line(
        tmp_path: Path, exported: tuple[str, dict], change: str, capfd: pytest.CaptureFixture[str]) -> None:
    """docs/cli.md: exit 1 is "a replaykit error, said on one line on stderr as `replaykit: ...`". An export file
    whose fields have the wrong types escapes as a traceback (struct.error, TypeError, AttributeError,
    sqlite3.IntegrityError, RecursionError), or, for a NaN time, is misreported as "two processes are driving
    the same workflow". It should be refused as a damaged export, naming the field."""
    dst, doc = exported
    path = tmp_path / "hostile.json"
    path.write_text(_twisted(doc, change))
    try:
        code = main(["import", dst, str(path)])
    except BaseException as exc:  # noqa: BLE001 - what the review is about
        pytest.fail(f"replaykit import of an export whose {change}: {type(exc).__name__}: {exc}"[:400])
    err = capfd.readouterr().err
    assert code == 1 and err.startswith("replaykit: "), err
    assert "two processes" not in err, err
    assert set(_ids(dst)) == {"seed"}


def test_an_imported_value_nested_deep_is_refused_not_a_crash_of_history(
        tmp_path: Path, exported: tuple[str, dict], capfd: pytest.CaptureFixture[str]) -> None:
    """A value a workflow records is JSON only up to 100 levels deep (payloads._json_exact), but ``import``
    records an export's "value" as JSON whatever its depth. 900 levels import fine, then `replaykit history`
    of the run dies with RecursionError in views.jsonable (a traceback, exit not 1)."""
    dst, doc = exported
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(doc).replace('"value": 0', '"value": ' + "[" * 900 + "]" * 900, 1))
    if main(["import", dst, str(path)]) != 0:
        return  # refused at import: fine
    capfd.readouterr()
    try:
        code = main(["history", dst, "q"])
    except RecursionError as exc:
        pytest.fail(f"replaykit history of an imported run: {type(exc).__name__}: {exc}")
    assert code in (0, 1)


def test_an_event_the_store_refuses_is_not_blamed_on_another_driver(tmp_path: Path) -> None:
    """Only a row already there means two drivers: a field SQLite refuses (a NaN time is stored as NULL) is said
    as what it is, and nothing is recorded."""
    from replaykit.history import START, Event

    with rk.SqliteStore(str(tmp_path / "s.db")) as store:
        start = Event(0, 0, START, "w", float("nan"), "", "json", "[]")
        with pytest.raises(rk.StoreError, match="refuses one of its fields") as refused:
            store.create("nan", "w", start, rk.Status.RUNNING)
        assert not isinstance(refused.value, rk.WorkflowLockedError)
        assert store.info("nan") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to hand files to other users")
def test_a_lock_directory_is_used_if_it_is_the_store_owners_and_refused_if_a_third_users(tmp_path: Path) -> None:
    """An operator under sudo uses the lock directory the service (the store file's owner) made; one that
    neither this user nor the store's owner made (planted by a third user in a shared directory) is refused."""
    from replaykit.store.locks import FileLocks

    db = tmp_path / "orders.db"
    db.touch()
    folder = tmp_path / "orders.db-locks.d"
    folder.mkdir()
    os.chown(db, 1000, 1000)  # the service's store
    os.chown(folder, 1000, 1000)
    locks = FileLocks(str(db))
    try:
        assert locks.try_acquire("run-1")
    finally:
        locks.close()
    os.chown(folder, 65534, 65534)  # somebody else's
    locks = FileLocks(str(db))
    try:
        with pytest.raises(rk.StoreError, match="belongs to user id 65534"):
            locks.try_acquire("run-1")
    finally:
        locks.close()


def test_a_refused_lock_directory_leaves_no_run_behind(tmp_path: Path) -> None:
    """A lock directory its group may write (a volume mounted with a group owner makes it so) is refused,
    "Nothing was changed": and nothing is. Before, rk.run and Engine.start recorded the run's start before
    taking its lock, and left it `running` with nobody driving it."""
    db = str(tmp_path / "shared.db")
    assert rk.run(adder, 3, workflow_id="first", db=db) == 3
    os.chmod(db + "-locks.d", 0o775)
    with pytest.raises(rk.StoreError, match="Nothing was changed"):
        rk.run(adder, 2, workflow_id="second", db=db)
    with rk.Client(db) as client, pytest.raises(rk.StoreError, match="lock directory"):
        client.start(adder, 3, workflow_id="third")  # queued for workers, who could not drive it either
    with rk.Client(db) as client:
        assert [info.workflow_id for info in client.list()] == ["first"]
