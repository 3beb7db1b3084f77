"""Pick the store a ``db`` argument names: a PostgreSQL URL, or the path of an SQLite file."""

from __future__ import annotations

import os

from .base import Secrets, Store
from .sqlite import Durability, SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: str | os.PathLike[str]) -> bool:
    return isinstance(db, str) and db.startswith(POSTGRES_SCHEMES)


def open_store(db: str | os.PathLike[str], *, durability: Durability | str = Durability.CRASH,
               create: bool = True, secret: Secrets = None, pickle: str = "signed", migrate: bool = False) -> Store:
    """``PostgresStore(db)`` for a ``postgresql://`` (or ``postgres://``) URL, ``SqliteStore(db)`` otherwise.

    psycopg is imported only here, when a URL asks for it: ``import replaykit`` never does.
    """
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(str(db), durability=durability, create=create, secret=secret, pickle=pickle,
                             migrate=migrate)
    return SqliteStore(db, durability=durability, create=create, secret=secret, pickle=pickle, migrate=migrate)


def open_to_read(db: str | os.PathLike[str]) -> Store:
    """An existing store, opened only to be read (``read_only``): read as it stands, never migrated; no
    lock or key file made, whoever runs the reading."""
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(str(db), create=False, read_only=True)
    return SqliteStore(db, create=False, read_only=True)


def store_for(db: str | os.PathLike[str] | Store, *, durability: Durability | str, secret: Secrets,
              pickle: str) -> Store:
    """The store an ``Engine``, ``Client`` or ``Worker`` was given, or the one its ``db`` names."""
    if not isinstance(db, Store):
        return open_store(db, durability=durability, secret=secret, pickle=pickle)
    if secret is not None or pickle != "signed":
        raise ValueError("secret= and pickle= belong to the store you made: pass them to its constructor "
                         "(e.g. rk.SqliteStore(path, secret=...)), not here")
    return db
