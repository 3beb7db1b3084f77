"""Reading a store leaves it and its folder as they were, for the service that owns it: the log folded
back into the file at the last close, no file left behind, describe answering without the lock files
it may not read, and no lock of this process dropped through a planted link."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main

from conftest import PYTHON
from helpers import adder, as_user, waits_for_approval

SERVICE = textwrap.dedent("""
    import sys
    import replaykit as rk
    from helpers import waits_for_approval
    with rk.Engine(sys.argv[1]) as engine:
        handle = engine.start(waits_for_approval, workflow_id="order")
        print("ready", flush=True)
        sys.stdin.readline()
        rk.send_signal(sys.argv[1], "order", "approved", 5)
        handle.result(timeout=30)
    print("stopped", flush=True)
""")


def test_a_reader_open_when_the_service_stops_cleanly_leaves_the_store_file_whole(
        tmp_path: Path, child_env: dict[str, str]) -> None:
    """An operator waits on a run (`replaykit result --wait`) while the service finishes it and stops
    cleanly. Before, the reader was the last connection to close and folded the write-ahead log back
    into the file (and removed it). A read-only connection cannot (it cannot take the file's exclusive
    lock), and the service's own close could not either while the reader was open: every write since
    the service's last checkpoint now stays in `s.db-wal` for good. Here the store file alone holds
    no run at all; a backup or copy of the .db file (cp, rsync of *.db, an image of the volume that
    skips the log) loses the runs."""
    db = str(tmp_path / "s.db")
    service = subprocess.Popen([PYTHON, "-c", SERVICE, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=child_env)
    assert service.stdin is not None and service.stdout is not None
    try:
        assert service.stdout.readline() == "ready\n"
        waiting = subprocess.Popen([PYTHON, "-m", "replaykit", "result", db, "order", "--wait", "30"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env)
        time.sleep(3)  # the reader is polling (its connection open)
        service.stdin.write("\n")
        service.stdin.flush()
        assert service.stdout.readline() == "stopped\n"
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert json.loads(out) == {"answer": 5}
    finally:
        service.kill()
        service.wait()
    assert not os.path.exists(db + "-wal"), f"the log was left holding {os.path.getsize(db + '-wal')} bytes"
    copy = str(tmp_path / "copy.db")
    shutil.copyfile(db, copy)  # the file alone, as a backup of *.db takes it
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT workflow_id, status FROM runs").fetchall() == [("order", "completed")]


def _folder(path: str) -> dict[str, tuple[int, int, int, str]]:
    """Every file of the folder: owner, group, mode and content digest (SQLite's -shm included)."""
    import hashlib
    found = {}
    for dirpath, _, names in os.walk(path):
        for name in [".", *names]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = "" if name == "." else hashlib.sha256(Path(p).read_bytes()).hexdigest()
            found[os.path.relpath(p, path)] = (st.st_uid, st.st_gid, st.st_mode, digest)
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play the operator and the service's user")
def test_root_reading_a_service_users_store_changes_nothing_in_its_folder(
        request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """A service user's store, closed cleanly; an operator runs the reading verbs as root. Before,
    the folder was left as it was. Now every reading verb leaves `s.db-wal` and `s.db-shm` behind (a
    read-only connection makes them and cannot remove them): "reading never writes" does not hold
    for the store's folder."""
    service = pwd.getpwnam("postgres")
    folder = tempfile.mkdtemp(prefix="rk-review-op-")
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    os.chmod(folder, 0o755)
    os.chown(folder, service.pw_uid, service.pw_gid)
    db = os.path.join(folder, "s.db")
    warm = tempfile.mkdtemp(prefix="rk-review-warm-")  # the child cannot import from root's home: load it all here
    request.addfinalizer(lambda: shutil.rmtree(warm, ignore_errors=True))
    rk.run(adder, 2, workflow_id="w", db=os.path.join(warm, "w.db"))
    assert main(["list", os.path.join(warm, "w.db")]) == 0
    assert as_user(service.pw_uid, service.pw_gid,
                    lambda: rk.run(adder, 3, workflow_id="done", db=db)) == "3"
    before = _folder(folder)
    for verb in (["list", db], ["describe", db, "done"], ["history", db, "done"], ["result", db, "done"]):
        assert main(verb) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert _folder(folder) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read as another user")
def test_describe_by_a_user_who_may_read_the_store_but_not_its_lock_files(
        request: pytest.FixtureRequest) -> None:
    """A store readable by others (0644) whose lock directory is its owner's only (0700: made under
    umask 077, or locked down). Before, a user who could only read the store described its runs
    (`driven by` left out: a read-only store answered None). Now describe fails altogether with a
    StoreError about lock files; the CHANGELOG says lock files no longer stop describe."""
    other = pwd.getpwnam("postgres")
    folder = tempfile.mkdtemp(prefix="rk-review-ro-")
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    os.chmod(folder, 0o755)
    db = os.path.join(folder, "s.db")
    with rk.Engine(db) as engine:
        engine.start(waits_for_approval, workflow_id="waiting")
    os.chmod(folder + "/s.db", 0o644)
    os.chmod(db + "-locks.d", 0o700)
    assert main(["describe", db, "waiting"]) == 0  # loads what the child needs

    def describe() -> str:
        import contextlib
        import io
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(["describe", db, "waiting"])
        return f"{code} {out.getvalue()}"

    answer = as_user(other.pw_uid, other.pw_gid, describe)
    assert answer.startswith("0 ") and "status:" in answer, answer


HOLDER = textwrap.dedent("""
    import json, sys
    from replaykit.cli import main
    sys.exit(main(["describe", sys.argv[1], "x", "--json"]))
""")


def test_describing_a_store_whose_lock_directory_is_a_link_keeps_this_processs_locks(
        tmp_path: Path, child_env: dict[str, str]) -> None:
    """A process drives run "x" of store A (an engine, or a web app that also reads other stores) and
    describes a run of store B, whose `B.db-locks.d` is a symbolic link to `A.db-locks.d` (planted by
    anyone who may write B's folder). Before, the link was refused (StoreError: not a directory).
    Now `_ask_unopened` opens A's lock file through the link and closes it: POSIX drops every lock
    this process holds on that file, and any other process may take "x" and drive it too."""
    a, b = str(tmp_path / "a" / "A.db"), str(tmp_path / "b" / "B.db")
    os.makedirs(os.path.dirname(a))
    os.makedirs(os.path.dirname(b))
    from replaykit.store.locks import SHARDS, _offset
    y = next(f"y{n}" for n in range(1000) if _offset(f"y{n}") % SHARDS == _offset("x") % SHARDS)  # x's lock file
    rk.run(adder, 2, workflow_id=y, db=b)
    shutil.rmtree(b + "-locks.d", ignore_errors=True)
    with rk.Engine(a) as engine:
        engine.start(waits_for_approval, workflow_id="x")
        os.symlink(a + "-locks.d", b + "-locks.d")

        def driven_by() -> str | None:
            done = subprocess.run([PYTHON, "-c", HOLDER, a], capture_output=True, text=True, env=child_env,
                                  timeout=60)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)["driven_by"]

        assert (driven_by() or "").startswith(f"pid {os.getpid()} ")
        main(["describe", b, y])  # refused before; whatever it answers, it must not touch A's locks
        assert (driven_by() or "").startswith(f"pid {os.getpid()} "), "this process's lock on 'x' was dropped"
