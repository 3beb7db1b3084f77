"""What ``import replaykit`` costs a fresh process, beside the floor measured in the same run.

    python benchmarks/bench_import.py [--repeat 15]

Each figure is the median wall time of ``--repeat`` fresh interpreters (``python -c``), alternated so
that the machine's load falls on both alike: the floor is an interpreter that imports only
``sqlite3``. Also printed: which heavy modules ``import replaykit`` loads (none should be there
that only some users need: sqlite_utils, asyncio, click, freezegun, cattrs, psycopg).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("sqlite_utils", "asyncio", "click", "freezegun", "cattrs", "psycopg", "urllib.request")
COMMANDS = {
    "floor: import sqlite3": "import sqlite3",
    "import replaykit": "import replaykit",
}


def _once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for code in COMMANDS.values():
        _once(code)  # compile and cache the .pyc files first: a user's second run onwards
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, code in COMMANDS.items():
            times[name].append(_once(code))
    floor = statistics.median(times["floor: import sqlite3"])
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:24} {median * 1e3:7.1f} ms median of {len(runs)} "
              f"(min {min(runs) * 1e3:.1f}, max {max(runs) * 1e3:.1f}); {median / floor:.2f}x the floor")
    loaded = subprocess.run([sys.executable, "-c", "import sys, replaykit; print(' '.join(sorted(sys.modules)))"],
                            check=True, capture_output=True, text=True).stdout.split()
    print("heavy modules loaded by import replaykit:", ", ".join(m for m in HEAVY if m in loaded) or "none")


if __name__ == "__main__":
    main()
