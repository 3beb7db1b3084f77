"""What PostgreSQL reports, said as replaykit errors that name the database (never its password).

The server judges; this module only explains its verdict, by SQLSTATE where there is
one, and by libpq's message where there is none (a connection that failed or broke).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from ..errors import (
    CorruptStoreError,
    StoreError,
    StoreFullError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from ..text import unencodable

_READ_ONLY = {"25006", "42501"}  # read_only_sql_transaction (a standby), insufficient_privilege
_FULL = {"53100", "53200", "53400"}  # disk_full, out_of_memory, configuration_limit_exceeded
_CORRUPT = {"XX001", "XX002"}  # data_corrupted, index_corrupted
_SCHEMA_GONE = {"42703", "42P01"}  # undefined_column, undefined_table: in a store of the right version


def translate(where: str, exc: psycopg.Error) -> StoreError:
    """The replaykit error for what PostgreSQL (or libpq) said about the store at ``where``."""
    state = exc.sqlstate or ""
    said = _said(exc)
    if state in _FULL:
        return StoreFullError(
            f"{where}: no room to record more (PostgreSQL: {said}). What was committed before is intact; "
            "free space on the database server and run again: runs continue from their last recorded step."
        )
    if state in _READ_ONLY:
        return StoreReadOnlyError(
            f"{where}: the store cannot be written (PostgreSQL: {said}). Connect as a role that may write "
            "the replaykit tables, to the primary server (not a read-only standby). Nothing was changed."
        )
    if state in _CORRUPT:
        return CorruptStoreError(
            f"{where}: PostgreSQL cannot read the store's data ({said}). Restore it from a backup; "
            "replaykit will not overwrite it."
        )
    if state in _SCHEMA_GONE:
        return CorruptStoreError(
            f"{where}: the store's schema is damaged: a replaykit table or column is missing or is not "
            f"replaykit's ({said}). Nothing was changed; restore the store from a backup."
        )
    if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(("08", "57P"))):
        return StoreError(
            f"{where}: the connection to the database failed or was lost ({said}). What was committed "
            "before is intact; check that the server is up and reachable, and run again."
        )
    return StoreError(f"{where}: PostgreSQL refused the operation ({state or 'no SQLSTATE'}: {said}).")


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Raise what psycopg raises in the block as the replaykit error that fits."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(where, exc) from exc
    except UnicodeEncodeError as exc:  # text given to the store (an id looked up, say): checked where made
        raise unencodable(f"{where}: text given to the store", exc) from None


def cannot_connect(where: str, exc: psycopg.Error) -> StoreError:
    """Why no connection to ``where`` could be made, with what to do."""
    said = _said(exc)
    if "does not exist" in said and "database" in said:
        return StoreNotFoundError(
            f"no replaykit store at {where}: the database does not exist ({said}). Create it first "
            "(createdb, or CREATE DATABASE); replaykit creates its tables, never the database."
        )
    if "authentication failed" in said or "no password supplied" in said or "no pg_hba.conf entry" in said:
        return StoreError(f"{where}: the database refused the login ({said}). Check the user and password.")
    return StoreError(
        f"{where}: cannot connect to PostgreSQL ({said}). Check that the server is running and that the "
        "host, port (or socket directory) and database in the URL are right."
    )


def _said(exc: psycopg.Error) -> str:
    """libpq's message on one line."""
    return " ".join(str(exc).split())
