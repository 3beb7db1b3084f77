"""Stores persist histories, signals and ownership; the only layer that speaks SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import loader
from .base import Generation, Signal, Store
from .open import open_store
from .sqlite import Durability, SqliteStore

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .postgres import PostgresStore

__all__ = ["Durability", "Generation", "MemoryStore", "PostgresStore", "Signal", "SqliteStore", "Store", "open_store"]


# PostgresStore on first use (importing replaykit must not import psycopg); MemoryStore too (a run
# on a file needs none of it).
if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise take any name, typos too
    __getattr__ = loader(__name__, {"PostgresStore": ".postgres", "MemoryStore": ".memory"})
