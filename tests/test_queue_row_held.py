"""A worker given a queue's limits stores them in the queue's row; a transaction left open on that row
(an operator's session, not a worker's) made its constructor wait for ever. It now waits twice its
lease, then names the sessions idle in a transaction. Real PostgreSQL server."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import replaykit as rk


@rk.workflow(name="qrh_nothing")
def nothing(ctx: rk.Context) -> Any:
    return None
    yield


@pytest.mark.timeout(60)
def test_a_queue_row_held_by_an_open_transaction_is_named_not_waited_for_for_ever(pg_url: str) -> None:
    with rk.Worker(pg_url, workflows=[nothing], queues=[rk.Queue("q", concurrency=1)], heartbeat=0.2, lease=1.0):
        pass  # the queue's row exists
    with psycopg.connect(pg_url) as operator:  # a transaction, left open
        [(pid,)] = operator.execute("SELECT pg_backend_pid()").fetchall()
        operator.execute("SELECT * FROM replaykit_queues WHERE name = 'q' FOR UPDATE")
        with pytest.raises(rk.StoreError, match=rf"queue 'q' were not stored: .* locked for 2 s.* pid {pid} ") as error:
            rk.Worker(pg_url, workflows=[nothing], queues=[rk.Queue("q", concurrency=2)], heartbeat=0.2, lease=1.0)
        assert "nothing was changed" in str(error.value)
        operator.rollback()
    with rk.Worker(pg_url, workflows=[nothing], queues=[rk.Queue("q", concurrency=2)], heartbeat=0.2, lease=1.0):
        pass
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT concurrency FROM replaykit_queues WHERE name = 'q'").fetchall() == [(2,)]
