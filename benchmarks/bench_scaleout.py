"""Scale-out on PostgreSQL: replaykit's workers beside DBOS's, on one server started by this script.

1. Throughput: a client process starts N one-step workflows in a queue served by 1, 2 and 4
   worker processes; the time from its first start until all have completed (polled with one
   count query). replaykit at durability ``crash`` (its default: ``synchronous_commit`` off) and
   ``power`` (on, as DBOS commits), DBOS 3.x (``dbos_side.py``, in its own virtualenv) on the
   same server, interleaved, each run on a fresh database. The floor beside it: the client's
   starts alone (one process, one commit each), which no number of workers can beat.
   Then the workers alone: the runs queued first, the workers started after, the rate between
   the 10th and 90th percentile of the completion times (the client competes for nothing).
2. Takeover: two workers; the one running a run's first activity is SIGKILLed (or SIGSTOPped:
   its connection lives on, so only its lease can free the run); the time from the signal to the
   other worker starting that activity again (ledger), and to its result being recorded (the
   event's ``at``). DBOS: the same with two executors, watched for 30 s.
3. Resuming a 10,000-step history is ``bench_postgres.py``'s (not repeated here).

Run: python benchmarks/bench_scaleout.py [--quick] [--repeat 5] [--n 2000]
DBOS runs with benchmarks/.venv-dbos/bin/python (python -m venv benchmarks/.venv-dbos &&
benchmarks/.venv-dbos/bin/pip install "dbos>=3,<4" "psycopg[binary]"); without it its half is
skipped with a note. --quick is a smoke run of a few seconds (no DBOS). Nothing timed is asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

import replaykit as rk
from replaykit.store import open_store

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests")]

import scaleout_steps  # noqa: E402 - beside this file, shared with dbos_side.py

from pgserver import PgServer, find_binaries  # noqa: E402

DBOS_PYTHON = HERE / ".venv-dbos" / "bin" / "python"
QUEUE = "bench"
DBOS_WATCH = 30.0  # seconds a DBOS takeover is waited for


# -- the replaykit side (the worker and client processes run this file) --------------------------

@rk.activity(name="bench.echo")
def echo(i: int) -> int:
    return i


@rk.workflow(name="bench.one_step")
def one_step(ctx: rk.Context, i: int):
    return (yield echo(i))



@rk.activity(name="bench.block")
def block(ledger: str) -> int:
    return scaleout_steps.block(ledger)


@rk.activity(name="bench.mark")
def mark(ledger: str) -> int:
    return scaleout_steps.mark(ledger)


@rk.workflow(name="bench.hold")
def hold(ctx: rk.Context, ledger: str):
    a = yield block(ledger)
    b = yield mark(ledger)
    return a + b


def serve(url: str, durability: str, lease: float) -> None:
    logging.getLogger("replaykit").setLevel(logging.ERROR)
    profile = os.environ.get("RK_BENCH_PROFILE")
    if profile:
        _profile_threads(profile)
    worker = rk.Worker(url, workflows=[one_step, hold], queues=[QUEUE], durability=durability, lease=lease)
    print("ready", flush=True)
    worker.run()


def _profile_threads(directory: str) -> None:
    """Every thread started from here on runs under a cProfile of its own (wall clock), dumped to
    ``directory/<thread name>.prof`` when it ends: the worker's claiming, driver and activity threads."""
    import cProfile
    import threading

    run = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            run(self)
        finally:
            prof.disable()
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name)
            prof.dump_stats(os.path.join(directory, f"{name}-{threading.get_ident()}.prof"))

    threading.Thread.run = profiled  # type: ignore[method-assign]


def client(url: str, n: int, durability: str) -> None:
    with rk.Client(url, durability=durability) as c, psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        for i in range(n):
            c.start(one_step, i, workflow_id=f"w{i}", queue=QUEUE)
        started = time.perf_counter() - t0
        while conn.execute("SELECT count(*) FROM replaykit_runs WHERE status = 'completed'").fetchall()[0][0] < n:
            time.sleep(0.005)
        print("RESULT", time.perf_counter() - t0, started, flush=True)


def enqueue(url: str, n: int, durability: str) -> None:
    with rk.Client(url, durability=durability) as c:
        t0 = time.perf_counter()
        for i in range(n):
            c.start(one_step, i, workflow_id=f"w{i}", queue=QUEUE)
        print("RESULT", time.perf_counter() - t0, flush=True)


# -- processes ----------------------------------------------------------------------------------

class Fleet:
    """Worker processes, each started once the previous one said "ready" (DBOS migrates its schema
    on launch); stderr to files, shown if one fails."""

    def __init__(self, argv: Callable[[int], list[str]], count: int, tmp: str) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[str] = []
        for i in range(count):
            log = os.path.join(tmp, f"worker{i}.log")
            self.logs.append(log)
            with open(log, "w") as err:
                proc = subprocess.Popen(argv(i), stdout=subprocess.PIPE, stderr=err, text=True, env=_env())
            self.procs.append(proc)
            line = _readline(proc, 90)
            if line.strip() != "ready":
                self.stop()
                raise RuntimeError(f"worker {i} did not start: {line!r}\n{open(log).read()[-3000:]}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE.parent), "PYTHONUNBUFFERED": "1"}


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return "(no output within the timeout)"
    return proc.stdout.readline()


def _result(argv: list[str], timeout: float = 600) -> list[float]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return [float(x) for x in line.split()[1:]]
    raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def _me(*args: object) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *map(str, args)]


def _dbos(*args: object) -> list[str]:
    return [str(DBOS_PYTHON), str(HERE / "dbos_side.py"), *map(str, args)]


# -- 1. throughput ------------------------------------------------------------------------------

def throughput(server: PgServer, system: str, workers: int, n: int, profile: str | None = None) -> tuple[float, float]:
    """(workflows/s from the first start to the last completion, starts/s of the client alone).
    ``profile``: a directory where each replaykit worker thread's cProfile is dumped."""
    if profile:
        os.environ["RK_BENCH_PROFILE"] = profile
    db = server.create_database()
    url = server.url(db)
    with tempfile.TemporaryDirectory() as tmp:
        if system == "dbos":
            fleet = Fleet(lambda i: _dbos("worker", url, f"executor-{i}"), workers, tmp)
            argv = _dbos("client", url, n)
        else:
            durability = system.split("-")[1]
            fleet = Fleet(lambda i: _me("_worker", url, durability, 30.0), workers, tmp)
            argv = _me("_client", url, n, durability)
        try:
            total, started = _result(argv)
        finally:
            fleet.stop()
            os.environ.pop("RK_BENCH_PROFILE", None)
    server.release_database(db)
    return n / total, n / started


_COMPLETED_AT = {"rk": "SELECT updated_at FROM replaykit_runs WHERE status = 'completed' ORDER BY updated_at",
                 "dbos": "SELECT updated_at / 1000.0 FROM dbos.workflow_status WHERE status = 'SUCCESS' "
                         "ORDER BY updated_at"}


def drain(server: PgServer, system: str, workers: int, n: int) -> float:
    """Workflows/s of the workers alone: n runs queued first, then the workers started; the rate
    between the 10th and the 90th percentile of the completion times (no start-up, no client)."""
    db = server.create_database()
    url = server.url(db)
    kind = "dbos" if system == "dbos" else "rk"
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "dbos":
            Fleet(lambda i: _dbos("worker", url, "schema"), 1, tmp).stop()  # DBOS makes its schema at launch
            _result(_dbos("enqueue", url, n))
            fleet = Fleet(lambda i: _dbos("worker", url, f"executor-{i}"), workers, tmp)
        else:
            durability = system.split("-")[1]
            _result(_me("_enqueue", url, n, durability))
            fleet = Fleet(lambda i: _me("_worker", url, durability, 30.0), workers, tmp)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                deadline = time.monotonic() + 600
                while len(done := [r[0] for r in conn.execute(_COMPLETED_AT[kind]).fetchall()]) < n:
                    assert time.monotonic() < deadline, f"{system}: {len(done)} of {n} completed"
                    time.sleep(0.05)
        finally:
            fleet.stop()
    server.release_database(db)
    low, high = n // 10, n * 9 // 10
    return (high - low) / (float(done[high]) - float(done[low]))


def profile_worker(server: PgServer, n: int) -> None:
    """One replaykit worker (durability crash) with every thread under cProfile: where its time goes,
    per thread: replaykit's functions by cumulative wall time (waiting on PostgreSQL counts), with
    their calls per workflow, and the round trips (psycopg ``execute``, the event INSERT) by caller."""
    import pstats

    directory = tempfile.mkdtemp(prefix="rk-prof-")
    rate, _ = throughput(server, "rk-crash", 1, n, profile=directory)
    print(f"profiled: {rate:,.0f} workflows/s (under cProfile)")
    for name in sorted(os.listdir(directory)):
        if name.startswith(("replaykit-activity", "replaykit-pg-listener")):
            continue  # idle nearly all the time: activities here return at once
        stats = pstats.Stats(os.path.join(directory, name)).stats  # type: ignore[attr-defined]
        wall = max(v[3] for v in stats.values())
        print(f"\n-- thread {name.rsplit('-', 1)[0]}: {wall:.2f} s; calls per workflow, cumulative s")
        ours = sorted(((k, v) for k, v in stats.items() if "/replaykit/" in k[0]), key=lambda kv: -kv[1][3])
        for (file, line, func), (_, calls, _, cum, _) in ours[:22]:
            print(f"  {calls / n:>6.2f} {cum:>7.2f}  {file.split('/replaykit/')[1]}:{line} {func}")
        trips = [(caller, v[1]) for k, callees in stats.items() for caller, v in callees[4].items()
                 if (k[0].endswith("psycopg/connection.py") and k[2] == "execute") or k[2] == "insert_event"]
        print(f"  round trips per workflow: {sum(c for _, c in trips) / n:.1f} ("
              + ", ".join(f"{c[2]} {k / n:.1f}" for c, k in sorted(trips, key=lambda t: -t[1])) + ")")
    print(f"(profiles kept in {directory}: python -m pstats FILE)")


# -- 2. takeover --------------------------------------------------------------------------------

def _ledger_lines(path: str, kind: str) -> list[tuple[int, float]]:
    if not os.path.exists(path):
        return []
    return [(int(p), float(t)) for k, p, t in (line.split() for line in open(path) if line.strip()) if k == kind]


def _wait(what: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(0.002)
    return None


def takeover(server: PgServer, system: str, how: signal.Signals, lease: float) -> tuple[float, float] | str:
    """(seconds from the signal to the activity started again elsewhere, to its result recorded),
    or, if no other worker took the run within DBOS_WATCH seconds, the run's state then."""
    db = server.create_database()
    url = server.url(db)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = os.path.join(tmp, "ledger")
        if system == "dbos":
            fleet = Fleet(lambda i: _dbos("worker", url, f"executor-{i}"), 2, tmp)
            subprocess.run(_dbos("enqueue_hold", url, ledger), check=True, timeout=60, capture_output=True)
        else:
            fleet = Fleet(lambda i: _me("_worker", url, "crash", lease), 2, tmp)
            with rk.Client(url) as c:
                c.start(hold, ledger, workflow_id="hold-1", queue=QUEUE)
        try:
            first = _wait(lambda: _ledger_lines(ledger, "block"), 60)
            if not first:
                raise RuntimeError("no worker started the run's first activity within 60 s")
            victim = first[0][0]  # type: ignore[index]
            time.sleep(random.uniform(0.3, 0.8))  # any phase of the heartbeats
            t_signal = time.time()
            os.kill(victim, how)
            again = _wait(lambda: [t for pid, t in _ledger_lines(ledger, "block") if pid != victim],
                          DBOS_WATCH if system == "dbos" else 120)
            if not again:
                return _dbos_state(url) if system == "dbos" else "not taken over"
            recorded = _wait(lambda: _recorded_at(url, system, ledger), 60)
            if recorded is None:
                raise RuntimeError("the first activity's result was never recorded")
            return again[0] - t_signal, float(recorded) - t_signal  # type: ignore[index, arg-type]
        finally:
            if how != signal.SIGKILL:
                os.kill(victim, signal.SIGKILL)
            fleet.stop()
            server.release_database(db)


def _dbos_state(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, executor_id FROM dbos.workflow_status WHERE workflow_uuid = 'hold-1'"
                            ).fetchall()
    return f"status {rows[0][0]}, executor_id {rows[0][1]!r}" if rows else "no such workflow"


def _recorded_at(url: str, system: str, ledger: str) -> float | None:
    if system == "dbos":  # DBOS records no time per step: the next step's start shows the first one recorded
        return next((t for _, t in _ledger_lines(ledger, "mark")), None)
    with open_store(url) as store:
        return next((e.at for e in store.events("hold-1") if e.name == "bench.block"), None)


# -- report -------------------------------------------------------------------------------------

def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds, without DBOS")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000, help="workflows per throughput run")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--lease", type=float, default=3.0, help="the workers' lease in the SIGSTOP takeover")
    parser.add_argument("--profile", action="store_true", help="only profile one replaykit worker's threads")
    opts = parser.parse_args()
    if opts.profile:
        server = PgServer(find_binaries() or sys.exit("no PostgreSQL server binaries found")).start()
        try:
            profile_worker(server, opts.n)
        finally:
            server.stop()
        return
    if opts.quick:
        opts.repeat, opts.n, opts.workers = 1, 100, "1,2"
    counts = [int(w) for w in opts.workers.split(",")]
    dbos = not opts.quick and DBOS_PYTHON.exists()
    systems = ["rk-crash", "rk-power", *(["dbos"] if dbos else [])] if not opts.quick else ["rk-crash"]
    bindir = find_binaries()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries found (apt-get install postgresql)")
    server = PgServer(bindir).start()
    try:
        version = server.execute("SHOW server_version")[0][0]
        dbos_version = subprocess.run([str(DBOS_PYTHON), "-c", "import dbos, importlib.metadata as m; "
                                       "print(m.version('dbos'))"], capture_output=True, text=True
                                      ).stdout.strip() if dbos else None
        print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL {version} (local, "
              f"Unix socket, fsync on), replaykit {rk.__version__}"
              + (f", DBOS {dbos_version}" if dbos else "") + f"; medians of {opts.repeat} runs")
        if not dbos:
            print("DBOS half skipped: " + ("--quick" if opts.quick else f"no {DBOS_PYTHON} (see the docstring)"))
        print(f"load before: {_uptime()}\n")

        # 1. Interleaved: each round runs every system at every worker count.
        rates: dict[tuple[str, int], list[float]] = {}
        starts: dict[tuple[str, int], list[float]] = {}
        for _ in range(opts.repeat):
            for w in counts:
                for system in systems:
                    rate, started = throughput(server, system, w, opts.n)
                    rates.setdefault((system, w), []).append(rate)
                    starts.setdefault((system, w), []).append(started)
        print(f"1. one-step workflows through a queue, N={opts.n} started by one client process "
              "(workflows/s, first start to last completion; in brackets: the client's starts alone, starts/s)")
        head = f"{'workers':>7}" + "".join(f" {s:>22}" for s in systems)
        if dbos:
            head += f" {'crash/DBOS':>11} {'power/DBOS':>11}"
        print(head)
        for w in counts:
            med = {s: statistics.median(rates[(s, w)]) for s in systems}
            row = f"{w:>7}" + "".join(f" {med[s]:>9,.0f} [{statistics.median(starts[(s, w)]):>7,.0f}/s]  "
                                      for s in systems)
            if dbos:
                row += f" {med['rk-crash'] / med['dbos']:>10.2f}x {med['rk-power'] / med['dbos']:>10.2f}x"
            print(row)
        print(f"load after 1: {_uptime()}\n")

        drained: dict[tuple[str, int], list[float]] = {}
        for _ in range(opts.repeat):
            for w in counts:
                for system in systems:
                    drained.setdefault((system, w), []).append(drain(server, system, w, opts.n))
        print(f"1b. the workers alone: N={opts.n} one-step workflows queued first, then the workers started; "
              "workflows/s between the 10th and 90th percentile of completions")
        print(head)
        for w in counts:
            med = {s: statistics.median(drained[(s, w)]) for s in systems}
            row = f"{w:>7}" + "".join(f" {med[s]:>22,.0f}" for s in systems)
            if dbos:
                row += f" {med['rk-crash'] / med['dbos']:>10.2f}x {med['rk-power'] / med['dbos']:>10.2f}x"
            print(row)
        print(f"load after 1b: {_uptime()}\n")

        # 2. Takeover.
        reps = 1 if opts.quick else opts.repeat
        print("2. takeover: the worker running a run's first activity is signalled; seconds until another "
              "worker starts that activity again / records its result")
        kills = [t for t in (takeover(server, "rk", signal.SIGKILL, 30.0) for _ in range(reps)) if isinstance(t, tuple)]
        print(f"replaykit, SIGKILL (connection closed by the OS): restarted {_med(kills, 0)}, "
              f"recorded {_med(kills, 1)} (runs: {_runs(kills)})")
        if not opts.quick:
            stops = [t for t in (takeover(server, "rk", signal.SIGSTOP, opts.lease) for _ in range(min(reps, 3)))
                     if isinstance(t, tuple)]
            print(f"replaykit, SIGSTOP (connection alive; lease {opts.lease:g} s, heartbeat 0.5 s): restarted "
                  f"{_med(stops, 0)}, recorded {_med(stops, 1)} (runs: {_runs(stops)})")
        if dbos:
            taken = takeover(server, "dbos", signal.SIGKILL, 0.0)
            print("DBOS, SIGKILL of one of two executors: " + (
                f"the other restarted the step after {taken[0]:.2f} s" if isinstance(taken, tuple) else
                f"the other executor did not take the run over within {DBOS_WATCH:g} s ({taken}; DBOS recovers "
                "a dead executor's work only when a process with its executor id launches again, or Conductor)"))
        print(f"load after 2: {_uptime()}\n")
        print("3. resume of a 10,000-step history in a fresh process: see benchmarks/bench_postgres.py")
    finally:
        server.stop()


def _med(values: list[tuple[float, float]], i: int) -> str:
    return f"{statistics.median(v[i] for v in values):.3f} s" if values else "n/a"


def _runs(values: list[tuple[float, float]]) -> str:
    return ", ".join(f"{v[0]:.2f}/{v[1]:.2f}" for v in values)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_worker"]:
        serve(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif sys.argv[1:2] == ["_enqueue"]:
        enqueue(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1:2] == ["_client"]:
        client(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
