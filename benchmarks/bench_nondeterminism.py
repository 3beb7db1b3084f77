"""What the non-determinism warnings cost: a step and a replayed event, with and without them.

    python benchmarks/bench_nondeterminism.py [--steps 5000] [--repeat 7]

`warn_nondeterminism` installs a profile hook while workflow code runs (and only then),
watching for direct calls of the clock, `random`, `uuid` and I/O. Its cost is CPU, so the
figures are CPU time of this process (time.process_time: all its threads), which other
processes on the machine do not inflate. Each is a median over --repeat runs; the runs with
and without alternate.

- rk.run: the marginal cost of a step of a long workflow (n steps minus n/5 steps, per step),
  in memory (the hook's cost, without the noise of commits) and on SQLite in crash mode;
- resume: replaying n recorded steps in a fresh engine, per step (replayed steps are not watched).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

from run_all import steps, steps_then_signal

import replaykit as rk


def step_us(warn: bool, n: int, threads: int | None, sqlite: bool) -> float:
    """Per step of a long workflow under rk.run (threads=None) or an Engine with a thread pool,
    on SQLite (crash mode) or in memory (the same work, without the commits' noise). (With a
    thread pool a step's CPU time varies by tens of microseconds from run to run: the hook's
    few microseconds do not show there.)"""
    with tempfile.TemporaryDirectory() as tmp:
        def run(k: int, name: str) -> float:
            db: str | rk.Store = os.path.join(tmp, f"{name}.db") if sqlite else rk.MemoryStore()
            t0 = time.process_time()
            if threads is None:
                result = rk.run(steps, k, workflow_id=name, db=db, warn_nondeterminism=warn)
            else:
                with rk.Engine(db, activity_threads=threads, warn_nondeterminism=warn) as engine:
                    result = engine.start(steps, k, workflow_id=name).result()
            assert result == k * (k - 1) // 2
            return time.process_time() - t0

        short = max(1, n // 5)
        return (run(n, "long") - run(short, "short")) / (n - short) * 1e6


def replay_us(warn: bool, n: int) -> float:
    """Per step of resuming a run with n recorded steps (its last step waits for a signal)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "r.db")
        with rk.Engine(db, activity_threads=0, history_warning=10**9) as engine:
            engine.start(steps_then_signal, n, workflow_id="r")
            while (last := engine.store.last_event("r")) is None or last.seq < n:
                time.sleep(0.01)
        rk.send_signal(db, "r", "go", 1)
        t0 = time.process_time()
        with rk.Engine(db, activity_threads=0, history_warning=10**9, warn_nondeterminism=warn) as engine:
            assert engine.start(steps_then_signal, n, workflow_id="r").result() == n * (n - 1) // 2 + 1
        return (time.process_time() - t0) / n * 1e6


def paired(repeat: int, measure: Callable[[bool], float]) -> tuple[float, float]:
    """Medians of (without, with), the two alternating in order run after run."""
    without: list[float] = []
    with_: list[float] = []
    for i in range(repeat):
        for warn in ((False, True) if i % 2 == 0 else (True, False)):
            (with_ if warn else without).append(measure(warn))
    return statistics.median(without), statistics.median(with_)


def measure_all(n: int, repeat: int) -> list[tuple[str, float, float]]:
    """(what, µs without, µs with) for each measure."""
    return [
        ("rk.run, a step, in memory", *paired(repeat, lambda warn: step_us(warn, n, None, False))),
        ("rk.run, a step, SQLite", *paired(repeat, lambda warn: step_us(warn, n, None, True))),
        ("resume, a replayed step, SQLite", *paired(repeat, lambda warn: replay_us(warn, n))),
    ]


def main() -> None:
    logging.getLogger("replaykit").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=9)
    opts = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.machine()}; "
          f"{opts.steps} steps, medians of {opts.repeat} runs\n")
    print(f"{'':<40} {'without':>9} {'with':>9} {'cost':>9}")
    for what, without, with_ in measure_all(opts.steps, opts.repeat):
        print(f"{what:<40} {without:>6.1f} µs {with_:>6.1f} µs {with_ - without:>+6.1f} µs")


if __name__ == "__main__":
    main()
