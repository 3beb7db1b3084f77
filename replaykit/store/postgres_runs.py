"""A run's creation and its end, each in one statement: one round trip instead of a transaction's
five or six.

A creation inserts the run's row (nothing if the id exists), its first events, its work row if
it is queued, and the notification, all conditional on the row's insert.

An end inserts the run's result behind the fence (the run's row must carry this store's token,
see ``postgres_libpq.insert_event``), and everything else is conditional on that insert: the run's
status (and custom status), its work row handed back and never ready again, its queued parent
woken, and the notification. A refused insert therefore changes nothing, and leaves an open
transaction (a group-commit batch) usable. The statement first takes the run's serialising
lock (``Writes.serialize``), as every write that changes a run's row does: a pause waiting for
it reads the ended status afterwards and is refused, and one that came first is overwritten by
the end (``UPDATE`` re-reads a row changed since the statement began).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..history import Event, Status
from .postgres_conn import CHANNEL, Connection, int32_key
from .postgres_schema import NAMESPACE
from .postgres_work import ended_ctes
from .work import Placement

_CREATE = f"""
WITH run AS (
    INSERT INTO replaykit_runs (workflow_id, generation, name, status, created_at, updated_at, owner, head)
    SELECT %(workflow_id)s::text, 1, %(name)s::text, %(status)s::text, %(at)s::float8, %(at)s::float8,
           %(owner)s::bigint, %(head)s::bytea
    -- Only where the id has no row at all: a row whose generation was changed (not 1) is read, and
    -- refused as damaged, not joined by a second first generation. Two creations racing: the
    -- unique (workflow_id, generation) lets one in.
    WHERE NOT EXISTS (SELECT 1 FROM replaykit_runs WHERE workflow_id = %(workflow_id)s::text)
    ON CONFLICT DO NOTHING
    RETURNING id),
events AS (
    INSERT INTO replaykit_events
    SELECT run.id, e.* FROM run, unnest(%(seq)s::integer[], %(step)s::integer[], %(kind)s::text[], %(name_)s::text[],
        %(at_)s::float8[], %(outcome)s::text[], %(encoding)s::text[], %(text)s::text[], %(bytes)s::bytea[],
        %(digest)s::bytea[]) AS e),
work AS (
    INSERT INTO replaykit_work (workflow_id, name, queue, priority, part_key, parent, ready_at)
    SELECT %(workflow_id)s, %(name)s, %(queue)s, %(priority)s, %(part_key)s, %(parent)s, %(ready_at)s
    FROM run WHERE %(placed)s),
note AS (SELECT pg_notify('{CHANNEL}', '') FROM run)
SELECT (SELECT count(*) FROM run), (SELECT count(*) FROM note)
"""

def create_run(conn: Connection, workflow_id: str, name: str, status: Status, events: Sequence[Event],
               digests: Sequence[bytes], head: bytes | None, owner: int | None, placement: Placement | None) -> bool:
    """Create the run with ``events`` (its start first) and their checksums (``digests``), sealed
    with ``head`` if ``status`` ends it, queued if ``placement``; False if the id exists."""
    start = events[0]
    row = conn.execute(_CREATE, {
        "workflow_id": workflow_id, "name": name, "status": status.value, "at": start.at, "owner": owner,
        "seq": [e.seq for e in events], "step": [e.step for e in events], "kind": [e.kind for e in events],
        "name_": [e.name for e in events], "at_": [e.at for e in events], "outcome": [e.outcome for e in events],
        "encoding": [e.encoding for e in events],
        "text": [e.payload if isinstance(e.payload, str) else None for e in events],
        "bytes": [None if isinstance(e.payload, str) else e.payload for e in events],
        "digest": list(digests), "head": head,
        "placed": placement is not None,
        "queue": None if placement is None else placement.queue,
        "priority": 0 if placement is None else placement.priority,
        "part_key": None if placement is None else placement.key,
        "parent": None if placement is None else placement.parent,
        "ready_at": start.at if placement is None or placement.ready_at is None else placement.ready_at,
    }).fetchall()[0]
    return bool(row[0])


_END = f"""
WITH serial AS (SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(%(namespace)s, %(key)s)) AS l),
ins AS (
    INSERT INTO replaykit_events
    SELECT %(run)s::bigint, %(seq)s::integer, %(step)s::integer, %(kind)s::text, %(name)s::text,
           %(at)s::float8, %(outcome)s::text, %(encoding)s::text, %(text)s::text, %(bytes)s::bytea,
           %(digest)s::bytea
    FROM serial
    -- Correlated with serial, so that the row is locked after the advisory lock is taken (the order
    -- of every other write that takes both): uncorrelated, it would be an initplan run before it.
    WHERE EXISTS (SELECT FROM replaykit_runs WHERE id = %(run)s AND owner = %(token)s AND serial.locked = 1
                  FOR KEY SHARE)
    ON CONFLICT DO NOTHING
    RETURNING 1),
run AS (
    UPDATE replaykit_runs SET status = %(status)s, updated_at = %(at)s, head = %(head)s,
        custom_status = CASE WHEN %(set_custom)s THEN %(custom)s::text ELSE custom_status END
    WHERE id = %(run)s AND EXISTS (SELECT FROM ins)),
{ended_ctes("EXISTS (SELECT FROM ins)")},
note AS (SELECT pg_notify('{CHANNEL}', '') FROM ins)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM note)
"""


def end_run(conn: Connection, workflow_id: str, run: int, e: Event, digests: tuple[bytes, bytes], token: int,
            status: Status, custom_status: tuple[Any] | None) -> int:
    """Record the run's last event ``e`` (``digests``: its checksum and the run's seal) with its ending
    ``status`` (and ``custom_status``, a 1-tuple, if it changed): how many events were inserted, 0
    if the fence or a duplicate refused it."""
    assert status.is_terminal
    payload = e.payload
    row = conn.execute(_END, {
        "namespace": NAMESPACE, "key": int32_key(workflow_id), "run": run, "seq": e.seq, "step": e.step,
        "kind": e.kind, "name": e.name, "at": e.at, "outcome": e.outcome, "encoding": e.encoding,
        "text": payload if isinstance(payload, str) else None,
        "bytes": None if isinstance(payload, str) else payload,
        "digest": digests[0], "head": digests[1], "token": token, "status": status.value, "workflow_id": workflow_id,
        "set_custom": custom_status is not None,
        "custom": None if custom_status is None else json.dumps(custom_status[0]),
    }).fetchall()[0]
    return int(row[0])
