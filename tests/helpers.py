"""Workflows and activities shared by tests, importable from subprocesses too."""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import replaykit as rk


def line_of(fn: Callable[..., Any], marker: str) -> int:
    """The line of ``fn``'s source that holds ``marker`` (a comment)."""
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, text in enumerate(lines) if marker in text)


def journal(path: str, line: str) -> None:
    """Append a line with one write(2): survives SIGKILL of the writer."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def as_user(uid: int, gid: int, action: Callable[[], object]) -> str:
    """Run ``action()`` in a forked child as ``uid``/``gid`` (the tests run as root): what it returned, as
    text, or the error it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            answer = str(action())
        except BaseException as exc:  # noqa: BLE001
            answer = f"{type(exc).__name__}: {exc}"
        os.write(write, answer.encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        answer = f.read()
    os.waitpid(pid, 0)
    return answer


def same_exactly(a: object, b: object) -> bool:
    """The same type, and the same repr (which shows a datetime's fold and zone, where == does not)."""
    return type(a) is type(b) and repr(a) == repr(b)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` was awaited after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def driver_turn(engine: rk.Engine) -> None:
    """Wait until the engine's driver has taken every job posted before this call (it takes them in order)."""
    done = threading.Event()
    engine._post(done.set)
    assert done.wait(timeout=20), "the engine's driver did not take its jobs"


def timers_fired(engine: rk.Engine) -> None:
    """Wait until the engine's driver has fired the timers due on its clock (a fake clock the test just
    moved) and taken up what they left it to do: a callback due now fires after them (ties fire in the
    order they were set), and each job posted after that runs after the jobs queued before it."""
    fired = threading.Event()
    engine._call_at(engine._clock.now(), fired.set)
    assert fired.wait(timeout=20), "the engine's driver did not fire its due timers"
    for _ in range(2):
        driver_turn(engine)


def read_journal(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def rechain(db: str | os.PathLike[str]) -> None:
    """Recompute every checksum of a store (each event's, each ended run's seal, each signal's) with
    the store's key: what a forger who holds the chain's key could do after changing a row, so that
    the test sees what stands behind the chain (the signatures of pickled values)."""
    target = os.fspath(db)
    if target.startswith("postgresql://"):
        import psycopg

        from replaykit.store import postgres_schema
        from replaykit.store.postgres import PostgresStore

        with PostgresStore(target) as store, psycopg.connect(target, autocommit=True) as conn:
            postgres_schema.checksum_all(conn, store.chain)
        return
    import sqlite3

    from replaykit.store import sqlite_schema

    with rk.SqliteStore(target) as store:
        links = store.chain()
    conn = sqlite3.connect(target)
    try:
        with conn:
            sqlite_schema.checksum_all(conn, lambda: links)
    finally:
        conn.close()


@rk.activity
def add(a: int, b: int) -> int:
    return a + b


@rk.workflow
def adder(ctx: rk.Context, n: int):
    total = 0
    for i in range(n):
        total = yield add(total, i)
    return total


@rk.workflow
def waits_for_approval(ctx: rk.Context, timeout: float | None = None):
    answer = yield rk.wait_signal("approved", timeout=timeout)
    return {"answer": answer}


SLOW_MODULE = """
import time
import replaykit as rk

@rk.activity
def crawl(seconds: float) -> float:
    time.sleep(seconds)
    return seconds

@rk.workflow(name="slowmod.slow")
def slow(ctx, seconds):
    return (yield crawl(seconds))
"""  # slowmod.py: a workflow whose one activity sleeps as long as it is asked, for worker processes


def lose_a_commit(engine: rk.Engine, when: Callable[[], bool]) -> list[bool]:
    """The first commit of the engine's driver for which ``when()`` holds is rolled back by SQLite (as on
    an I/O error) before it is asked to commit: none of the batch is recorded, and commit raises."""
    commit = engine.store.commit
    lost: list[bool] = []

    def failing() -> None:
        conn = engine.store._local.conn  # type: ignore[attr-defined]
        if not lost and when() and conn.in_transaction:
            lost.append(True)
            conn.execute("ROLLBACK")
        commit()

    engine.store.commit = failing  # type: ignore[method-assign]
    return lost


def terminate_backend(url: str, pid: int) -> None:
    """End PostgreSQL backend ``pid`` from another connection, and wait (10 s at most) until it is gone."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchall() == [(True,)]


def lose_a_pg_commit(engine: rk.Engine, url: str, when: Callable[[], bool], at: str = "commit") -> list[bool]:
    """The PostgreSQL counterpart of :func:`lose_a_commit`: the first time ``when()`` holds on the engine's
    driver thread, the backend of its group-commit batch's connection is terminated from another connection
    (as a server restart or a network cut would end it), so the server rolls the open transaction back.

    ``at="commit"``: just before the driver's commit, and only while a batch transaction is open (with
    ``durability="power"`` every write of a batch but its first is in it; with ``"crash"`` none is: each
    write commits alone, and nothing is ever open at commit). ``at="write"``: just before one of the batch's
    writes (either mode), which then fails, as does the rest of the batch and its commit; what was written
    before it in the batch is recorded with ``"crash"`` (and only the first write with ``"power"``).
    ``at="read"``: just before a read the driver makes on the batch's connection. ``at="restart"``: just
    before a commit (open transaction or not), every client connection to the database is ended, the
    engine's lock connection and idle pooled ones too, as a server restart ends them."""
    store = engine.store
    writes = store._writes  # type: ignore[attr-defined]
    lost: list[bool] = []

    def batch() -> Any:
        return getattr(writes._local, "batch", None) if threading.current_thread() is engine._thread else None

    def kill(conn: Any) -> None:
        lost.append(True)
        terminate_backend(url, conn.info.backend_pid)

    if at == "restart":
        commit = store.commit

        def restarting_commit() -> None:
            if not lost and batch() is not None and when():
                lost.append(True)
                import psycopg

                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = "
                                 "current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
            commit()

        store.commit = restarting_commit  # type: ignore[method-assign]
    elif at == "commit":
        commit = store.commit

        def failing_commit() -> None:
            b = batch()
            if not lost and b is not None and b.begun and b.conn is not None and when():
                kill(b.conn)
            commit()

        store.commit = failing_commit  # type: ignore[method-assign]
    elif at == "read":
        from contextlib import contextmanager

        conn_for = writes.conn

        @contextmanager
        def failing_conn() -> Any:
            b = batch()
            if not lost and b is not None and b.lost is None and when():
                kill(writes._batch_conn(b))
            with conn_for() as conn:
                yield conn

        writes.conn = failing_conn
    else:
        from contextlib import contextmanager

        write = writes.write

        @contextmanager
        def failing_write(*args: Any, **kwargs: Any) -> Any:
            b = batch()
            if not lost and b is not None and b.lost is None and when():
                kill(writes._batch_conn(b))
            with write(*args, **kwargs) as conn:
                yield conn

        writes.write = failing_write
    return lost


# Another engine's recover() in a loop, until it drives run "x" (it prints "took") or argv[3] seconds have
# passed ("left"); argv[2] is the test module that defines x's workflow.
RECOVERER = """
import importlib, sys, time
import replaykit as rk
importlib.import_module(sys.argv[2])
with rk.Engine(sys.argv[1], poll_interval=0.02) as engine:
    deadline = time.monotonic() + float(sys.argv[3])
    while "x" not in engine._runs and time.monotonic() < deadline:
        engine.recover()
        time.sleep(0.02)
    print("took" if "x" in engine._runs else "left", flush=True)
"""


def turn_ending_after(engine: rk.Engine, post: Callable[[], None]) -> None:
    """Make the first job ``post()`` posts the last of a driver turn (the 256th: ``driver._JOBS_PER_TURN``), so
    that what that job posts, and the jobs ``post()`` posts after it, go to the next turn. The turn begins with
    a job that holds it while ``post()`` runs (posted once a commit is done: nothing of an earlier turn is
    before it), then 254 no-ops."""
    started, hold = threading.Event(), threading.Event()

    def holder() -> None:
        started.set()
        hold.wait(10)

    engine._post(lambda: engine._later(lambda: engine._post(holder)))  # type: ignore[attr-defined]
    assert started.wait(10), "the engine's driver did not begin the turn"
    for _ in range(254):
        engine._post(lambda: None)
    post()
    hold.set()
