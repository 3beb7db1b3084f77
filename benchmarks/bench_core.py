"""The core figures, quickly: one durable step against one raw SQLite commit (same durability
mode, same run), the time to resume 1,000 and 10,000 recorded steps, and what one event of a
resume costs warm: reading it back verified (the hash chain) and replaying it through the machine.

Run: python benchmarks/bench_core.py [--steps 5000] [--repeat 5]
(`benchmarks/run_all.py` measures these and more, against the peers.)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time

from run_all import median, raw_commit_us, resume_ms, step_us, steps

import replaykit as rk
from replaykit.interpreter import replay_history


def per_event_us(n: int, repeat: int) -> tuple[float, float]:
    """Warm, per event of an n-step history: (read back verified, replayed by the machine from memory)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "e.db")
        rk.run(steps, n, workflow_id="e", db=db)
        with rk.SqliteStore(db) as store:
            events = list(store.events("e"))
            start, body = events[0], events[1:-1]  # all but the result: the machine ends on the last

            def read() -> float:
                began = time.perf_counter()
                for _ in store.events("e"):
                    pass
                return time.perf_counter() - began

            def replay() -> float:
                began = time.perf_counter()
                replay_history(steps, "e", start, iter(body), codec=store.codec, quiet=True)
                return time.perf_counter() - began

            reads = [read() for _ in range(repeat)]
            replays = [replay() for _ in range(repeat)]
    return statistics.median(reads) / len(events) * 1e6, statistics.median(replays) / len(body) * 1e6


def main() -> None:
    logging.getLogger("replaykit").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5000, help="steps per timing run")
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {platform.machine()}")
    print(f"medians of {opts.repeat} runs\n")
    print(f"{'durability':<11} {'raw commit':>12} {'durable step':>13} {'ratio':>7}  target")
    for mode in ("crash", "power"):
        n = opts.steps if mode == "crash" else max(200, opts.steps // 10)
        raw = median(opts.repeat, lambda t, m=mode, k=n: raw_commit_us(t, m, k))
        step = median(opts.repeat, lambda t, m=mode, k=n: step_us(t, m, k))
        print(f"{mode:<11} {raw:>9.1f} µs {step:>10.1f} µs {step / raw:>6.2f}x  <= 1.25x")
    print()
    print(f"{'resume':<20} {'time':>10}  target")
    for n in (1_000, 10_000):
        ms = median(opts.repeat, lambda t, k=n: resume_ms(t, k))
        print(f"{n:>6,} recorded steps {ms:>8.1f} ms  {'<= 50 ms' if n == 10_000 else ''}")
    print()
    read, replay = per_event_us(opts.steps * 2, max(opts.repeat, 5))
    print(f"per event, warm ({opts.steps * 2:,} steps): read back verified {read:.2f} µs, "
          f"replayed {replay:.2f} µs (target <= 2 µs)")


if __name__ == "__main__":
    sys.exit(main())
