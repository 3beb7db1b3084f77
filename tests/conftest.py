from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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

pytest_plugins = ["pytester"]
