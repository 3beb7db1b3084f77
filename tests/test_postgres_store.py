"""What only the PostgreSQL store has: its schema's recognition and creation, its errors, its
connections (lost ones included), and psycopg staying out of ``import replaykit``.
The Store contract itself is tested for every store in test_store_conformance.py."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.history import OK, START, Event, Status
from replaykit.store import Store, open_store
from replaykit.store.postgres_schema import MIGRATED_TO, SCHEMA_VERSION

from conftest import PYTHON
from pgserver import PgServer


def _sql(url: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.encode())
        return cur.fetchall() if cur.description else []


def _tables(url: str) -> list[str]:
    return [str(r[0]) for r in _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def start(at: float = 1.0) -> Event:
    return Event(0, 0, START, "w", at, OK, "json", '{"args":[],"kwargs":{},"seed":1,"rules":2}')


def step(seq: int) -> Event:
    return Event(seq, seq, "activity", "act", 2.0, OK, "json", str(seq))


def test_importing_replaykit_does_not_import_psycopg(child_env: dict[str, str], tmp_path: Path) -> None:
    code = ("import sys, replaykit as rk\n"
            "from replaykit.store import open_store, SqliteStore\n"
            f"open_store({str(tmp_path / 's.db')!r}).close()\n"
            f"rk.Engine({str(tmp_path / 'e.db')!r}).close()\n"
            "print('psycopg' in sys.modules)\n")
    done = subprocess.run([PYTHON, "-c", code], env=child_env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_database_of_something_else_is_refused_untouched(pg_url: str) -> None:
    _sql(pg_url, "CREATE TABLE orders (id int)")
    with pytest.raises(rk.NotAStoreError, match="orders") as refused:
        open_store(pg_url)
    assert "search_path" in str(refused.value)
    assert _tables(pg_url) == ["orders"]


def test_a_replaykit_meta_table_of_someone_else_is_refused(pg_url: str) -> None:
    _sql(pg_url, "CREATE TABLE replaykit_meta (key text, value text)")
    with pytest.raises(rk.NotAStoreError, match="not written by replaykit"):
        open_store(pg_url)
    assert _tables(pg_url) == ["replaykit_meta"]


def test_a_store_of_a_newer_replaykit_is_refused_untouched(pg_url: str) -> None:
    open_store(pg_url).close()
    _sql(pg_url, "UPDATE replaykit_meta SET value = '99' WHERE key = 'schema_version'")
    before = _sql(pg_url, "SELECT key, value FROM replaykit_meta ORDER BY key")
    with pytest.raises(rk.StoreTooNewError, match="schema 99"):
        open_store(pg_url)
    assert _sql(pg_url, "SELECT key, value FROM replaykit_meta ORDER BY key") == before


def test_reading_an_empty_database_creates_nothing(pg_url: str) -> None:
    with pytest.raises(rk.StoreNotFoundError, match="no replaykit store"):
        open_store(pg_url, create=False)
    with pytest.raises(rk.StoreNotFoundError):
        rk.send_signal(pg_url, "w", "x")  # what every operation on an existing store does
    assert _tables(pg_url) == []


def test_a_missing_database_is_not_found(pg_server: PgServer) -> None:
    url = pg_server.url("no_such_database")
    with pytest.raises(rk.StoreNotFoundError, match="does not exist") as missing:
        open_store(url)
    assert "no_such_database" in str(missing.value) and "createdb" in str(missing.value)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://alice:s3cret@127.0.0.1:1/orders", "postgresql://alice:***@127.0.0.1:1/orders"),
    ("postgres:///orders?host=/nonexistent/dir&password=s3cret", "password=***"),
])
def test_an_unreachable_server_is_named_without_its_password(url: str, shown: str) -> None:
    with pytest.raises(rk.StoreError, match="cannot connect") as failed:
        open_store(url)
    assert shown in str(failed.value) and "s3cret" not in str(failed.value)
    assert "s3cret" not in repr(failed.value)


_OPENER = """
import os, sys, time
from replaykit.store import open_store
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
open_store(sys.argv[1]).close()
print("opened")
"""


def test_processes_creating_the_store_at_once_create_it_once(pg_url: str, tmp_path: Path,
                                                               child_env: dict[str, str]) -> None:
    go = tmp_path / "go"
    openers = [subprocess.Popen([PYTHON, "-c", _OPENER, pg_url, str(go)], env=child_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(0.5)  # all of them importing, then waiting for the go
    go.touch()
    outcomes = [opener.communicate(timeout=60) for opener in openers]
    assert [out for out, _ in outcomes] == ["opened\n"] * 4, [err for _, err in outcomes]
    assert _sql(pg_url, "SELECT value FROM replaykit_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def test_a_schema_of_its_own_beside_other_tables(pg_url: str) -> None:
    """The documented way to share a database with an application: a schema for replaykit."""
    _sql(pg_url, "CREATE TABLE orders (id int); CREATE SCHEMA replaykit")
    url = pg_url + "&options=-csearch_path%3Dreplaykit"
    with open_store(url) as store:
        store.create("a", "w", start())
    assert _tables(pg_url) == ["orders"]
    assert len(_sql(pg_url, "SELECT * FROM replaykit.replaykit_runs")) == 1


@pytest.mark.parametrize("durability, setting", [("crash", "off"), ("power", "on")])
def test_durability_is_synchronous_commit(pg_url: str, durability: str, setting: str) -> None:
    with open_store(pg_url, durability=durability) as store:
        assert store._read_one("SHOW synchronous_commit") == (setting,)  # type: ignore[attr-defined]


def _terminate(pg_url: str, pid: int) -> None:
    assert _sql(pg_url, f"SELECT pg_terminate_backend({pid}, 10000)") == [(True,)]


@pytest.mark.parametrize("durability, seen", [("crash", [1, 2]), ("power", [1])])
def test_a_batch_whose_connection_dies_never_commits_its_tail(pg_url: str, durability: str, seen: list[int]) -> None:
    """crash: each write of a batch commits on its own; power: the first does, the rest share one
    transaction. Either way, once a write failed, nothing after it in the batch is recorded."""
    with open_store(pg_url, durability=durability) as store, open_store(pg_url) as other:
        store.create("a", "w", start())
        store.batch()
        store.record("a", step(1))
        store.record("a", step(2))
        assert [e.seq for e in other.events("a")] == [0, *seen]  # power: step 2 waits for the commit
        _terminate(pg_url, store._writes._local.batch.conn.info.backend_pid)  # type: ignore[attr-defined]
        with pytest.raises(rk.StoreError, match="connection"):
            store.record("a", step(3))
        with pytest.raises(rk.StoreError, match="earlier write of this batch"):
            store.record("a", step(4 if durability == "crash" else 2))  # never without what failed
        with pytest.raises(rk.StoreError, match="none after"):
            store.commit()
        assert [e.seq for e in other.events("a")] == [0, *seen]
        following = seen[-1] + 1
        store.record("a", step(following))  # the next batch, on a new connection
        store.commit()
        assert [e.seq for e in other.events("a")] == [0, *seen, following]


def test_a_write_whose_connection_dies_raises_and_the_next_one_works(pg_url: str) -> None:
    with open_store(pg_url) as store:
        store.create("a", "w", start())
        # the store's connections only: an autovacuum worker on this database may exit by itself meanwhile
        for pid in [r[0] for r in _sql(pg_url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                               "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")]:
            _terminate(pg_url, int(pid))  # type: ignore[arg-type]
        with pytest.raises(rk.StoreError, match="connection"):
            store.record("a", step(1))
        store.record("a", step(1))
        assert [e.seq for e in store.events("a")] == [0, 1]


def test_locks_die_with_their_connection(pg_url: str) -> None:
    with open_store(pg_url) as store, open_store(pg_url) as other:
        assert store.try_lock("x")
        owner = other.lock_owner("x")
        assert owner is not None and "PostgreSQL backend pid" in owner
        pid = int(owner.split("backend pid ")[1].split(")")[0].split(",")[0])
        _terminate(pg_url, pid)
        assert other.lock_owner("x") is None and other.try_lock("x")  # the server released it
        with pytest.raises(rk.StoreError, match="connection"):
            store.try_lock("y")  # its holder learns that its locks are gone
        assert store.try_lock("y")  # on a new lock connection
        assert store.try_lock("x") is False


def _listeners(pg_url: str) -> list[int]:
    # this test's database only: the server is shared by the suite's parallel workers
    return [int(r[0]) for r in _sql(pg_url, "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "  # type: ignore[call-overload]
                                            "AND datname = current_database()")]


def test_a_change_while_the_listener_is_lost_is_not_missed(pg_url: str) -> None:
    with open_store(pg_url) as store, open_store(pg_url) as other:
        store.create("a", "w", start())
        store.changed()
        assert store.changed() is False
        [listener] = _listeners(pg_url)
        _terminate(pg_url, listener)
        other.set_status("a", Status.PAUSED, 2.0)  # its notification reaches nobody
        deadline = time.monotonic() + 10
        while not store.changed():
            assert time.monotonic() < deadline, "a change made while nobody listened went unnoticed"
            time.sleep(0.01)
        while _listeners(pg_url) in ([], [listener]):  # it listens again
            assert time.monotonic() < deadline, "the listener did not come back"
            time.sleep(0.05)
        store.changed()
        other.set_status("a", Status.RUNNING, 3.0)
        while not store.changed():
            assert time.monotonic() < deadline, "a change after the listener came back went unnoticed"
            time.sleep(0.01)


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_without_a_server_the_postgres_tests_fail_in_ci_and_skip_elsewhere(
        child_env: dict[str, str], ci: str, outcome: str) -> None:
    env = {**child_env, "PG_BINDIR": "/nonexistent", "CI": ci}
    done = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "-n", "0",
                           f"{__file__}::test_durability_is_synchronous_commit[crash-off]"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert outcome in done.stdout, done.stdout
    assert "no PostgreSQL server binaries" in done.stdout and "apt-get install postgresql" in done.stdout


def test_the_replay_checker_and_the_test_env_take_a_url(pg_url: str) -> None:
    from replaykit.testing import TestEnv, replay_all

    @rk.workflow(name="pg_naps")
    def pg_naps(ctx: rk.Context) -> rk.Flow[str]:
        yield rk.sleep(3600)
        return "rested"

    with TestEnv(db=pg_url) as env:
        assert env.run(pg_naps, workflow_id="n") == "rested"
    [report] = replay_all(pg_url)
    assert report.ok and report.workflow_id == "n"
    with pytest.raises(rk.WorkflowNotFoundError, match="postgresql://"):
        rk.send_signal(pg_url, "nobody", "go")


_OLD_OWNER = """
import sys
import replaykit as rk
from replaykit.history import OK, START, Event
from replaykit.store import open_store

def step(seq):
    return Event(seq, seq, "activity", "act", 2.0, OK, "json", '"old"')

store = open_store(sys.argv[1])
store.create("a", "w", Event(0, 0, START, "w", 1.0, OK, "json", '{"args":[],"kwargs":{},"seed":1,"rules":2}'))
assert store.try_lock("a")
store.record("a", step(1))
print(store._locks._conn.info.backend_pid, flush=True)
sys.stdin.readline()  # its lock connection is terminated, and another store takes the run over
def sent():
    store.send("a", step(2))
    store.confirm()
for write in (lambda: store.record("a", step(2)),
              lambda: store.record("a", step(2), status=rk.Status.COMPLETED),
              lambda: store.continue_as_new("a", step(2), step(0)),
              sent):
    try:
        write()
        print("recorded", flush=True)
    except rk.WorkflowLockedError as exc:
        print("refused:", exc, flush=True)
"""


def test_a_store_that_lost_its_lock_cannot_record_once_another_took_the_run(
        pg_url: str, child_env: dict[str, str]) -> None:
    """The fence: every write of a step checks, in its own statement, that the run is still this store's."""
    old = subprocess.Popen([PYTHON, "-c", _OLD_OWNER, pg_url], env=child_env, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert old.stdout is not None and old.stdin is not None
        lock_pid = old.stdout.readline().strip()
        assert lock_pid.isdigit(), old.communicate(timeout=30)
        _terminate(pg_url, int(lock_pid))
        with open_store(pg_url) as new:
            assert new.try_lock("a")  # it has not recorded anything yet: only the fence stops the old one
            out, err = old.communicate("go\n", timeout=30)
            refusals = out.splitlines()
            assert len(refusals) == 4 and all(line.startswith("refused:") for line in refusals), (out, err)
            assert "'a'" in refusals[0] and "another process took it over" in refusals[0]
            new.record("a", Event(2, 2, "activity", "act", 3.0, OK, "json", '"new"'))
            assert [(e.seq, e.payload) for e in new.events("a")] == [
                (0, start().payload), (1, '"old"'), (2, '"new"')]
            assert new.info("a").status is Status.RUNNING  # type: ignore[union-attr]
    finally:
        old.kill()
        old.wait(timeout=10)


def test_a_write_without_the_lock_is_refused_while_a_live_process_drives_the_run(pg_url: str) -> None:
    """A store that does not hold the run (rk.cancel of a pending run) records only while nobody drives it."""
    with open_store(pg_url) as driver, open_store(pg_url) as control:
        driver.create("a", "w", start(), status=Status.PENDING)
        assert driver.try_lock("a")
        with pytest.raises(rk.WorkflowLockedError, match="'a' is being driven by .*nothing was recorded"):
            control.record("a", step(1), status=Status.CANCELLED)
        driver.unlock("a")
        control.record("a", step(1), status=Status.CANCELLED)  # nobody drives it now
        assert [e.seq for e in driver.events("a")] == [0, 1]
        assert driver.info("a").status is Status.CANCELLED  # type: ignore[union-attr]


def test_a_write_without_the_lock_is_not_refused_by_the_stores_own_lock(pg_url: str) -> None:
    """An engine looks at a pending run under its lock on its driver thread while another thread
    cancels it through the same store: the store's own lock, taken or given back meanwhile, is not
    another live process (it was refused as one, on PostgreSQL only)."""
    def look(store: Store, workflow_id: str, stop: threading.Event) -> None:
        while not stop.is_set():
            if store.try_lock(workflow_id):
                store.unlock(workflow_id)

    with open_store(pg_url) as store:
        for i in range(10):
            store.create(f"r{i}", "w", start(), status=Status.PENDING)
            stop = threading.Event()
            looker = threading.Thread(target=look, args=(store, f"r{i}", stop))
            looker.start()
            try:
                time.sleep(0.01)
                store.record(f"r{i}", step(1), status=Status.CANCELLED)
            finally:
                stop.set()
                looker.join(timeout=10)
            assert store.info(f"r{i}").status is Status.CANCELLED  # type: ignore[union-attr]


def test_a_write_without_the_lock_fences_out_a_stale_owner(pg_url: str) -> None:
    """A store whose lock connection died, with nobody taking the run over, loses it to a write
    made without the lock (a cancel): it cannot record after the run's result."""
    with open_store(pg_url) as stale, open_store(pg_url) as control:
        stale.create("a", "w", start(), status=Status.PENDING)
        assert stale.try_lock("a")
        _terminate(pg_url, stale._locks._conn.info.backend_pid)  # type: ignore[attr-defined]
        control.record("a", step(1), status=Status.CANCELLED)
        with pytest.raises(rk.WorkflowLockedError, match="another process took it over"):
            stale.record("a", step(2))
        assert [e.seq for e in control.events("a")] == [0, 1]


def test_a_sent_step_of_a_stale_owner_is_refused_when_confirmed(pg_url: str) -> None:
    """``send`` returns before the server answers: the fence's refusal comes with ``confirm``."""
    with open_store(pg_url) as stale, open_store(pg_url) as new:
        stale.create("a", "w", start())
        assert stale.try_lock("a")
        stale.send("a", step(1))
        _terminate(pg_url, stale._locks._conn.info.backend_pid)  # type: ignore[attr-defined]
        assert new.try_lock("a")
        stale.send("a", step(2))
        with pytest.raises(rk.WorkflowLockedError, match="'a' is no longer driven by this process.*Event 2"):
            stale.confirm()
        new.record("a", Event(2, 2, "activity", "act", 3.0, OK, "json", '"new"'))
        assert [(e.seq, e.payload) for e in new.events("a")] == [(0, start().payload), (1, step(1).payload),
                                                                  (2, '"new"')]


def test_a_sent_step_is_handed_whole_to_the_socket(pg_url: str) -> None:
    """psycopg's connections do not block: libpq sends what the socket takes and keeps the rest. A
    sent step of megabytes must not wait in libpq's buffer until its confirmation is asked for
    (it was sent one buffer a second then: 17 s a step of 5 MB)."""
    from replaykit.store.postgres_libpq import event_sent, send_event

    with open_store(pg_url) as store:
        store.create("a", "w", start())
        assert store.try_lock("a")
        conn = store._pool.take()  # type: ignore[attr-defined]
        try:
            big = Event(1, 1, "activity", "act", 2.0, OK, "json", '"' + "x" * 5_000_000 + '"')
            run = store._run("a")  # type: ignore[attr-defined]
            digest = store.digest_of(conn, "a", run, big, keep=False)  # type: ignore[attr-defined]
            send_event(conn, run, big, store._tokens["a"], digest)  # type: ignore[attr-defined]
            assert conn.pgconn.flush() == 0  # nothing of it left to send
            assert event_sent(conn) == 1
        finally:
            store._pool.give(conn)  # type: ignore[attr-defined]
        assert [e.seq for e in store.events("a")] == [0, 1]


_NEXT_STEP_STARTED: list[int] = []


@rk.activity(name="fenced.first")
def _taken_over_meanwhile(pg_url: str) -> int:
    """While this activity runs, the engine's lock dies and another store takes the run."""
    driving = _ENGINES[0].store
    _terminate(pg_url, driving._locks._conn.info.backend_pid)  # type: ignore[attr-defined]
    taker = open_store(pg_url)
    _TAKERS.append(taker)
    assert taker.try_lock("fenced")
    return 1


@rk.activity(name="fenced.second")
def _next_step(i: int) -> int:
    _NEXT_STEP_STARTED.append(i)
    return i


@rk.workflow(name="fenced")
def _two_steps(ctx: rk.Context, pg_url: str):  # type: ignore[no-untyped-def]
    first = yield _taken_over_meanwhile(pg_url)
    return (yield _next_step(first))


_ENGINES: list[rk.Engine] = []
_TAKERS: list[Store] = []


def test_no_step_starts_after_a_step_the_store_refused(pg_url: str) -> None:
    """The engine sends a step's result and moves the workflow on during the round trip, but the
    next activity starts only once the step is recorded: here it never is (another store took the run)."""
    _NEXT_STEP_STARTED.clear()
    with rk.Engine(pg_url, activity_threads=0) as engine:
        _ENGINES[:] = [engine]
        handle = engine.start(_two_steps, pg_url, workflow_id="fenced")
        with pytest.raises(rk.WorkflowLockedError, match="no longer driven by this process"):
            handle.result(timeout=60)
    try:
        assert _NEXT_STEP_STARTED == []
        assert [e.seq for e in _TAKERS[0].events("fenced")] == [0]
    finally:
        _TAKERS.pop().close()


def _reads_open(pg_url: str) -> int:
    return int(_sql(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "  # type: ignore[call-overload]
                            "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                            "AND (state <> 'idle' OR backend_xmin IS NOT NULL)")[0][0])


def test_a_page_read_ahead_holds_nothing_open_on_the_server(pg_url: str) -> None:
    """While a page replays, the next one is read ahead; even a page too big for the socket's buffer
    is read whole at once, so an iterator left half-way (still referenced) pins no statement and no
    snapshot on the server."""
    big = "x" * 20_000
    history = [Event(n, n, "activity", "act", 2.0, OK, "json", f'"{big}{n}"') for n in range(1, 3 * 256)]
    with open_store(pg_url) as store:
        store.create("h", "w", start(), history=history)
        reading = store.events("h")
        assert next(reading).seq == 0  # the second page (5 MB) is asked for now
        deadline = time.monotonic() + 30
        while _reads_open(pg_url):
            assert time.monotonic() < deadline, "a read stays open on the server"
            time.sleep(0.05)
        time.sleep(0.5)
        assert _reads_open(pg_url) == 0
        assert [e.seq for e in reading] == list(range(1, 3 * 256))  # and it goes on, in order


def _waiting_for_a_lock(pg_url: str) -> bool:
    return bool(_sql(pg_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                             "AND datname = current_database()"))


def test_a_pause_racing_a_runs_end_never_overwrites_it(pg_url: str) -> None:
    """A run's end is one statement (store/postgres_end.py); it takes the run's serialising lock as a
    pause does. A pause that read "running" first and commits while the end waits is overwritten
    by the end; a pause after the end is refused."""
    import psycopg

    from replaykit.store.postgres_conn import int32_key
    from replaykit.store.postgres_schema import NAMESPACE

    with open_store(pg_url) as store, psycopg.connect(pg_url) as pause:
        store.create("a", "w", start())
        assert store.try_lock("a")
        store.record("a", step(1))
        pause.execute("SELECT pg_advisory_xact_lock(%s, %s)", (NAMESPACE, int32_key("a")))  # as set_status does
        assert pause.execute("SELECT status FROM replaykit_runs").fetchall() == [("running",)]
        end = Event(2, 0, "result", "", 5.0, OK, "json", '"done"')
        ending = threading.Thread(target=store.record, args=("a", end), kwargs={"status": Status.COMPLETED})
        ending.start()
        deadline = time.monotonic() + 30
        while not _waiting_for_a_lock(pg_url):
            assert time.monotonic() < deadline and ending.is_alive()
            time.sleep(0.01)
        pause.execute("UPDATE replaykit_runs SET status = 'paused'")
        pause.commit()
        ending.join(timeout=30)
        info = store.info("a")
        assert info is not None and info.status is Status.COMPLETED and info.updated_at == 5.0
        assert [e.seq for e in store.events("a")] == [0, 1, 2]
        with pytest.raises(rk.IllegalTransitionError, match="completed"):
            store.set_status("a", Status.PAUSED, 6.0)


def test_a_version_1_store_is_migrated_and_its_runs_kept(pg_url: str) -> None:
    with open_store(pg_url) as store:
        store.create("a", "w", start())
    _sql(pg_url, "DROP TABLE replaykit_work, replaykit_queues, replaykit_workers; "
                 "ALTER TABLE replaykit_runs DROP COLUMN owner, DROP COLUMN head; "
                 "ALTER TABLE replaykit_events DROP COLUMN digest; ALTER TABLE replaykit_signals DROP COLUMN digest; "
                 "UPDATE replaykit_meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(rk.MigrationRequiredError):
        open_store(pg_url)
    with open_store(pg_url, migrate=True) as store:
        assert store.try_lock("a")
        store.record("a", step(1))
        assert [e.seq for e in store.events("a")] == [0, 1]
    assert _sql(pg_url, "SELECT value FROM replaykit_meta WHERE key = 'schema_version'") == [(str(MIGRATED_TO),)]


def test_a_takeover_waits_for_the_old_owners_open_batch_and_then_fences_it(pg_url: str) -> None:
    """With "power", a batch's writes share one open transaction: its checks hold the run's row
    against a new owner's stamp (not against status changes from other processes) until it commits."""
    with open_store(pg_url, durability="power") as old, open_store(pg_url) as new, \
            open_store(pg_url) as control:
        old.create("a", "w", start())
        assert old.try_lock("a")
        old.batch()
        old.record("a", step(1))  # the batch's first write commits on its own
        old.record("a", step(2))  # in the batch's open transaction
        _terminate(pg_url, old._locks._conn.info.backend_pid)  # type: ignore[attr-defined]
        paused = threading.Thread(target=control.set_status, args=("a", Status.PAUSED, 3.0))
        paused.start()
        paused.join(timeout=30)
        assert not paused.is_alive()  # a status change does not wait for the batch
        taken: list[bool] = []
        taker = threading.Thread(target=lambda: taken.append(new.try_lock("a")))
        taker.start()
        old.commit()  # the step checked under the old token is recorded; the stamp comes after it
        taker.join(timeout=30)
        assert taken == [True]
        assert [e.seq for e in new.events("a")] == [0, 1, 2]
        with pytest.raises(rk.WorkflowLockedError, match="another process took it over"):
            old.record("a", step(3))
        old.commit()
        new.record("a", step(3))
        assert [e.seq for e in new.events("a")] == [0, 1, 2, 3]
