"""Cost of one durable step vs one raw SQLite commit, and time to resume long histories.

Run: python benchmarks/bench_core.py [--steps 2000] [--repeat 5]
Prints medians; every ratio is against a baseline measured in this same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time

import replaykit as rk

SYNCHRONOUS = {"crash": "NORMAL", "power": "FULL"}


@rk.activity
def echo(i: int) -> int:
    return i


@rk.workflow
def steps(ctx: rk.Context, n: int):
    total = 0
    for i in range(n):
        total += yield echo(i)
    return total


@rk.workflow
def steps_then_signal(ctx: rk.Context, n: int):
    total = 0
    for i in range(n):
        total += yield echo(i)
    go = yield rk.wait_signal("go")
    return total + go


def raw_commit_us(path: str, mode: str, n: int) -> float:
    """One INSERT + COMMIT of the row a step records, by hand: WAL, same synchronous setting."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[mode]}")
    conn.execute("CREATE TABLE t (run INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, "
                 "name TEXT NOT NULL, at REAL NOT NULL, outcome TEXT NOT NULL, encoding TEXT NOT NULL, "
                 "payload, PRIMARY KEY (run, seq)) WITHOUT ROWID")
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (1, i, "activity", "echo", time.time(), "ok", "json", str(i)))
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed / n * 1e6


def step_us(path: str, mode: str, n: int) -> float:
    """One durable activity step of a long sequential workflow, via rk.run."""
    t0 = time.perf_counter()
    assert rk.run(steps, n, workflow_id="w", db=path, durability=mode) == n * (n - 1) // 2
    elapsed = time.perf_counter() - t0
    return elapsed / n * 1e6


def resume_ms(path: str, n: int) -> float:
    """Record n steps, stop; then time a fresh engine replaying them and finishing."""
    with rk.Engine(path, activity_threads=0, history_warning=10**9) as engine:
        handle = engine.start(steps_then_signal, n, workflow_id="r")
        while not _parked(engine.store, n):
            time.sleep(0.01)
    rk.send_signal(path, "r", "go", 1)
    t0 = time.perf_counter()
    with rk.Engine(path, activity_threads=0, history_warning=10**9) as engine:
        result = engine.start(steps_then_signal, n, workflow_id="r").result()
    elapsed = time.perf_counter() - t0
    assert result == n * (n - 1) // 2 + 1 and handle is not None
    return elapsed * 1e3


def _parked(store: rk.Store, n: int) -> bool:
    if store.info("r") is None:
        return False
    last = store.last_event("r")
    return last is not None and last.seq >= n


def median_of(repeat: int, fn, *args) -> float:  # type: ignore[no-untyped-def]
    values = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            values.append(fn(os.path.join(tmp, "b.db"), *args))
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="steps per timing run")
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {platform.machine()}")
    print(f"medians of {opts.repeat} runs\n")
    print(f"{'durability':<11} {'raw commit':>12} {'durable step':>13} {'ratio':>7}  target")
    for mode in ("crash", "power"):
        n = opts.steps if mode == "crash" else max(200, opts.steps // 10)
        raw = median_of(opts.repeat, raw_commit_us, mode, n)
        step = median_of(opts.repeat, step_us, mode, n)
        print(f"{mode:<11} {raw:>9.1f} µs {step:>10.1f} µs {step / raw:>6.2f}x  <= 1.25x")
    print()
    print(f"{'resume':<20} {'time':>10}  target")
    for n in (1_000, 10_000):
        ms = median_of(opts.repeat, resume_ms, n)
        print(f"{n:>6,} recorded steps {ms:>8.1f} ms  {'<= 50 ms' if n == 10_000 else ''}")


if __name__ == "__main__":
    sys.exit(main())
