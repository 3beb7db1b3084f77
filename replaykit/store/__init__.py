"""Stores persist histories, signals and ownership; the only layer that speaks SQL."""

from .base import Signal, Store
from .memory import MemoryStore
from .sqlite import Durability, SqliteStore

__all__ = ["Durability", "MemoryStore", "Signal", "SqliteStore", "Store"]
