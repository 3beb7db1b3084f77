"""Other releases of replaykit, for tests of stores shared by processes of two versions (a rolling
deploy, a rollback): a clone of /work/main's history (or this repository's) checked out at a commit,
run as a subprocess with PYTHONPATH set to it.

OLD is 0.1's last release candidate (SQLite schema 4, PostgreSQL 5); PREVIOUS is the version
before keeper marks (SQLite schema 3, PostgreSQL 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

OLD = "080aaa0"
PREVIOUS = "b3049f0~1"  # the parent of "An evicted run stays its engine's ... (schema: SQLite 4, PostgreSQL 5)"
_ROOT = Path(__file__).resolve().parent.parent
_SOURCE = str(_ROOT)  # this repository: its history holds the releases
_clones: dict[str, str] = {}


def clone(rev: str) -> str:
    """A checkout of ``rev`` (made once per test process); the test is skipped where the repository's
    history does not hold it (a shallow clone, a source tarball)."""
    if rev not in _clones:
        known = subprocess.run(["git", "-C", _SOURCE, "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True)
        if known.returncode:
            pytest.skip(f"needs the repository's history: commit {rev} is not in {_SOURCE}")
        where = tempfile.mkdtemp(prefix="rk-version-")
        subprocess.run(["git", "clone", "-q", _SOURCE, where], check=True)
        subprocess.run(["git", "-C", where, "checkout", "-q", rev], check=True)
        _clones[rev] = where
    return _clones[rev]


def env(rev: str, *paths: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([clone(rev), *paths])
    e["PYTHONUNBUFFERED"] = "1"
    return e


def run(rev: str, code: str, *args: str, paths: tuple[str, ...] = (), timeout: float = 60,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` under version ``rev`` (run in its checkout: ``-c`` puts the working directory
    first on sys.path, and this checkout's replaykit must not be the one imported)."""
    done = subprocess.run([sys.executable, "-c", code, *args], env=env(rev, *paths), capture_output=True, text=True,
                          timeout=timeout, cwd=clone(rev))
    if check and done.returncode:
        raise AssertionError(f"{rev}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def cli(rev: str, *args: str, paths: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m replaykit args`` under version ``rev``."""
    return subprocess.run([sys.executable, "-m", "replaykit", *args], env=env(rev, *paths), capture_output=True,
                          text=True, timeout=timeout, cwd=clone(rev))


MAKE_STORE = """
import sys, replaykit as rk
@rk.activity
def step(n: int) -> int:
    return n
@rk.workflow(name="upgrade.simple")
def simple(ctx, n: int):
    yield step(n)
    return n + 1
print(rk.run(simple, 1, workflow_id="done", db=sys.argv[1]))
"""


def cli_here(*args: str, paths: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m replaykit args`` under this checkout's version."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(_ROOT), *paths])
    return subprocess.run([sys.executable, "-m", "replaykit", *args], env=e, capture_output=True, text=True,
                          timeout=timeout)
