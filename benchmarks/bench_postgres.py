"""The PostgreSQL store's core figures, each beside its floor, measured in the same run:

1. one durable step of ``rk.run`` (from one activity call to the next) against one raw psycopg
   INSERT + COMMIT of the same row into a table like the store's (``synchronous_commit`` off for
   ``crash``, on for ``power``), alternated, medians over every operation;
2. resuming a 10,000-step history in a fresh process (``rk.Engine(url)`` to the result: connect,
   check the schema, read and replay every step), against a fresh process that connects and reads
   the same rows in the same pages with psycopg;
3. ``store.changed()``, which the driver calls every turn, against one round trip (``SELECT 1``).

Run: python benchmarks/bench_postgres.py [--repeat 7] [--url postgresql://...]
Without --url it starts a throwaway server (tests/pgserver.py: initdb + pg_ctl, Unix socket, fsync on).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

import replaykit as rk
from replaykit.store import open_store

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from run_all import steps_then_signal  # noqa: E402

from pgserver import PgServer, find_binaries  # noqa: E402

SYNCHRONOUS_COMMIT = {"crash": "off", "power": "on"}
_TABLE = """CREATE SCHEMA IF NOT EXISTS floor; CREATE TABLE IF NOT EXISTS floor.raw_events (
    run bigint NOT NULL, seq integer NOT NULL, step integer NOT NULL, kind text NOT NULL, name text NOT NULL,
    at double precision NOT NULL, outcome text NOT NULL, encoding text NOT NULL, payload text, payload_bytes bytea,
    PRIMARY KEY (run, seq))"""


def raw_commit_us(url: str, mode: str, n: int, run: int) -> list[float]:
    """Each of n INSERT + COMMITs of a step's row (autocommit: one round trip), as the store writes it."""
    times, run = [], run + (1000 if mode == "power" else 0)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET synchronous_commit = {SYNCHRONOUS_COMMIT[mode]}")
        conn.execute(_TABLE)
        sql = "INSERT INTO floor.raw_events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute(sql, (run, i, i, "activity", "bench.echo", time.time(), "ok", "json", str(i), None))
            times.append(time.perf_counter() - t0)
    return times


_stamps: list[float] = []


@rk.activity(name="bench.stamp")
def stamp(i: int) -> int:
    _stamps.append(time.perf_counter())
    return i


@rk.workflow(name="bench.stamped_steps")
def stamped_steps(ctx: rk.Context, n: int):
    total = 0
    for i in range(n):
        total += yield stamp(i)
    return total


def step_us(url: str, mode: str, n: int, run: int) -> list[float]:
    """Each step of a long rk.run: the time from one activity call to the next, which is recording
    the step's result (one INSERT + COMMIT) and the engine's work around it."""
    _stamps.clear()
    assert rk.run(stamped_steps, n, workflow_id=f"steps-{mode}-{run}", db=url, durability=mode) == n * (n - 1) // 2
    return [b - a for a, b in zip(_stamps, _stamps[1:], strict=False)]


_RESUME = """
import sys, time
t0 = time.perf_counter()
import replaykit as rk
import replaykit.store.postgres  # psycopg: imported here, not counted (the floor imports it before timing too)
from run_all import steps_then_signal
url, workflow_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t1 = time.perf_counter()
with rk.Engine(url, activity_threads=0, history_warning=10**9) as engine:
    assert engine.start(steps_then_signal, n, workflow_id=workflow_id).result() == n * (n - 1) // 2 + 1
t2 = time.perf_counter()
print("RESULT", (t2 - t1) * 1e3, (t1 - t0) * 1e3)
"""

_RAW_READ = """
import sys, time
t0 = time.perf_counter()
import psycopg
url, workflow_id = sys.argv[1], sys.argv[2]
t1 = time.perf_counter()
with psycopg.connect(url, autocommit=True) as conn:
    conn.execute("SET enable_bitmapscan = off")  # as the store does: see replaykit/store/postgres_conn.py
    run = conn.execute("SELECT id FROM replaykit_runs WHERE workflow_id = %s ORDER BY generation DESC LIMIT 1",
                       (workflow_id,)).fetchall()[0][0]
    after, rows = -1, 0
    while True:
        page = conn.execute("SELECT seq, step, kind, name, at, outcome, encoding, payload, payload_bytes "
                            "FROM replaykit_events WHERE run = %s AND seq > %s ORDER BY seq LIMIT 256",
                            (run, after)).fetchall()
        rows += len(page)
        if len(page) < 256:
            break
        after = page[-1][0]
t2 = time.perf_counter()
print("RESULT", (t2 - t1) * 1e3, rows)
"""


def _child(code: str, *args: object) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return [float(x) for x in line.split()[1:]]
    raise RuntimeError(done.stderr)


def record_history(url: str, workflow_id: str, n: int) -> None:
    """n steps recorded, the run waiting for its signal, which is then sent: a resume finishes it."""
    with rk.Engine(url, activity_threads=0, history_warning=10**9) as engine:
        engine.start(steps_then_signal, n, workflow_id=workflow_id)
        while (last := engine.store.last_event(workflow_id)) is None or last.seq < n:
            time.sleep(0.01)
    rk.send_signal(url, workflow_id, "go", 1)


def changed_us(url: str, calls: int = 20_000) -> tuple[float, float]:
    with open_store(url) as store:
        store.changed()
        t0 = time.perf_counter()
        for _ in range(calls):
            store.changed()
        changed = (time.perf_counter() - t0) / calls * 1e6
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        for _ in range(calls // 10):
            conn.execute("SELECT 1").fetchall()
        round_trip = (time.perf_counter() - t0) / (calls // 10) * 1e6
    return changed, round_trip


def main() -> None:
    logging.getLogger("replaykit").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1000, help="steps per timing run (crash; a third for power)")
    parser.add_argument("--url", help="an existing (empty) database; default: a throwaway server")
    opts = parser.parse_args()
    server = None
    url = opts.url
    if url is None:
        bindir = find_binaries()
        if bindir is None:
            sys.exit("no PostgreSQL server binaries found (apt-get install postgresql), and no --url given")
        server = PgServer(bindir).start()
        url = server.url(server.create_database())
    try:
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchall()[0][0]
        print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL {version} "
              f"(local, Unix socket), psycopg {psycopg.__version__}; medians of {opts.repeat} runs\n")
        print(f"{'durability':<10} {'raw INSERT+COMMIT':>18} {'durable step':>13} {'ratio':>6}  target")
        for mode in ("crash", "power"):
            n = opts.steps if mode == "crash" else max(300, opts.steps // 3)
            # Alternated, and each operation timed on its own: a median of thousands resists the noise
            # of a shared machine better than a total does.
            raws, steps_ = [], []
            for i in range(opts.repeat):
                raws += raw_commit_us(url, mode, n, i)
                steps_ += step_us(url, mode, n, i)
            raw, step = statistics.median(raws) * 1e6, statistics.median(steps_) * 1e6
            print(f"{mode:<10} {raw:>15.1f} µs {step:>10.1f} µs {step / raw:>5.2f}x  <= 1.1x")
        print()
        n = 10_000
        resumes, imports, reads = [], [], []
        for i in range(opts.repeat):
            record_history(url, f"resume-{i}", n)
            reads.append(_child(_RAW_READ, url, f"resume-{i}")[0])
            resume, imported = _child(_RESUME, url, f"resume-{i}", n)
            resumes.append(resume)
            imports.append(imported)
        print(f"resume of {n:,} steps in a fresh process: {statistics.median(resumes):.1f} ms (target <= 100 ms); "
              f"floor, a fresh process connecting and reading the same rows: {statistics.median(reads):.1f} ms "
              f"(importing replaykit and psycopg before: {statistics.median(imports):.0f} ms, not counted)")
        changed, round_trip = changed_us(url)
        print(f"store.changed(): {changed:.2f} µs a call (no round trip); one round trip (SELECT 1): "
              f"{round_trip:.1f} µs")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
