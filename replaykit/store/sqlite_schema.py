"""The SQLite store's schema: how a file is recognised as a replaykit store, and how one is created.

SQLite judges the file here: one that is not a database raises ``sqlite3.DatabaseError``
on the first statement, before anything is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .. import payloads
from ..errors import NotAStoreError, StoreNotFoundError, StoreTooNewError
from ..history import Event, Status
from . import chain
from .chain import Chain
from .sqlite_access import read_only_error
from .sqlite_errors import translated

SCHEMA_VERSION = 5
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


def checksum_all(conn: sqlite3.Connection, chain_of_keys: Callable[[], Chain]) -> None:
    """Checksum every event, the last event of every run that ended (its seal), and every signal,
    as they stand (version 3 does this once to a store of version 2)."""
    runs = conn.execute("SELECT id, workflow_id, generation, status FROM runs").fetchall()
    for run, workflow_id, generation, status in runs:
        seed = prev = chain.seed(workflow_id, generation)
        rows = conn.execute("SELECT seq, step, kind, name, at, outcome, encoding, payload FROM events "
                            "WHERE run = ? ORDER BY seq", (run,)).fetchall()
        for row in rows:
            prev = chain_of_keys().link(prev, Event._make(row))
            conn.execute("UPDATE events SET digest = ? WHERE run = ? AND seq = ?", (prev, run, row[0]))
        if Status(status).is_terminal:
            head = chain_of_keys().seal(seed, Status(status), (rows[-1][0], prev) if rows else None)
            conn.execute("UPDATE runs SET head = ? WHERE id = ?", (head, run))
    signals = conn.execute("SELECT id, workflow_id, name, encoding, payload, sent_at FROM signals").fetchall()
    for signal_id, workflow_id, name, encoding, payload, at in signals:
        conn.execute("UPDATE signals SET digest = ? WHERE id = ?",
                     (chain_of_keys().link(chain.SIGNAL_SEED,
                                           chain.signal_fields(workflow_id, name, encoding, payload, at)), signal_id))


def _add_checksums(conn: sqlite3.Connection, chain_of_keys: Callable[[], Chain]) -> None:
    """Version 3: every event carries its run's hash chain (store/chain.py), a run that ended keeps
    its last event's checksum, a signal its own."""
    if any(row[1] == "digest" for row in conn.execute("PRAGMA table_info(events)").fetchall()):
        raise chain.set_back(CHECKSUMS - 1)
    conn.execute("ALTER TABLE events ADD COLUMN digest BLOB")
    conn.execute("ALTER TABLE runs ADD COLUMN head BLOB")
    conn.execute("ALTER TABLE signals ADD COLUMN digest BLOB")
    checksum_all(conn, chain_of_keys)


def _add_keepers(conn: sqlite3.Connection, chain_of_keys: Callable[[], Chain]) -> None:
    """Version 4: the engine that keeps a run it evicted (store/keepers.py): NULL, or its keeper's name.
    (A column already there is kept: a store whose version was set back loses nothing by it.)"""
    if not any(row[1] == "keeper" for row in conn.execute("PRAGMA table_info(runs)").fetchall()):
        conn.execute("ALTER TABLE runs ADD COLUMN keeper TEXT")


# Version n's statements take a store at version n - 1 to version n (version 1 is created whole).
_MIGRATIONS: dict[int, list[str | Callable[[sqlite3.Connection, Callable[[], Chain]], None]]] = {
    # The work queue (store/work.py): a row per queued run, the queues' limits, the worker registry.
    2: [
        """CREATE TABLE work (
            workflow_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            queue TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            part_key TEXT,
            parent TEXT,
            ready_at REAL,
            worker TEXT,
            started_at REAL,
            problem TEXT,
            problem_version TEXT)""",
        "CREATE INDEX work_ready ON work (queue, priority DESC, ready_at) WHERE ready_at IS NOT NULL",
        "CREATE INDEX work_held ON work (worker) WHERE worker IS NOT NULL",
        "CREATE INDEX work_started ON work (queue, started_at) WHERE started_at IS NOT NULL",
        """CREATE TABLE queues (name TEXT PRIMARY KEY, concurrency INTEGER, per_key INTEGER,
            rate_starts INTEGER, rate_seconds REAL)""",
        """CREATE TABLE workers (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
            queues TEXT NOT NULL, workflows TEXT NOT NULL, version TEXT NOT NULL, started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL, stopping INTEGER NOT NULL DEFAULT 0)""",
    ],
    3: [_add_checksums],
    4: [_add_keepers],
    # A store created from version 5 on has an identity (meta 'identity': store/chain.py). One made
    # before keeps none (its checksums were made without one), and is migrated up to version 4 only,
    # and used at it: processes of the version before go on with it.
    5: [],
}


def ensure_schema(conn: sqlite3.Connection, path: str, create: bool, chain_of_keys: Callable[[], Chain],
                  writable: bool = True, migrate: bool = False) -> int:
    """The schema the store is read at. Check the file is a replaykit store this version reads; create
    the schema in an empty one (only if ``create``), migrate an older one (``chain_of_keys``: the store's
    chain, for checksums; ``migrate``: the owner vouches for the rows of a store from before checksums).
    Refuses foreign and newer files before anything is written, and a read-only (not ``writable``) store
    that would need a change."""
    version = _version(conn, path)
    if version in (SCHEMA_VERSION, MIGRATED_TO):  # a plain read: opening a store takes no write lock
        return version  # (schema 4 is kept: 5 differs only in how stores are made, and 0.1 can go on with it)
    if not writable and version is not None and version >= KEEPERS - 1:
        return version  # schemas 4 and 5 added only what writers use: a reader reads 3 and 4 as they stand
    if version is None and not create:
        raise StoreNotFoundError(
            f"no replaykit store at {path}: the file is empty, so it holds no replaykit store yet. "
            "Check the path; reading a store never creates one, and nothing was changed."
        )
    if not writable:
        raise read_only_error(path, "it is empty, and creating a store in it needs to write" if version is None else
                              f"it has store schema {version}, and bringing it to schema {SCHEMA_VERSION} "
                              "(a migration: see replaykit migrate) needs to write")
    if version is None:
        import sqlite_utils  # noqa: F401  (loaded before the write lock is taken, not while it is held)
    with translated(path):
        conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn, path)  # another process may have created or migrated it meanwhile
        top = SCHEMA_VERSION if version is None else max(version, MIGRATED_TO)  # see _MIGRATIONS[5]
        if version is None:
            _create_schema(conn)
            conn.execute("INSERT INTO meta VALUES ('identity', ?)", (chain.new_identity(),))
            version = 1
        elif version < CHECKSUMS and not migrate and conn.execute(_HAS_ROWS).fetchall()[0][0]:
            raise chain.migration_required(path, version, CHECKSUMS)
        with _set_back_if_there(version), translated(path):
            for target in range(version + 1, top + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement) if isinstance(statement, str) else statement(conn, chain_of_keys)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))
                conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return top


@contextmanager
def _set_back_if_there(version: int) -> Iterator[None]:
    """A migration that finds what it adds already there: the store's number was set back."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "already exists" in str(exc) or "duplicate column" in str(exc):
            raise chain.set_back(version, f"what it adds ({exc})") from exc
        raise


CHECKSUMS = 3  # the version that checksums histories (store/chain.py)
KEEPERS = 4  # the version that marks runs kept out of memory by a live engine (store/keepers.py)
IDENTITIES = 5  # the version whose new stores have an identity (store/chain.py)
MIGRATED_TO = IDENTITIES - 1  # an existing store's top: one made before identities stays the previous version's
_HAS_ROWS = "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM signals)"


def identity_kept(conn: sqlite3.Connection) -> object:
    """What the store's meta table keeps as its identity (``None``: none, as in a store made before them)."""
    rows = conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchall()
    return rows[0][0] if rows else None


def is_ours(conn: sqlite3.Connection, path: str) -> bool:
    """Is this a replaykit store (``False``: an empty database)? Refuses anything else."""
    return _version(conn, path) is not None


_HEADER_AND_TABLES = ("SELECT (SELECT application_id FROM pragma_application_id), "
                      "(SELECT user_version FROM pragma_user_version), "
                      "(SELECT group_concat(name, char(0)) FROM sqlite_master WHERE type = 'table')")


def _version(conn: sqlite3.Connection, path: str) -> int | None:
    """The store's schema version (``None``: an empty database). Refuses anything else.

    One statement, so one snapshot: read apart, the header and the table list could straddle
    another process's creation of the store, which would look like someone else's tables."""
    app_id, version, names = conn.execute(_HEADER_AND_TABLES).fetchall()[0]
    if app_id == APPLICATION_ID:
        if version < 1:  # replaykit marks a store as its own and numbers it in one transaction
            raise chain.set_back(version, "the tables")
        if version > SCHEMA_VERSION:
            raise StoreTooNewError(
                f"{path} was written by a newer replaykit (store schema {version}; this "
                f"version reads up to {SCHEMA_VERSION}). Upgrade replaykit to use it; "
                "the file was not changed."
            )
        return int(version)
    tables = names.split("\x00") if names else []
    if tables:
        raise NotAStoreError(
            f"{path} is an SQLite database of something else (tables: "
            f"{', '.join(tables[:5])}), not a replaykit store. Use a separate file for "
            "replaykit; this one was not changed."
        )
    return None


def _create_schema(conn: sqlite3.Connection) -> None:
    import sqlite_utils  # only to create a store: opening an existing one never loads it

    # No plugins: scanning the installed packages for them took 16 ms of every store's creation, and a
    # plugin's hooks (prepare_connection) have no business on replaykit's connection.
    db = sqlite_utils.Database(conn, execute_plugins=False)
    meta, runs, signals = (db.table(name) for name in ("meta", "runs", "signals"))
    meta.create({"key": str, "value": str}, pk="key")
    meta.insert_all([
        {"key": "schema_version", "value": "1"},
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
    conn.execute("PRAGMA user_version = 1")
