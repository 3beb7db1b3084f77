"""Statements sent through libpq directly, where psycopg's cursor machinery would cost more than the
statement: a step's fenced insert (waited for, or sent and confirmed later), and a history page
read ahead while the one before it replays.
"""

from __future__ import annotations

import select
import weakref
from concurrent.futures import Executor
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

from ..history import Event
from .postgres_conn import Connection, Pool

_INSERT_EVENT = b"replaykit_insert_event"
# The fence, in the statement itself: nothing is inserted unless the run's row still carries this
# store's token. FOR KEY SHARE holds the row until commit against a new owner's stamp (FOR UPDATE,
# see _STAMP), not against status updates; a stamp committed first makes the check fail.
_INSERT_EVENT_SQL = (b"INSERT INTO replaykit_events SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12 "
                     b"WHERE EXISTS (SELECT FROM replaykit_runs WHERE id = $1 AND owner = $11 FOR KEY SHARE) "
                     b"ON CONFLICT DO NOTHING")  # a duplicate must not abort a group-commit batch
# int8 int4 int4 text text float8 text text text bytea int8 bytea
_INSERT_EVENT_TYPES = [20, 23, 23, 25, 25, 701, 25, 25, 25, 17, 20, 17]
_INSERT_EVENT_FORMATS = [0] * 9 + [1, 0, 1]  # pickled bytes and the checksum are sent as they are; the rest as text
_prepared: weakref.WeakSet[Connection] = weakref.WeakSet()  # connections where _INSERT_EVENT is prepared


def insert_event(conn: Connection, run: int, e: Event, token: int, digest: bytes) -> int:
    """Append one event with its checksum (one round trip) if the run's row carries ``token``; how many rows were
    inserted: 0 if its ``seq`` exists or the run is not this store's any more.

    The hot path, through libpq directly: psycopg's cursor machinery costs two to three times the
    client CPU of this statement (60 against 20 µs here), which is most of a step on a local server.
    """
    with conn.lock:
        result = conn.pgconn.exec_prepared(_INSERT_EVENT, _event_params(conn, run, e, token, digest),  # type: ignore[arg-type]
                                           _INSERT_EVENT_FORMATS)
    _check(conn, result)
    return result.command_tuples or 0


def send_event(conn: Connection, run: int, e: Event, token: int, digest: bytes) -> None:
    """:func:`insert_event`, sent without waiting for its result: :func:`event_sent` waits. Nothing
    else may use ``conn`` in between."""
    with conn.lock:  # libpq's failure to send is raised as psycopg.OperationalError
        conn.pgconn.send_query_prepared(_INSERT_EVENT, _event_params(conn, run, e, token, digest),
                                        _INSERT_EVENT_FORMATS)
        _flush(conn)


def event_sent(conn: Connection) -> int:
    """The result of :func:`send_event` on ``conn``: how many rows it inserted (0 or 1)."""
    result = _result(conn)
    _check(conn, result)
    return result.command_tuples or 0


class Ahead:
    """One query sent now, on a connection of its own, then read whole and its connection given
    back by ``reader`` (a thread): a history's next page travels while the current one replays.
    The server is done with it as soon as it has sent the rows, and the connection is back in the
    pool then, however long the page waits to be used, or if it never is."""

    def __init__(self, pool: Pool, reader: Executor, sql: bytes, params: list[bytes]) -> None:
        conn = pool.take()
        try:
            with conn.lock:
                conn.pgconn.send_query_params(sql, params)
                _flush(conn)
        except BaseException:
            conn.close()
            pool.give(conn)
            raise
        self._rows = reader.submit(_read_rows, pool, conn)

    def rows(self) -> list[tuple[Any, ...]]:
        """The query's rows (waiting for them if need be), converted as psycopg converts them."""
        return self._rows.result()


def _read_rows(pool: Pool, conn: Connection) -> list[tuple[Any, ...]]:
    try:
        result = _result(conn)
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise psycopg.errors.error_from_result(result, encoding="utf-8")
        loader = Transformer.from_context(conn)
        loader.set_pgresult(result)
        return loader.load_rows(0, result.ntuples, tuple)
    except BaseException:
        conn.close()  # in an unknown state: never lent again
        raise
    finally:
        pool.give(conn)


def _flush(conn: Connection) -> None:
    """Send what libpq still holds of the query (psycopg's connections do not block: a large one,
    a pickled payload of megabytes, leaves the rest in libpq's buffer), reading meanwhile."""
    pgconn = conn.pgconn
    try:
        while pgconn.flush() == 1:
            readable, _, _ = select.select([pgconn.socket], [pgconn.socket], [], 1.0)
            if readable:
                pgconn.consume_input()
    except (OSError, ValueError) as exc:  # the socket closed under us (the store closed meanwhile)
        raise psycopg.OperationalError(f"the connection was lost: {exc}") from exc


def _result(conn: Connection) -> pq.abc.PGresult:
    """Wait for the answer to what was sent on ``conn`` (the GIL free meanwhile) and read all of it."""
    pgconn = conn.pgconn
    with conn.lock:
        try:
            pgconn.consume_input()
            while pgconn.is_busy():
                # Woken now and then: a connection closed by another thread (its store closed)
                # raises here instead of leaving this thread waiting forever.
                select.select([pgconn.socket], [], [], 1.0)
                pgconn.consume_input()
        except (OSError, ValueError) as exc:
            raise psycopg.OperationalError(f"the connection was lost: {exc}") from exc
        result, tail = pgconn.get_result(), pgconn.get_result()
        while tail is not None:  # one statement, one result; drained to be ready for the next
            tail = pgconn.get_result()
    if result is None:
        raise psycopg.OperationalError(pgconn.get_error_message() or "the server sent no result")
    return result


def _event_params(conn: Connection, run: int, e: Event, token: int, digest: bytes) -> list[bytes | None]:
    """The statement's parameters (preparing it first on a connection new to it)."""
    if conn not in _prepared:
        _check(conn, conn.pgconn.prepare(_INSERT_EVENT, _INSERT_EVENT_SQL, _INSERT_EVENT_TYPES))
        _prepared.add(conn)
    payload = e.payload
    return [b"%d" % run, b"%d" % e.seq, b"%d" % e.step, e.kind.encode(), e.name.encode(), repr(float(e.at)).encode(),
            e.outcome.encode(), e.encoding.encode(), *((payload.encode(), None) if isinstance(payload, str)
                                                       else (None, payload)), b"%d" % token, digest]


def _check(conn: Connection, result: pq.abc.PGresult) -> None:
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(result, encoding="utf-8")
