from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgserver import PgServer, find_binaries

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> str:
    """Path of a fresh SQLite store file."""
    return str(tmp_path / "store.db")


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for subprocesses that import replaykit and the test helpers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable


def _unavailable(reason: str) -> None:
    """PostgreSQL tests cannot run here: a failure in CI (which must install it), a skip elsewhere."""
    message = f"{reason}. The PostgreSQL tests need it; on Debian: apt-get install postgresql"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (failing, not skipping: CI is set)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of this test session (initdb + pg_ctl in a temporary directory, Unix socket only)."""
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("psycopg is not installed (pip install 'replaykit[postgres]')")
    bindir = find_binaries()
    if bindir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")
        raise AssertionError("unreachable")
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh, empty database on the session's server (emptied afterwards, for the next test)."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.release_database(name)

pytest_plugins = ["pytester"]
