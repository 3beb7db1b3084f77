"""pytest plugin (registered through the ``pytest11`` entry point when replaykit is installed).

Fixtures:

- ``rk_env``: a ready :class:`~replaykit.testing.TestEnv` (fake clock, in-memory store,
  freezegun on), closed after the test.

Strict replay (every run replayed from scratch after each step) is on for tests
marked ``@pytest.mark.replaykit_strict``, or for all tests with ``--replaykit-strict``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # loaded by the fixture: pytest starts without the engine, and without freezegun
    from .env import TestEnv


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("replaykit")
    group.addoption("--replaykit-strict", action="store_true", default=False,
                    help="replay every workflow run from scratch after each step (catches non-determinism early)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "replaykit_strict: run this test's rk_env in strict replay mode")


@pytest.fixture
def rk_env(request: pytest.FixtureRequest) -> Iterator[TestEnv]:
    """A time-skipping test environment (in-memory store, fake clock, freezegun)."""
    from .env import TestEnv

    strict = bool(request.config.getoption("--replaykit-strict")) or \
        request.node.get_closest_marker("replaykit_strict") is not None
    with TestEnv(strict_replay=strict) as env:
        yield env
