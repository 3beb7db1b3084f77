"""The PostgreSQL store's schema: how a database is recognised as a replaykit store, and how one is
created or migrated.

The store lives in the connection's current schema (the first of ``search_path`` that
exists; ``public`` by default) as tables named ``replaykit_*``. A schema holding other
tables and no ``replaykit_meta`` is someone else's: refused, nothing written. Creation and
migration run in one transaction under a transaction-level advisory lock, so processes
that open a new database at the same moment create it once.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg.rows import TupleRow

from .. import payloads
from ..errors import NotAStoreError, StoreError, StoreNotFoundError, StoreTooNewError
from ..history import Event, Status
from . import chain
from .chain import Chain

SCHEMA_VERSION = 6
NAMESPACE = 0x524B4954  # "RKIT": the first key of replaykit's two-key advisory locks
_MIGRATION_LOCK = (NAMESPACE, 0)



def checksum_all(conn: psycopg.Connection[TupleRow], chain_of_keys: Callable[[], Chain]) -> None:
    """Checksum every event, the last event of every run that ended (its seal), and every signal,
    as they stand (version 4 does this once to a store of version 3)."""
    links = chain_of_keys()
    runs = conn.execute("SELECT id, workflow_id, generation, status FROM replaykit_runs").fetchall()
    for run, workflow_id, generation, status in runs:
        seed = prev = chain.seed(workflow_id, generation)
        rows = conn.execute("SELECT seq, step, kind, name, at, outcome, encoding, payload, payload_bytes "
                            "FROM replaykit_events WHERE run = %s ORDER BY seq", (run,)).fetchall()
        for seq, step, kind, name, at, outcome, encoding, text, data in rows:
            prev = links.link(prev, Event(seq, step, kind, name, at, outcome, encoding, data if text is None else text))
            conn.execute("UPDATE replaykit_events SET digest = %s WHERE run = %s AND seq = %s", (prev, run, seq))
        if Status(status).is_terminal:
            head = links.seal(seed, Status(status), (rows[-1][0], prev) if rows else None)
            conn.execute("UPDATE replaykit_runs SET head = %s WHERE id = %s", (head, run))
    signals = conn.execute("SELECT id, workflow_id, name, encoding, payload, payload_bytes, sent_at "
                           "FROM replaykit_signals").fetchall()
    for signal_id, workflow_id, name, encoding, text, data, at in signals:
        payload = data if text is None else text
        conn.execute("UPDATE replaykit_signals SET digest = %s WHERE id = %s",
                     (links.link(chain.SIGNAL_SEED, chain.signal_fields(workflow_id, name, encoding, payload, at)),
                      signal_id))


def _add_checksums(conn: psycopg.Connection[TupleRow], chain_of_keys: Callable[[], Chain]) -> None:
    """Version 4: every event carries its run's hash chain (store/chain.py), a run that ended keeps
    its last event's checksum, a signal its own."""
    found = conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                         "AND table_name = 'replaykit_events' AND column_name = 'digest'").fetchall()
    if found:
        raise chain.set_back(CHECKSUMS - 1)
    conn.execute("ALTER TABLE replaykit_events ADD COLUMN digest bytea")
    conn.execute("ALTER TABLE replaykit_runs ADD COLUMN head bytea")
    conn.execute("ALTER TABLE replaykit_signals ADD COLUMN digest bytea")
    checksum_all(conn, chain_of_keys)


# Version n's statements take a store at version n - 1 to version n.
_MIGRATIONS: dict[int, list[str | Callable[[psycopg.Connection[TupleRow], Callable[[], Chain]], None]]] = {
    1: [
        "CREATE TABLE replaykit_meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE replaykit_runs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            workflow_id text NOT NULL,
            generation integer NOT NULL,
            name text NOT NULL,
            status text NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            custom_status text,
            UNIQUE (workflow_id, generation))""",
        "CREATE INDEX replaykit_runs_status ON replaykit_runs (status)",
        # The payload is JSON text or pickled bytes: one of the two columns holds it.
        """CREATE TABLE replaykit_events (
            run bigint NOT NULL,
            seq integer NOT NULL,
            step integer NOT NULL,
            kind text NOT NULL,
            name text NOT NULL,
            at double precision NOT NULL,
            outcome text NOT NULL,
            encoding text NOT NULL,
            payload text,
            payload_bytes bytea,
            PRIMARY KEY (run, seq))""",
        """CREATE TABLE replaykit_signals (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            workflow_id text NOT NULL,
            name text NOT NULL,
            encoding text NOT NULL,
            payload text,
            payload_bytes bytea,
            sent_at double precision NOT NULL,
            consumed boolean NOT NULL DEFAULT false)""",
        # Finds the unconsumed few among all signals, by id and by name.
        "CREATE INDEX replaykit_signals_unconsumed ON replaykit_signals (workflow_id, name, id) WHERE NOT consumed",
        "INSERT INTO replaykit_meta VALUES ('store', 'replaykit'), "
        f"('payload_format', '{payloads.FORMAT_VERSION}'), ('schema_version', '0')",
    ],
    # The fencing token of the store that took the run's lock last (postgres_conn.AdvisoryLocks):
    # a step is recorded only while the run's row still carries the token of the store writing it.
    2: ["ALTER TABLE replaykit_runs ADD COLUMN owner bigint"],
    # The work queue (store/work.py): a row per queued run, the queues' limits, the worker registry.
    3: [
        """CREATE TABLE replaykit_work (
            workflow_id text PRIMARY KEY,
            name text NOT NULL,
            queue text NOT NULL,
            priority integer NOT NULL DEFAULT 0,
            part_key text,
            parent text,
            ready_at double precision,
            worker text,
            started_at double precision,
            problem text,
            problem_version text)""",
        "CREATE INDEX replaykit_work_ready ON replaykit_work (queue, priority DESC, ready_at) "
        "WHERE ready_at IS NOT NULL",
        "CREATE INDEX replaykit_work_held ON replaykit_work (worker) WHERE worker IS NOT NULL",
        "CREATE INDEX replaykit_work_started ON replaykit_work (queue, started_at) WHERE started_at IS NOT NULL",
        """CREATE TABLE replaykit_queues (name text PRIMARY KEY, concurrency integer, per_key integer,
            rate_starts integer, rate_seconds double precision)""",
        """CREATE TABLE replaykit_workers (id text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL,
            queues text NOT NULL, workflows text NOT NULL, version text NOT NULL,
            started_at double precision NOT NULL, heartbeat_at double precision NOT NULL,
            stopping boolean NOT NULL DEFAULT false, backend integer)""",
    ],
    4: [_add_checksums],
    # The engine that keeps a run it evicted (store/keepers.py): NULL, or its keeper's name. (A column
    # already there is kept: a store whose version was set back loses nothing by it.)
    5: ["ALTER TABLE replaykit_runs ADD COLUMN IF NOT EXISTS keeper text"],
    # A store created from version 6 on has an identity (meta 'identity': store/chain.py). One made
    # before keeps none (its checksums were made without one), and is migrated up to version 5 only,
    # and used at it: processes of the version before go on with it.
    6: [],
}


CHECKSUMS = 4  # the version that checksums histories (store/chain.py)
KEEPERS = 5  # the version that marks runs kept out of memory by a live engine (store/keepers.py)
IDENTITIES = 6  # the version whose new stores have an identity (store/chain.py)
MIGRATED_TO = IDENTITIES - 1  # an existing store's top: one made before identities stays the previous version's
_HAS_ROWS = "SELECT EXISTS (SELECT 1 FROM replaykit_events) OR EXISTS (SELECT 1 FROM replaykit_signals)"


def ensure_schema(conn: psycopg.Connection[TupleRow], where: str, create: bool,
                  chain_of_keys: Callable[[], Chain], migrate: bool = False, writable: bool = True) -> int:
    """The schema the store is read at. Check the database is a replaykit store this version reads;
    create (or migrate) it if ``create`` (``chain_of_keys``: the store's chain, to checksum the rows of
    an older store, which only happens if ``migrate``: the owner vouches for them). Foreign and newer
    stores are refused before anything is written; a reader (not ``writable``) changes nothing."""
    version = _version(conn, where)  # a plain read: opening an up-to-date store takes no lock
    if version in (SCHEMA_VERSION, MIGRATED_TO):  # 5 is kept: 6 differs only in how stores are made
        return version
    if not writable and version is not None and version >= CHECKSUMS:
        return version  # 5 added only what writers use: a reader reads 4 as it stands
    if not writable and version is not None:
        raise chain.migration_required(where, version, CHECKSUMS)
    if version is None and not create:
        raise StoreNotFoundError(
            f"no replaykit store at {where}: the database holds no replaykit tables yet. Check the URL; "
            "reading a store never creates one, and nothing was changed."
        )
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _MIGRATION_LOCK)
        version = _version(conn, where) or 0  # another process may have done it meanwhile
        top = SCHEMA_VERSION if version == 0 else max(version, MIGRATED_TO)  # see _MIGRATIONS[6]
        if 0 < version < CHECKSUMS and not migrate and conn.execute(_HAS_ROWS).fetchall()[0][0]:
            raise chain.migration_required(where, version, CHECKSUMS)
        try:
            for target in range(version + 1, top + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement) if isinstance(statement, str) else statement(conn, chain_of_keys)
                conn.execute("UPDATE replaykit_meta SET value = %s WHERE key = 'schema_version'", (str(target),))
            if version == 0:  # created here
                conn.execute("INSERT INTO replaykit_meta VALUES ('identity', %s)", (chain.new_identity(),))
        except (psycopg.errors.DuplicateTable, psycopg.errors.DuplicateColumn, psycopg.errors.DuplicateObject) as exc:
            # What a migration adds is already there: the number was set back (rolled back with the rest).
            raise chain.set_back(version, f"what it adds ({' '.join(str(exc).split())})") from exc
    return top


def identity_kept(conn: psycopg.Connection[TupleRow]) -> object:
    """What the store's meta table keeps as its identity (``None``: none, as in a store made before them)."""
    rows = conn.execute("SELECT value FROM replaykit_meta WHERE key = 'identity'").fetchall()
    return rows[0][0] if rows else None


def _version(conn: psycopg.Connection[TupleRow], where: str) -> int | None:
    """The store's schema version (``None``: no store here yet). Refuses anything else."""
    schema = conn.execute("SELECT current_schema()").fetchall()[0][0]
    if schema is None:
        raise StoreError(
            f"{where}: no schema to hold the store: none of the schemas in the search_path exists. "
            "Create one (CREATE SCHEMA ...) or fix the search_path; nothing was changed."
        )
    tables = [row[0] for row in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename").fetchall()]
    if "replaykit_meta" not in tables:
        if tables:
            raise NotAStoreError(
                f"{where}: schema {schema!r} holds tables of something else ({', '.join(tables[:5])}), not a "
                "replaykit store. Give replaykit a database of its own (or a schema of its own: add "
                "options=-csearch_path%3Dreplaykit to the URL, after CREATE SCHEMA replaykit). Nothing was changed."
            )
        return None
    columns = {row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'replaykit_meta'").fetchall()}
    meta: dict[str, str] = (dict(conn.execute("SELECT key, value FROM replaykit_meta").fetchall())
                            if {"key", "value"} <= columns else {})
    if meta.get("store") != "replaykit" or not str(meta.get("schema_version", "")).isdigit():
        raise NotAStoreError(
            f"{where}: the table replaykit_meta in schema {schema!r} was not written by replaykit. "
            "Give replaykit a database or schema of its own; nothing was changed."
        )
    version = int(meta["schema_version"])
    if version > SCHEMA_VERSION:
        raise StoreTooNewError(
            f"{where} was written by a newer replaykit (store schema {version}; this version reads up to "
            f"{SCHEMA_VERSION}). Upgrade replaykit to use it; the database was not changed."
        )
    return version
