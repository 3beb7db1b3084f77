"""Many workflows in one engine: one-step workflows per second, with and without parked runs beside them.

    python benchmarks/bench_engine.py [--repeat 7] [--n 1000] [--parked 10000]

An engine on an SQLite store starts ``--n`` one-step workflows at once and waits for their results;
the rate is runs per second from the first start to the last result. Measured in an engine with
no other run, then in one that also drives ``--parked`` runs parked on a timer a day away, which
the engine must never scan while it polls the store (their first start is not timed): with 1,000
of them kept in memory and the others evicted (``max_cached_runs=1000``, the default), all kept in
memory (``max_cached_runs=None``), then all evicted (``max_cached_runs=0``: replayed when their
timer is due). Medians of ``--repeat`` runs, the four alternated.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replaykit as rk  # noqa: E402


@rk.activity
def echo(i: int) -> int:
    return i


@rk.workflow(name="bench.one_step")
def one_step(ctx: rk.Context, i: int) -> rk.Flow[int]:
    return (yield echo(i))


@rk.workflow(name="bench.parked")
def parked(ctx: rk.Context) -> rk.Flow[None]:
    yield rk.sleep(timedelta(days=1))


def rate(n: int, parked_runs: int, **options: Any) -> float:
    """Workflows/s of ``n`` one-step workflows beside ``parked_runs`` runs parked on a timer (``options``:
    the engine's, e.g. ``max_cached_runs``)."""
    with tempfile.TemporaryDirectory() as tmp, rk.Engine(os.path.join(tmp, "e.db"), **options) as engine:
        if parked_runs:
            for i in range(parked_runs):
                engine.start(parked, workflow_id=f"p{i}")
            while len(engine._timers) < parked_runs or engine._parked:  # all parked before the timing starts
                time.sleep(0.01)
        start = time.perf_counter()
        handles = [engine.start(one_step, i, workflow_id=f"w{i}") for i in range(n)]
        for handle in handles:
            handle.result()
        return n / (time.perf_counter() - start)


def main() -> None:
    logging.getLogger("replaykit").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--parked", type=int, default=10_000)
    args = parser.parse_args()
    print(f"{args.repeat} runs each, medians; load average before: {os.getloadavg()[0]:.2f}\n")
    alone, capped, cached, evicted = [], [], [], []
    for _ in range(args.repeat):
        alone.append(rate(args.n, 0))
        capped.append(rate(args.n, args.parked))
        cached.append(rate(args.n, args.parked, max_cached_runs=None))
        evicted.append(rate(args.n, args.parked, max_cached_runs=0))
    floor = statistics.median(alone)
    print(f"{args.n:,} one-step workflows, nothing parked beside           {floor:8,.0f} workflows/s")
    for what, rates in ((f"{args.parked:,} parked, 1,000 kept (default)", capped),
                        (f"{args.parked:,} parked, all kept", cached),
                        (f"{args.parked:,} parked, evicted", evicted)):
        print(f"{args.n:,} one-step workflows, {what:30} {statistics.median(rates):8,.0f} workflows/s   "
              f"{statistics.median(rates) / floor:5.2f}x")


if __name__ == "__main__":
    main()
