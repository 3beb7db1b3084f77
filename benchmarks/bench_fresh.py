"""What a user feels in a fresh process, beside the floor measured in the same run.

    python benchmarks/bench_fresh.py [--repeat 9] [--steps 10000] [--instructions]

Three whole-process figures, each a median of ``--repeat`` runs with replaykit and its floor
alternated, so that the machine's load falls on both alike:

- ``import replaykit`` against ``import sqlite3``;
- a script that runs one one-step workflow in an existing store and exits, against a script
  that does the same with raw SQLite (a run row, its start and its step, each committed,
  the same journal mode and ``synchronous`` setting);
- ``rk.run`` resuming a ``--steps`` history left by a process killed with SIGKILL, against
  reading, decoding and sending the same rows into the same generator in one process.

Each time is the wall clock from the interpreter's start to its exit. Also printed: which
heavy modules ``import replaykit`` loads (none should be loaded that only some users need).

``--instructions`` counts instead the CPU instructions each whole process runs (valgrind's
callgrind, one run each: the count does not depend on the machine's load), with two more rows:
``import attrs`` alone, the share of the one-step script no change to replaykit removes while it
is built on attrs, and the interpreter's start (``python -c pass``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

# (not subprocess: Python 3.10's platform module, which attrs imports, loads it)
HEAVY = ("sqlite_utils", "asyncio", "click", "freezegun", "cattrs", "psycopg", "urllib.request", "cloudpickle",
         "socket", "pathlib")

ONE_STEP = """
import sys, replaykit as rk

@rk.activity
def greet(name: str) -> str:
    return "hello " + name

@rk.workflow
def hello(ctx: rk.Context, name: str) -> rk.Flow[str]:
    return (yield greet(name))

print(rk.run(hello, "world", workflow_id=sys.argv[2], db=sys.argv[1]))
"""

RAW_ONE_STEP = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL"); conn.execute("PRAGMA synchronous = NORMAL")
conn.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, name TEXT, status TEXT, result TEXT)")
conn.execute("CREATE TABLE IF NOT EXISTS events (id TEXT, seq INTEGER, kind TEXT, payload TEXT, PRIMARY KEY (id, seq))")
wid = sys.argv[2]
with conn:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO runs VALUES (?, 'hello', 'running', NULL)", (wid,))
    conn.execute("INSERT INTO events VALUES (?, 0, 'started', ?)", (wid, json.dumps(["world"])))
result = "hello " + "world"
with conn:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO events VALUES (?, 1, 'completed', ?)", (wid, json.dumps(result)))
with conn:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE runs SET status = 'completed', result = ? WHERE id = ?", (json.dumps(result), wid))
conn.close()
print(result)
"""

LONG = """
import os, sys, replaykit as rk

@rk.activity
def step(i: int) -> int:
    return i

@rk.workflow
def long(ctx: rk.Context, n: int) -> rk.Flow[int]:
    total = 0
    for i in range(n):
        total += yield step(i)
        if i == n - 1 and os.environ.get("BENCH_KILL"):
            os.kill(os.getpid(), 9)  # the history is whole; the run was never ended
    return total

print(rk.run(long, int(sys.argv[2]), workflow_id="long", db=sys.argv[1]))
"""

FLOOR_RESUME = """
import json, sqlite3, sys

def long(n):
    total = 0
    for i in range(n):
        total += yield i
    return total

conn = sqlite3.connect(sys.argv[1])
gen = long(int(sys.argv[2]))
gen.send(None)
try:
    for (payload,) in conn.execute("SELECT payload FROM events WHERE run = (SELECT max(id) FROM runs "
                              "WHERE workflow_id = 'long') AND seq > 0 ORDER BY seq"):
        gen.send(json.loads(payload))
except StopIteration:
    pass
"""


def _wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def _instructions(argv: list[str], env: dict[str, str]) -> float:
    """CPU instructions the whole process runs, from the interpreter's start to its exit."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, check=True)
    return float(re.findall(r"Collected : (\d+)", done.stderr)[-1])


def _paired(repeat: int, ours: Callable[[int], float], floor: Callable[[int], float]) -> tuple[float, float]:
    ours(-1), floor(-1)  # compile and cache the .pyc files first: a user's second run onwards
    mine, base = [], []
    for i in range(repeat):
        mine.append(ours(i))
        base.append(floor(i))
    return statistics.median(mine), statistics.median(base)


def _row(what: str, ours: float, floor: float, floor_name: str) -> None:
    print(f"{what:44} {ours * 1e3:8.1f} ms   {floor_name:34} {floor * 1e3:7.1f} ms   {ours / floor:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--instructions", action="store_true",
                        help="count each process's CPU instructions (valgrind) instead of timing it")
    args = parser.parse_args()
    py = sys.executable
    env = dict(os.environ, REPLAYKIT_SECRET=os.environ.get("REPLAYKIT_SECRET", "a-benchmark-secret-long-enough"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run: the first run writes the .pyc files, the others read them
    if args.instructions:
        if shutil.which("valgrind") is None:
            sys.exit("--instructions needs valgrind (apt-get install valgrind)")
        env["PYTHONHASHSEED"] = "0"  # the same string hashes, so the same count, run after run

        def row(what: str, ours: Callable[[int], list[str]], floor: Callable[[int], list[str]], name: str) -> None:
            _instructions(ours(-1), env), _instructions(floor(-1), env)  # compile and cache the .pyc files first
            mine, base = _instructions(ours(0), env), _instructions(floor(0), env)
            print(f"{what:44} {mine / 1e6:8.1f} M    {name:34} {base / 1e6:7.1f} M    {mine / base:5.2f}x")
        print("CPU instructions of each whole process (valgrind callgrind)\n")
    else:
        def row(what: str, ours: Callable[[int], list[str]], floor: Callable[[int], list[str]], name: str) -> None:
            _row(what, *_paired(args.repeat, lambda i: _wall(ours(i), env), lambda i: _wall(floor(i), env)), name)
        print(f"{args.repeat} runs each, medians; load average before: {os.getloadavg()[0]:.2f}\n")
    row("import replaykit", lambda i: [py, "-c", "import replaykit"], lambda i: [py, "-c", "import sqlite3"],
        "import sqlite3")
    with tempfile.TemporaryDirectory() as tmp:
        ours, raw = os.path.join(tmp, "ours.db"), os.path.join(tmp, "raw.db")
        row("one-step workflow script, whole process", lambda i: [py, "-c", ONE_STEP, ours, f"w{i}"],
            lambda i: [py, "-c", RAW_ONE_STEP, raw, f"w{i}"], "raw-SQLite one-step script")

        def killed(i: int) -> str:
            db = os.path.join(tmp, f"long{i}.db")
            done = subprocess.run([py, "-c", LONG, db, str(args.steps)], env=dict(env, BENCH_KILL="1"),
                                  stdout=subprocess.DEVNULL, check=False)
            assert done.returncode == -signal.SIGKILL, done
            return db

        dbs = {i: killed(i) for i in range(-1, 1 if args.instructions else args.repeat)}
        row(f"resume {args.steps:,} steps after SIGKILL", lambda i: [py, "-c", LONG, dbs[i], str(args.steps)],
            lambda i: [py, "-c", FLOOR_RESUME, dbs[-1], str(args.steps)], "read + json + send, whole process")
        if args.instructions:
            row("import attrs alone", lambda i: [py, "-c", "import attrs"],
                lambda i: [py, "-c", RAW_ONE_STEP, raw, f"a{i}"], "raw-SQLite one-step script")
            row("python -c pass", lambda i: [py, "-c", "pass"], lambda i: [py, "-c", RAW_ONE_STEP, raw, f"p{i}"],
                "raw-SQLite one-step script")
        print()
        for what, code in (("import replaykit", "import replaykit"),
                           ("the one-step script on an existing store", ONE_STEP)):
            shown = "import sys\n" + code + "\nprint(' '.join(sorted(sys.modules)))"
            loaded = subprocess.run([py, "-c", shown, ours, "modules"], env=env, check=True, capture_output=True,
                                    text=True).stdout.split()
            print(f"heavy modules loaded by {what}:", ", ".join(m for m in HEAVY if m in loaded) or "none")


if __name__ == "__main__":
    main()
