"""A store that goes away and comes back (a PostgreSQL restart, sessions ended, a refused write): what
a worker and a client do meanwhile and after. Found by a crash and outage campaign of real processes;
each test failed before its fix."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import replaykit as rk

from pgserver import PgServer

# -- 1. a run whose hand-back failed during a database outage stays held by a live worker ----------

_entered = threading.Event()
_go = threading.Event()


@rk.activity
def _blocking(n: int) -> int:
    _entered.set()
    _go.wait(30)
    return n


@rk.workflow
def _one_step(ctx: rk.Context, n: int) -> Any:
    got = yield _blocking(n)
    return got + 1


@pytest.fixture
def outage(pg_server: PgServer, pg_url: str) -> Iterator[tuple[str, Any]]:
    """The test database's URL and a context: every session of the database ended, and new ones
    refused until the context exits (as a server restart, seen from the clients)."""
    name = pg_url.split("///", 1)[1].split("?", 1)[0]
    admin = psycopg.connect(pg_server.url("postgres"), autocommit=True)

    class Outage:
        def __enter__(self) -> None:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

        def __exit__(self, *exc: object) -> None:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")

    try:
        yield pg_url, Outage()
    finally:
        admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        admin.close()


@pytest.mark.timeout(60)
def test_a_run_whose_hand_back_failed_in_an_outage_is_not_held_for_ever(outage: tuple[str, Any]) -> None:
    """An activity ends while the database is unreachable: the worker's commit fails, "every run of
    this engine stops", and handing the run back fails too (``WorkerEngine._hand_back`` logs "it stays
    marked as ours: the registry releases it when we stop or die"). But the worker neither stops nor
    dies: once the database is back its heartbeat registers it again under the same id, so nobody
    reaps it and the work row keeps ``worker = <this worker>`` for as long as the worker lives. The
    run is never taken again (by this worker or another), and in a limited queue it keeps a slot.
    Expected: the run is driven on and completes once the database is back (docs/scale-out.md: a
    worker that lost its runs has them released; docs/postgres.md: workers reconnect)."""
    url, cut = outage
    _entered.clear()
    _go.clear()
    with rk.Worker(url, workflows=[_one_step], queues=["q"], heartbeat=0.2) as worker:
        with rk.Client(url) as client:
            client.start(_one_step, 1, workflow_id="a", queue="q")
            assert _entered.wait(15)
            with cut:
                _go.set()  # the activity ends while nothing can be written
                time.sleep(2.0)
        with rk.Client(url) as client:  # the database is back
            try:
                result = client.handle("a").result(timeout=15)
            except rk.ResultTimeoutError:
                held = client.store._read("SELECT worker FROM replaykit_work WHERE workflow_id = 'a'")  # type: ignore[attr-defined]
                registered = [w.worker_id for w in client.workers()]
                pytest.fail(f"run 'a' never completed: its work row is still held by {held} "
                            f"(worker {worker.worker_id} is alive and registered: {registered})")
            assert result == 2


# -- 2. a worker spins while the database is unreachable ------------------------------------------


@rk.workflow
def _idle_flow(ctx: rk.Context) -> Any:
    yield rk.sleep(0)
    return 1


@pytest.mark.timeout(60)
def test_a_worker_waits_between_attempts_while_the_database_is_unreachable(
        outage: tuple[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """While the database refuses connections, an idle worker's claiming loop retries with no pause:
    ``Worker._serve`` catches the ``StoreError``, then ``_idle`` returns at once because
    ``store.changed()`` answers True while the listening connection is lost (docs/postgres.md), so the
    loop tries to connect, and logs a warning, about every 15 ms (60-150 a second on this machine).
    A fleet of workers hammers the server as it comes back and floods its logs. Expected: the
    worker waits about its poll interval (0.5 s) or heartbeat between attempts, as it does when idle."""
    url, cut = outage
    with rk.Worker(url, workflows=[_idle_flow], queues=["q"], heartbeat=0.5, poll_interval=0.5) as worker:
        time.sleep(0.5)
        caplog.clear()
        with caplog.at_level("WARNING", logger="replaykit"):
            with cut:
                time.sleep(3.0)
            attempts = [r for r in caplog.records if "cannot connect" in r.getMessage()
                        and worker.worker_id in r.getMessage()]
    # heartbeat 0.5 s and poll 0.5 s: about 6 attempts in 3 s, at most one more per wake-up
    assert len(attempts) <= 20, f"{len(attempts)} connection attempts (each a warning) in 3 s of outage"


# -- 3. a client's first call after its sessions were ended (a server restart) fails ---------------


@rk.workflow
def _waits(ctx: rk.Context) -> Any:
    got = yield rk.wait_signal("x")
    return got


@pytest.mark.timeout(60)
def test_a_result_wait_outlives_a_server_restart_that_already_ended(pg_server: PgServer, pg_url: str) -> None:
    """Minor. After the server restarts (here: every session of the client ended, the server up
    again at once), the client's next call reuses a dead pooled connection and raises ``StoreError``
    ("the connection to the database failed or was lost (terminating connection due to
    administrator command)"), although the server is reachable; the call after works. So
    ``handle.result(timeout=10)`` of a run that completes fails instead of waiting. Expected: a read
    on a dead idle connection is retried once on a fresh one (the store's pool hands out connections
    it has not checked)."""
    name = pg_url.split("///", 1)[1].split("?", 1)[0]
    with rk.Worker(pg_url, workflows=[_waits], queues=["q"], heartbeat=0.2), rk.Client(pg_url) as client:
        handle = client.start(_waits, workflow_id="r", queue="q")
        assert handle.status() == rk.Status.RUNNING
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                          f"AND application_name LIKE 'replaykit pid {os.getpid()}%'")
        time.sleep(0.5)
        with rk.Client(pg_url) as other:
            other.signal("r", "x", 7)
        assert handle.result(timeout=10) == 7


@rk.workflow
def _naps(ctx: rk.Context) -> Any:
    yield rk.sleep(0.3)
    return "woke"


@pytest.mark.timeout(60)
def test_a_hand_back_that_failed_once_is_released_at_the_next_heartbeat(db: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refuses one hand-back (a parked run given back to the queue) while the worker keeps its
    registry place: the run stayed marked as the worker's, so nobody claimed it again until the worker
    stopped. The next heartbeat now releases what is marked ours and not held."""
    with rk.Worker(db, workflows=[_naps], queues=["q"], heartbeat=0.2, poll_interval=0.1) as worker:
        real, failed = worker.store.release, []

        def release_once(*args: Any) -> None:
            if not failed:
                failed.append(args)
                raise rk.StoreError("refused once, as a store in trouble would")
            real(*args)

        monkeypatch.setattr(worker.store, "release", release_once)
        with rk.Client(db) as client:
            handle = client.start(_naps, workflow_id="n", queue="q")
            assert handle.result(timeout=15) == "woke"
    assert failed, "the hand-back was never refused: the test did not test anything"
