"""Worker mode on SQLite with real processes: every process of one deploy agrees on its code version,
and a worker restarted with its fixed id waits for a peer reaping its dead last life. Found by a fleet
campaign (SIGKILLed workers restarted with fixed ids, a busy store); both tests failed before their fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ACTIVITY_WITH_SET = textwrap.dedent("""
    import replaykit as rk

    @rk.activity
    def classify(status: str) -> bool:
        return status in {"ok", "done", "shipped", "paid", "closed"}

    @rk.workflow(name="fleetrev.flow")
    def flow(ctx, status):
        return (yield classify(status))
""")


def _version_in_process(tmp_path, seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=os.pathsep.join([REPO, str(tmp_path)]))
    out = subprocess.run([sys.executable, "-c", "import fleetrevmod; from replaykit.worker import code_version; "
                          "print(code_version([fleetrevmod.flow]))"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_code_version_is_the_same_in_every_process_running_the_same_code(tmp_path):
    """Workers of one deploy must agree on the default code version (a problem run is left by
    "workers of this version"). An activity testing membership in a set literal of strings compiles
    to a frozenset constant whose repr follows the process's string hash seed: since the default
    version digests the activities a workflow names, each worker process reports its own version."""
    (tmp_path / "fleetrevmod.py").write_text(ACTIVITY_WITH_SET)
    versions = {_version_in_process(tmp_path, seed) for seed in ("1", "2", "3", "4")}
    assert len(versions) == 1, versions


FIXED_ID_MODULE = textwrap.dedent("""
    import replaykit as rk

    @rk.activity
    def ping(x: int) -> int:
        return x

    @rk.workflow(name="fleetfix.flow")
    def flow(ctx, x):
        return (yield ping(x))
""")


def _worker_with_fixed_id(tmp_path, db: str, then: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(tmp_path)]))
    code = ("import os, signal, sys, replaykit as rk, fleetfixmod\n"
            "try:\n"
            f"    w = rk.Worker({db!r}, workflows=[fleetfixmod.flow], queues=['q'], worker_id='pod-0')\n"
            "except rk.StoreError as exc:\n"
            "    print('REFUSED', exc, flush=True); sys.exit(3)\n"
            "print('UP', flush=True)\n" + then)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_worker_restarted_with_its_fixed_id_is_not_refused_while_a_peer_reaps_its_dead_predecessor(tmp_path):
    """Campaign: a worker with --worker-id w4 was SIGKILLed and restarted at once while the store was
    busy (another connection's write transaction); the restart exited with "worker id 'w4' is in use
    by a live process" although no process of that id was alive. A peer's reap_workers takes the
    dead worker's liveness lock, then waits (up to the 10 s busy timeout) for the write lock to
    release its runs, holding the liveness lock all along: register_worker's try_acquire fails and
    takes that for a live owner. Expected: the restart waits for the reap, and starts once the store
    is free (here after 3 s)."""
    import sqlite3
    import threading

    import replaykit as rk
    from replaykit.store import SqliteStore

    (tmp_path / "fleetfixmod.py").write_text(FIXED_ID_MODULE)
    db = str(tmp_path / "s.db")
    rk.Client(db).close()
    first = _worker_with_fixed_id(tmp_path, db, "os.kill(os.getpid(), signal.SIGKILL)\n")  # pod-0 dies
    assert "UP" in first.stdout, first.stdout + first.stderr

    peer = SqliteStore(db)  # another worker's store: its heartbeat reaps the dead pod-0
    blocker = sqlite3.connect(db, isolation_level=None, timeout=30, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")  # a long writer (a backup, an sqlite3 shell) for a few seconds
    reaped: list[list[str]] = []
    reaper = threading.Thread(target=lambda: reaped.append(peer.reap_workers(30.0)))
    reaper.start()
    time.sleep(0.3)  # the reap holds pod-0's lock and waits for the store
    done_writing = threading.Timer(3.0, lambda: blocker.execute("ROLLBACK"))
    done_writing.start()
    try:
        restarted = _worker_with_fixed_id(tmp_path, db, "w.stop()\n")  # the operator restarts pod-0
    finally:
        done_writing.join(30)
        reaper.join(30)
        blocker.close()
        peer.close()
    assert reaped == [["pod-0"]]
    assert "UP" in restarted.stdout, restarted.stdout + restarted.stderr
