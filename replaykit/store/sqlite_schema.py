"""The SQLite store's schema: how a file is recognised as a replaykit store, and how one is created.

SQLite judges the file here: one that is not a database raises ``sqlite3.DatabaseError``
on the first statement, before anything is written.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils

from .. import payloads
from ..errors import NotAStoreError, StoreNotFoundError, StoreTooNewError
from .sqlite_errors import translated

SCHEMA_VERSION = 1
APPLICATION_ID = 0x524B4954  # "RKIT" in the SQLite header: marks a replaykit store

# sqlite-utils cannot declare WITHOUT ROWID tables; the history table is one
# (a single b-tree keyed by (run, seq): one insert per step, no extra index).
_EVENTS_DDL = """
CREATE TABLE events (
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    encoding TEXT NOT NULL,
    payload,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID
"""


def ensure_schema(conn: sqlite3.Connection, path: str, create: bool) -> None:
    """Check the file is a replaykit store this version reads; create the schema in an empty one
    (only if ``create``). Refuses foreign and newer files before anything is written."""
    if is_ours(conn, path):  # a plain read: opening a store takes no write lock
        return
    if not create:
        raise StoreNotFoundError(
            f"no replaykit store at {path}: the file is empty, so it holds no replaykit store yet. "
            "Check the path; reading a store never creates one, and nothing was changed."
        )
    with translated(path):
        conn.execute("BEGIN IMMEDIATE")
    try:
        if is_ours(conn, path):  # another process created it meanwhile
            conn.execute("COMMIT")
            return
        _create_schema(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def is_ours(conn: sqlite3.Connection, path: str) -> bool:
    """Is this a replaykit store (``False``: an empty database)? Refuses anything else."""
    app_id, version = (conn.execute(f"PRAGMA {name}").fetchall()[0][0] for name in ("application_id", "user_version"))
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreTooNewError(
                f"{path} was written by a newer replaykit (store schema {version}; this "
                f"version reads up to {SCHEMA_VERSION}). Upgrade replaykit to use it; "
                "the file was not changed."
            )
        return True
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
    if tables:
        raise NotAStoreError(
            f"{path} is an SQLite database of something else (tables: "
            f"{', '.join(tables[:5])}), not a replaykit store. Use a separate file for "
            "replaykit; this one was not changed."
        )
    return False


def _create_schema(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    meta, runs, signals = (db.table(name) for name in ("meta", "runs", "signals"))
    meta.create({"key": str, "value": str}, pk="key")
    meta.insert_all([
        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
        {"key": "payload_format", "value": str(payloads.FORMAT_VERSION)},
    ])
    runs.create(
        {"id": int, "workflow_id": str, "generation": int, "name": str, "status": str,
         "created_at": float, "updated_at": float, "custom_status": str},
        pk="id", not_null={"workflow_id", "generation", "name", "status"},
    )
    runs.create_index(["workflow_id", "generation"], unique=True)
    runs.create_index(["status"])
    conn.execute(_EVENTS_DDL)
    signals.create(
        {"id": int, "workflow_id": str, "name": str, "encoding": str, "payload": str,
         "sent_at": float, "consumed": int},
        pk="id", defaults={"consumed": 0},
    )
    signals.create_index(["workflow_id", "name", "consumed"])
    # A partial index, which sqlite-utils cannot declare: finds the unconsumed few among all signals.
    conn.execute("CREATE INDEX signals_unconsumed ON signals (workflow_id) WHERE consumed = 0")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
