"""Testing helpers shipped to users: a time-skipping environment, a replay checker,
a context for stepping workflows by hand, a pytest plugin, hypothesis strategies.

See ``docs/testing.md``. ``TestEnv`` needs freezegun (``pip install "replaykit[testing]"``); it
is imported on first use, so the replay checker works in a production install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..determinism import NonDeterminismWarning
from ..lazy import loader
from .hand import fake_context
from .replayer import History, ReplayReport, export_history, import_history, replay, replay_all

if TYPE_CHECKING:
    from .env import TestEnv

__all__ = [
    "History", "NonDeterminismWarning", "ReplayReport", "TestEnv", "export_history", "import_history", "fake_context",
    "replay", "replay_all",
]


if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise take any name, typos too
    __getattr__ = loader(__name__, {"TestEnv": ".env"})
