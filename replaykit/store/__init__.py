"""Stores persist histories, signals and ownership; the only layer that speaks SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Signal, Store
from .open import open_store
from .sqlite import Durability, SqliteStore

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .postgres import PostgresStore

__all__ = ["Durability", "MemoryStore", "PostgresStore", "Signal", "SqliteStore", "Store", "open_store"]


def __getattr__(name: str) -> Any:
    """Imported on first use: ``PostgresStore`` (importing replaykit must not import psycopg) and
    ``MemoryStore`` (a run on a file needs none of it)."""
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    if name == "MemoryStore":
        from .memory import MemoryStore

        return MemoryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
