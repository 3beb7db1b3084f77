"""A brand-new SQLite store whose first process is SIGKILLed while it makes the store.

Each case kills the creating process at one moment of a store's creation (schema transaction not yet
committed; schema committed but no run yet; key file linked but no run yet; a temp key file written
and the process killed before linking it). Afterwards the store must open for everyone (CLI verbs
and a rerun), hold exactly one key file, and the rerun must complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON

CHILD = r'''
import os, signal, sys
import replaykit as rk
from replaykit.store import sqlite_schema as schema
import replaykit.keys as keys
import replaykit.store.sqlite as sqlite_store

def killed_after(owner, name):
    made = getattr(owner, name)
    def dying(*args):
        made(*args)
        os.kill(os.getpid(), signal.SIGKILL)
    setattr(owner, name, dying)

where = sys.argv[2]
if where == "schema-uncommitted":
    killed_after(schema, "_create_schema")
elif where == "schema-committed":  # asked before the first run is recorded: killed there
    sqlite_store.SqliteStore._holds_no_history = lambda self: os.kill(os.getpid(), signal.SIGKILL)
elif where == "key-linked":
    killed_after(keys, "_read_or_make")
elif where == "temp-key-only":
    def dying(path):
        folder, name = os.path.split(path)
        fd = os.open(os.path.join(folder, f".{name}.{os.getpid()}.0bad"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"12")
        os.kill(os.getpid(), signal.SIGKILL)
    keys._read_or_make = dying

@rk.workflow
def first(ctx):
    yield rk.sleep(0)
    return 1

print(rk.run(first, workflow_id="a", db=sys.argv[1]))
'''


@pytest.mark.parametrize("where", ["schema-uncommitted", "schema-committed", "key-linked", "temp-key-only"])
def test_creator_killed_mid_creation_leaves_a_usable_store(tmp_path: Path, child_env: dict[str, str],
                                                            where: str) -> None:
    env = dict(child_env)
    env.pop("REPLAYKIT_SECRET", None)  # the key file is what is under test
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = str(tmp_path / "s.db")
    killed = subprocess.run([PYTHON, str(script), db, where], env=env, capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    for verb in (["list", db], ["workers", db]):
        shown = subprocess.run([PYTHON, "-m", "replaykit", *verb], env=env, capture_output=True, text=True,
                               timeout=60)
        assert "Traceback" not in shown.stderr, shown.stderr
        assert shown.returncode in (0, 1), shown.stderr
        if shown.returncode == 1:
            assert shown.stderr.startswith("replaykit: no replaykit store"), shown.stderr
    rerun = subprocess.run([PYTHON, str(script), db, "none"], env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "1"
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".key")) == ["s.db.key"]
    again = subprocess.run([PYTHON, "-m", "replaykit", "result", db, "a"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "1", again.stderr
