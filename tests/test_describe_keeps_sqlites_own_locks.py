"""`describe` of a store B asks who holds a run's lock by opening B's lock file, and closing it at
once (locks._ask_unopened). Closing any descriptor of a file drops every POSIX lock this process
holds on it. 7b95678 refuses a lock file that is one this process has open as a lock file
(`_open_inodes`), but not SQLite's own files of a store this process has open: a lock file of B that
is a hard link to A.db is opened and closed, and the SHARED lock SQLite holds on A.db for as long as
its connection is open (WAL mode) is gone. Another process that then opens and closes A.db takes it
for the last connection, folds the log back and deletes A.db-wal and A.db-shm under this process's
engine: its next write fails ("SQLite reported an I/O error ... the store's files were removed or
replaced while in use")."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import replaykit as rk
from replaykit.cli import main
from replaykit.store.locks import SHARDS, _offset

from conftest import PYTHON
from helpers import adder, waits_for_approval

TOUCH = textwrap.dedent("""
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1])
    conn.execute("SELECT count(*) FROM runs").fetchall()
    conn.close()
""")

COUNT = textwrap.dedent("""
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1])
    print(sorted(r[0] for r in conn.execute("SELECT workflow_id FROM runs")))
""")


def test_describing_a_store_whose_lock_file_is_this_processs_store_file_keeps_sqlites_locks(
        tmp_path: Path, child_env: dict[str, str]) -> None:
    a, b = str(tmp_path / "a" / "A.db"), str(tmp_path / "b" / "B.db")
    os.makedirs(os.path.dirname(a))
    os.makedirs(os.path.dirname(b))
    rk.run(adder, 2, workflow_id="y", db=b)
    shutil.rmtree(b + "-locks.d")
    os.mkdir(b + "-locks.d", 0o755)
    with rk.Engine(a) as engine:
        engine.start(waits_for_approval, workflow_id="x")
        os.link(a, os.path.join(b + "-locks.d", f"{_offset('y') % SHARDS:x}"))  # planted
        main(["describe", b, "y"])  # whatever it answers, it must leave SQLite's locks on A.db alone
        subprocess.run([PYTHON, "-c", TOUCH, a], check=True, env=child_env, timeout=60)
        wal_left = os.path.exists(a + "-wal")
        assert engine.start(adder, 5, workflow_id="after").result(timeout=20) == 10
        seen = subprocess.run([PYTHON, "-c", COUNT, a], check=True, env=child_env, timeout=60,
                              capture_output=True, text=True).stdout
        assert "after" in seen, f"a run this engine recorded is not in the store: {seen} (log left: {wal_left})"
