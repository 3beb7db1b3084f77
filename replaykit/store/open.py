"""Pick the store a ``db`` argument names: a PostgreSQL URL, or the path of an SQLite file."""

from __future__ import annotations

import os

from .base import Store
from .sqlite import Durability, SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: str | os.PathLike[str]) -> bool:
    return isinstance(db, str) and db.startswith(POSTGRES_SCHEMES)


def open_store(db: str | os.PathLike[str], *, durability: Durability | str = Durability.CRASH,
               create: bool = True) -> Store:
    """``PostgresStore(db)`` for a ``postgresql://`` (or ``postgres://``) URL, ``SqliteStore(db)`` otherwise.

    psycopg is imported only here, when a URL asks for it: ``import replaykit`` never does.
    """
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(str(db), durability=durability, create=create)
    return SqliteStore(db, durability=durability, create=create)
