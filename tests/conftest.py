from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from replaykit.store import MemoryStore, Store, open_store

from pgserver import PgServer, find_binaries

ROOT = Path(__file__).resolve().parent.parent

# The secret that signs pickled values, shared by every process of the suite (and inherited by the
# processes it starts), as a deployment shares one: a PostgreSQL store has no key file beside it.
# tests/test_signing.py unsets it to try the SQLite key file.
os.environ["REPLAYKIT_SECRET"] = "replaykit-test-suite-secret"
os.environ.pop("REPLAYKIT_OLD_SECRETS", None)
# The processes the suite starts cache their bytecode as a user's do: where PYTHONDONTWRITEBYTECODE is
# set (some CI images set it), each would compile replaykit again, about 50 ms a process.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


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

# For pytest processes the tests start in a directory of their own (pytester), where pyproject.toml's
# addopts do not apply: the third-party plugins that no test needs, left out as addopts leaves them out.
UNNEEDED_PLUGINS = ("-p", "no:schemathesis", "-p", "no:anyio")


def _unavailable(reason: str, who: str = "The PostgreSQL tests need it; on Debian: apt-get install postgresql") -> None:
    """Tests that need a system package cannot run here: a failure in CI (which must install it), a skip elsewhere."""
    message = f"{reason}. {who}"
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


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What a user passes as ``db``, once per store: a fresh SQLite path, then a fresh PostgreSQL database's URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "store.db")


pytest_plugins = ["pytester"]

# The suite runs on 4 pytest-xdist workers (addopts in pyproject.toml): on two cores, since most tests
# wait on processes they started, on fsync or on a timer, not on the CPU. Every worker is its own
# process, with its own PostgreSQL server (pg_server), browser, temporary directories and environment.
# The longest tests are handed out first, so that none is left running alone at the end; the order
# of the others is kept.
LONGEST = (
    "tests/test_chaos_workers.py::",
    "tests/test_pytest_plugin.py::test_plugin_works_in_a_fresh_project",
    "tests/test_corruption_campaign.py::test_forty",
    "tests/test_examples.py::test_the_benchmark_script_runs",
    "tests/test_corruption_campaign.py::test_the_campaign_script",
    "tests/test_properties.py::test_crash_anywhere",
)


# Hypothesis's deadline (200 ms an example unless a test sets one) and its too_slow health check time
# the machine, not the property: with the cores shared by the workers (or by other work) an example
# that takes 0.2 ms alone can take 250 ms, and the test fails as "unreliable timings". Tests that set
# either keep their own.
hypothesis.settings.register_profile(
    "replaykit-suite", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("replaykit-suite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(LONGEST) if item.nodeid.startswith(prefix)), len(LONGEST))

    items.sort(key=rank)


class Backend:
    """One database of one kind; :meth:`open` gives another store object on it (as another process would)."""

    def __init__(self, kind: str, target: str | None) -> None:
        self.kind, self.target = kind, target
        self._memory = MemoryStore() if target is None else None
        self._opened: list[Store] = []

    def open(self) -> Store:
        if self._memory is not None:
            return self._memory  # one MemoryStore lives in one object
        store = open_store(self.target)  # type: ignore[arg-type]
        self._opened.append(store)
        return store

    def needs_database(self, why: str) -> None:
        if self._memory is not None:
            pytest.skip(f"the memory store lives in one object of one process: {why}")

    def open_reads(self) -> int:
        """How many connections to the database hold a read open (a statement or a snapshot)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(str(self.target))
            try:  # TRUNCATE waits for no reader; it reports busy if a reader holds part of the WAL
                return int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0])
            finally:
                conn.close()
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(str(self.target), autocommit=True) as conn:
                return int(conn.execute(
                    # Client connections only: an autovacuum worker cleaning up after the test's inserts
                    # also holds an xmin in this database (CI counted one).
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                    "AND (state <> 'idle' OR backend_xmin IS NOT NULL)").fetchall()[0][0])
        return 0

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    target = {"memory": None, "sqlite": str(tmp_path / "store.db")}.get(request.param)
    if request.param == "postgres":
        target = request.getfixturevalue("pg_url")
    b = Backend(request.param, target)
    yield b
    b.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's chromium and chromedriver) driven by selenium: a failure in CI, a skip elsewhere."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        _unavailable("Debian's chromium and chromedriver are not installed",
                     "The browser tests need them: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed", "The browser tests need it: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    web = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield web
    finally:
        web.quit()
