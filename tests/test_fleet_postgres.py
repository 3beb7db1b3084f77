"""A fleet on PostgreSQL: a client and worker processes sharing one database (docs/scale-out.md,
docs/postgres.md), through what chaos campaigns found: a worker restarted with its fixed id, one that
is stopped and woken after its runs were taken over, and ones that hang inside a transaction. The worker
processes are real (`replaykit worker`, tests/worker_app.py).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from worker_app import quick

import replaykit as rk

from conftest import PYTHON


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Workers:
    """`replaykit worker` processes of one test (module tests/worker_app.py), killed at its end."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url, self.env = url, env
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *options: str) -> subprocess.Popen[str]:
        return self.spawn("-m", "replaykit", "worker", self.url, "-m", "worker_app", *options)

    def spawn(self, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([PYTHON, *argv], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        self.procs.append(proc)
        assert proc.stdout is not None and "serving" in proc.stdout.readline()
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.txt"
    path.touch()
    return path


@pytest.fixture
def workers(pg_url: str, child_env: dict[str, str], ledger: Path) -> Iterator[Workers]:
    w = Workers(pg_url, dict(child_env, RK_LEDGER=str(ledger)))
    yield w
    w.close()


def test_a_worker_restarted_with_its_fixed_id_is_listed_as_it_is_now(pg_url: str, workers: Workers) -> None:
    """docs/scale-out.md: `client.workers()` / `replaykit workers` list who serves and with which code
    version. A worker started with a fixed `--worker-id` (as under systemd or a StatefulSet), killed and
    started again at once with new code and another queue, is listed as the new process (before, the
    upsert updated only heartbeat_at and backend, and the dead process's pid, queues and version stayed)."""
    with rk.Client(pg_url) as client:
        old = workers.start("-q", "main", "--worker-id", "w1", "--code-version", "v1")
        assert [(w.pid, w.version) for w in client.workers()] == [(old.pid, "v1")]
        old.kill()
        old.wait(timeout=10)
        new = workers.start("-q", "main", "-q", "urgent", "--worker-id", "w1", "--code-version", "v2")
        time.sleep(1.0)  # a few heartbeats of the new process
        listed = [(w.worker_id, w.pid, w.version, w.queues) for w in client.workers()]
        assert listed == [("w1", new.pid, "v2", ("main", "urgent"))], f"live pid {new.pid}; registry says {listed}"


def test_a_stopped_worker_woken_after_its_runs_were_taken_over_starts_no_activity_already_recorded(
        pg_url: str, workers: Workers, ledger: Path) -> None:
    """docs/scale-out.md, "The process hangs": a worker silent for `lease` seconds is cut off and its
    runs are taken over; "a step that was recorded never runs again", and docs/durability.md bounds a
    re-execution to the time from an activity's end to its result's commit. Here a worker holds two
    runs, one activity running and the next queued for its only activity thread, and is SIGSTOPped.
    Another worker takes both over and completes them. When the stopped worker is SIGCONTed, it starts
    the queued activity must not start: its result was recorded by another worker seconds before (the
    executor's gate asks the worker, which waits for a heartbeat that confirms its place)."""
    with rk.Client(pg_url) as client:
        zombie = workers.start("-q", "main", "--activity-threads", "1", "--drivers", "1", "--heartbeat", "0.2",
                               "--lease", "1")
        client.start(quick, 1, 2.0, workflow_id="long", queue="main")
        wait_for(lambda: [w.runs for w in client.workers()] == [("long",)])
        time.sleep(0.3)  # its activity runs (2 s) on the worker's only activity thread
        client.start(quick, 2, 0.0, workflow_id="queued", queue="main")
        wait_for(lambda: [w.runs for w in client.workers()] == [("long", "queued")])
        time.sleep(0.3)  # its activity waits for the thread
        zombie.send_signal(signal.SIGSTOP)
        stopped = time.time()
        workers.start("-q", "main", "--heartbeat", "0.2", "--lease", "1")  # cuts the silent one off, takes over
        assert client.handle("queued").result(timeout=30) == 3
        assert client.handle("long").result(timeout=30) == 2
        recorded = next(e.at for e in client.store.events("queued") if e.kind == "activity")
        zombie.send_signal(signal.SIGCONT)
        time.sleep(3.0)  # what the woken worker does now
        executions = [line.split() for line in ledger.read_text().splitlines()]
        late = [(pid, float(start) - recorded) for name, n, pid, start, _ in executions
                if n == "2" and float(start) > recorded]
        assert stopped < recorded
        assert not late, (f"activity quick(2) of 'queued' started {late[0][1]:.2f} s after its result was "
                          f"recorded, by the woken worker pid {late[0][0]} (stopped pid {zombie.pid})")


# A worker of tests/worker_app.py serving the limited queue "lim" (as `replaykit worker --limit lim=1` does),
# whose process stops (SIGSTOP: a hang, a freeze) at one chosen moment: inside its claim's transaction, once
# it has locked the queue's row (the first claim that finds a candidate after the flag file appears).
_HANGS_IN_CLAIM = """
import os, signal, sys
import replaykit as rk
from replaykit.store import postgres_work
from worker_app import WORKFLOWS

admit = postgres_work.admit
def hang_then_admit(*args, **kwargs):
    if os.path.exists(sys.argv[2]):
        os.unlink(sys.argv[2])
        os.kill(os.getpid(), signal.SIGSTOP)
    return admit(*args, **kwargs)
postgres_work.admit = hang_then_admit
worker = rk.Worker(sys.argv[1], workflows=WORKFLOWS, queues=[rk.Queue("lim", concurrency=1)], heartbeat=0.2, lease=1.0)
print("serving", flush=True)
worker.run()
"""


def test_a_worker_hung_inside_a_claim_of_a_limited_queue_is_cut_off_and_the_others_go_on(
        pg_url: str, workers: Workers, tmp_path: Path) -> None:
    """docs/scale-out.md, "The process hangs but its connection lives": a worker silent for `lease` seconds
    has its session ended by the next worker that looks, which frees its locks, and its runs go on elsewhere.
    A worker that hangs inside a claim of a limited queue holds the queue's row (`SELECT ... FROM
    replaykit_queues ... FOR UPDATE`, PostgresWork.claim) in a transaction on a pooled connection. The
    lease cuts off only its lock connection (reap_workers terminates the registry's `backend`), so the
    row stays locked: every other worker's next claim of the queue waits on it without a timeout, in
    Worker._serve, the thread that also heartbeats and reaps. Now a claim waits 250 ms at most for that
    row and skips the round, and the server ends the hung session once it has sat idle in its transaction
    for the lease (idle_in_transaction_session_timeout)."""
    _beside_a_hung_worker(pg_url, workers, tmp_path, _HANGS_IN_CLAIM, "lim", "--limit", "lim=1")


# A worker of tests/worker_app.py with durability "power" whose process stops (SIGSTOP) at one chosen moment:
# as it commits a group-commit batch whose open transaction records a run's end (once the flag appears).
_HANGS_IN_BATCH = """
import os, signal, sys
import replaykit as rk
from replaykit.store import postgres_writes
from worker_app import WORKFLOWS

def _ends_uncommitted(conn):  # the open transaction itself wrote a run's end
    return conn.execute("SELECT count(*) FROM replaykit_runs WHERE status = 'completed' "
                        "AND xmin::text = pg_current_xact_id_if_assigned()::text").fetchall()[0][0] > 0

commit = postgres_writes.Writes.commit
def hang_then_commit(self):
    batch = getattr(self._local, "batch", None)
    if batch is not None and batch.begun and os.path.exists(sys.argv[2]) and _ends_uncommitted(batch.conn):
        os.unlink(sys.argv[2])
        os.kill(os.getpid(), signal.SIGSTOP)
    return commit(self)
postgres_writes.Writes.commit = hang_then_commit
worker = rk.Worker(sys.argv[1], workflows=WORKFLOWS, queues=["main"], heartbeat=0.2, lease=1.0, durability="power")
print("serving", flush=True)
worker.run()
"""


def test_a_power_worker_hung_with_a_batch_open_is_cut_off_and_its_run_goes_on(
        pg_url: str, workers: Workers, tmp_path: Path) -> None:
    """The same promise as above, any queue, durability "power" (docs/postgres.md: the turn's writes after
    the first share one transaction). A worker that hangs with its batch open holds, on a pooled
    connection, the rows its writes touched (the run's end also updates its replaykit_work row). The
    lease ends only its lock connection, so the transaction stays open: the next worker reaps it, and
    its `_forget` (UPDATE replaykit_work ... WHERE worker = ...) waits on that row without a timeout, in
    Worker._serve. Before, the healthy worker stopped heartbeating and the run was never driven on (in about
    half of the runs: the hang point is not always the intended one). The hang in a claim above is the
    deterministic case of the same cause."""
    _beside_a_hung_worker(pg_url, workers, tmp_path, _HANGS_IN_BATCH, "main", "--durability", "power")


def _beside_a_hung_worker(pg_url: str, workers: Workers, tmp_path: Path, hanging: str, queue: str,
                          *options: str) -> None:
    """A healthy worker (``options``) and one that runs ``hanging`` and stops at its chosen point as it takes
    a run of ``queue``: the healthy one cuts it off and drives the run."""
    flag = tmp_path / "hang"
    script = tmp_path / "hangs.py"
    script.write_text(hanging)
    with rk.Client(pg_url) as client:
        healthy = workers.start("-q", queue, *options, "--heartbeat", "0.2", "--lease", "1")
        healthy.send_signal(signal.SIGSTOP)  # for a moment: the other one claims first
        hung = workers.spawn(str(script), pg_url, str(flag))
        flag.touch()
        client.start(quick, 1, 0.0, workflow_id="r1", queue=queue)
        wait_for(lambda: not flag.exists())  # it hangs where its script says
        healthy.send_signal(signal.SIGCONT)
        assert hung.poll() is None and healthy.poll() is None
        try:
            assert client.handle("r1").result(timeout=15) == 2
        except rk.ResultTimeoutError:
            ages = {w.pid: round(time.time() - w.heartbeat_at, 1) for w in client.workers()}
            pytest.fail(f"r1 not driven 15 s after the worker pid {hung.pid} hung (lease 1 s); seconds since "
                        f"each worker's heartbeat: {ages} (healthy: pid {healthy.pid})")
