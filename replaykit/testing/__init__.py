"""Testing helpers shipped to users: a time-skipping environment, a replay checker,
a context for stepping workflows by hand, a pytest plugin, hypothesis strategies.

See ``docs/testing.md``.
"""

from ..determinism import NonDeterminismWarning
from .env import TestEnv
from .hand import fake_context
from .replayer import History, ReplayReport, export_history, replay, replay_all

__all__ = [
    "History", "NonDeterminismWarning", "ReplayReport", "TestEnv", "export_history", "fake_context",
    "replay", "replay_all",
]
