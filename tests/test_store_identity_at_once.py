"""Processes that create one new store at the same moment agree on its identity (store/chain.py):
exactly one is recorded, and every run any of them recorded verifies under it. Two identities, or one
replaced after a process chained runs under it, would leave that process's runs refused as copied
from another store. Real processes, SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import replaykit as rk

from conftest import PYTHON

PROCESSES = 6

# Waits for the go (a file), then opens the store (creating it if nobody has yet) and runs a one-step
# workflow of its own id.
_MAKER = """
import os, sys, time
import replaykit as rk
import test_store_identity_at_once as t
db, go, i = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.001)
print(rk.run(t.one_step, i, workflow_id="maker-" + i, db=db))
"""


@rk.activity(name="sia_echo")
def echo(text: str) -> str:
    return text


@rk.workflow(name="sia_one_step")
def one_step(ctx: rk.Context, text: str) -> Any:
    said = yield echo(text)
    return said


def _identities(db: str) -> list[object]:
    if db.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db) as conn:
            return [row[0] for row in conn.execute("SELECT value FROM replaykit_meta WHERE key = 'identity'")]
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT value FROM meta WHERE key = 'identity'")]
    finally:
        conn.close()


def test_processes_creating_one_store_at_once_agree_on_its_identity(any_db: str, tmp_path: Path,
                                                                      child_env: dict[str, str]) -> None:
    go = tmp_path / "go"
    makers = [subprocess.Popen([PYTHON, "-c", _MAKER, any_db, str(go), str(i)], env=child_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(PROCESSES)]
    time.sleep(0.5)  # all of them importing, then waiting for the go: not a timing assertion
    go.touch()
    outcomes = [maker.communicate(timeout=120) for maker in makers]
    assert [out for out, _ in outcomes] == [f"{i}\n" for i in range(PROCESSES)], [err for _, err in outcomes]
    [identity] = _identities(any_db)  # exactly one
    assert identity is not None
    with rk.Client(any_db) as client:
        for i in range(PROCESSES):  # read back verified under that one identity
            assert client.handle(f"maker-{i}").result(timeout=5) == str(i)
            assert [e.kind for e in client.store.events(f"maker-{i}")][-1] == "result"
