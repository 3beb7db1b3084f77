"""replaykit against its peers, side by side, in one run on this machine.

    pip install -e ".[bench]"          # dbos and temporalio; without them their columns are skipped
    python benchmarks/run_all.py       # prints the tables and writes docs/benchmarks.md

Every figure is a median over --repeat runs; every ratio compares figures measured in
this same run. Peers run in their own processes (benchmarks/peers/).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import replaykit as rk
from replaykit import payloads
from replaykit.clock import monotonic
from replaykit.testing import TestEnv

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
SYNCHRONOUS = {"crash": "NORMAL", "power": "FULL"}


# -- workflows measured -----------------------------------------------------------------

@rk.activity
def echo(i: int) -> int:
    return i


@rk.workflow(name="bench.steps")
def steps(ctx: rk.Context, n: int):
    total = 0
    for i in range(n):
        total += yield echo(i)
    return total


@rk.workflow(name="bench.steps_then_signal")
def steps_then_signal(ctx: rk.Context, n: int):
    total = 0
    for i in range(n):
        total += yield echo(i)
    return total + (yield rk.wait_signal("go"))


@rk.workflow(name="bench.one_step")
def one_step(ctx: rk.Context, i: int):
    return (yield echo(i))


@rk.workflow(name="bench.fan_out")
def fan_out(ctx: rk.Context, n: int):
    return sum((yield rk.all(*[echo(i) for i in range(n)])))


@rk.workflow(name="bench.parked")
def parked(ctx: rk.Context):
    yield rk.sleep(timedelta(days=1))


@rk.workflow(name="bench.timers")
def timers(ctx: rk.Context, n: int):
    for _ in range(n):
        yield rk.sleep(timedelta(hours=1))
    return ctx.now().isoformat()


# -- helpers -------------------------------------------------------------------------------

def median(repeat: int, measure: Callable[[str], float]) -> float:
    values = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            values.append(measure(tmp))
        gc.collect()
    return statistics.median(values)


def peer(script: str, *args: object, env: dict[str, str] | None = None, timeout: float = 900) -> float | None:
    """Run a peer's measurement in its own process; its ``RESULT <number>`` line, or None."""
    done = subprocess.run([sys.executable, str(PEERS / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(line.split()[1])
    print(f"  ({script} {args} gave no result: {done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
    return None


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- 1. one durable step ---------------------------------------------------------------------

def raw_commit_us(tmp: str, mode: str, n: int) -> float:
    conn = sqlite3.connect(os.path.join(tmp, "raw.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[mode]}")
    conn.execute("CREATE TABLE t (run INTEGER NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL, "
                 "kind TEXT NOT NULL, name TEXT NOT NULL, at REAL NOT NULL, outcome TEXT NOT NULL, "
                 "encoding TEXT NOT NULL, payload, PRIMARY KEY (run, seq)) WITHOUT ROWID")
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (1, i, i, "activity", "echo", time.time(), "ok", "json", str(i)))
    conn.close()
    return (time.perf_counter() - t0) / n * 1e6


def step_us(tmp: str, mode: str, n: int) -> float:
    """The marginal cost of one step of a long workflow run with rk.run: the difference between
    n steps and n/5 steps, per step, so opening the store and the engine is not counted."""
    def run(k: int, name: str) -> float:
        t0 = time.perf_counter()
        assert rk.run(steps, k, workflow_id=name, db=os.path.join(tmp, f"{name}.db"), durability=mode) \
            == k * (k - 1) // 2
        return time.perf_counter() - t0

    short = max(1, n // 5)
    return (run(n, "long") - run(short, "short")) / (n - short) * 1e6


# -- 2. resume -----------------------------------------------------------------------------------

def resume_ms(tmp: str, n: int) -> float:
    """Record n steps, stop the engine; time a new engine replaying them and finishing."""
    db = os.path.join(tmp, "r.db")
    with rk.Engine(db, activity_threads=0, history_warning=10**9) as engine:
        engine.start(steps_then_signal, n, workflow_id="r")
        while (last := _last(engine.store)) is None or last < n:
            time.sleep(0.01)
    rk.send_signal(db, "r", "go", 1)
    t0 = time.perf_counter()
    with rk.Engine(db, activity_threads=0, history_warning=10**9) as engine:
        assert engine.start(steps_then_signal, n, workflow_id="r").result() == n * (n - 1) // 2 + 1
    return (time.perf_counter() - t0) * 1e3


def _last(store: rk.Store) -> int | None:
    if store.info("r") is None:
        return None
    event = store.last_event("r")
    return None if event is None else event.seq


def dbos_recovery_ms(tmp: str, n: int) -> float | None:
    """DBOS: a process records n steps and is SIGKILLed; time the next process's recovery."""
    db, flag = os.path.join(tmp, "dbos.sqlite"), os.path.join(tmp, "flag")
    child = subprocess.Popen([sys.executable, str(PEERS / "dbos_bench.py"), "record", db, str(n), flag],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT COUNT(*) FROM operation_outputs").fetchone()[0] >= n:
                    break
        except sqlite3.Error:
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    Path(flag).touch()
    seconds = peer("dbos_bench.py", "recover", db, env={"BENCH_FLAG": flag})
    return None if seconds is None else seconds * 1e3


# -- 3. throughput -----------------------------------------------------------------------------------

def throughput(tmp: str, n: int, threads: int) -> float:
    with rk.Engine(os.path.join(tmp, "t.db"), activity_threads=threads) as engine:
        t0 = time.perf_counter()
        handles = [engine.start(one_step, i, workflow_id=f"w{i}") for i in range(n)]
        for h in handles:
            h.result()
        return n / (time.perf_counter() - t0)


# -- 4. fan-out -----------------------------------------------------------------------------------------

def fan_out_ms(tmp: str, n: int) -> float:
    with rk.Engine(os.path.join(tmp, "f.db"), activity_threads=16) as engine:
        t0 = time.perf_counter()
        assert engine.start(fan_out, n, workflow_id="f").result() == n * (n - 1) // 2
        return (time.perf_counter() - t0) * 1e3


# -- 5. memory of parked workflows, time skipping --------------------------------------------------------

def parked_bytes(tmp: str, n: int, cache: int | None = None) -> float:
    """Python memory per workflow parked on a timer, driven by one engine (tracemalloc).

    ``cache``: the engine's ``max_cached_runs`` (0: every parked run is evicted)."""
    with rk.Engine(os.path.join(tmp, "p.db"), activity_threads=1, max_cached_runs=cache) as engine:
        for i in range(50):  # warm up caches and lazily built structures
            engine.start(parked, workflow_id=f"warm{i}")
        _wait_parked(engine, 50)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            engine.start(parked, workflow_id=f"p{i}")
        _wait_parked(engine, 50 + n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return (after - before) / n


def _wait_parked(engine: rk.Engine, count: int) -> None:
    while len(engine._runs) + len(engine._evicted) < count or len(engine._timers) < count:
        time.sleep(0.01)


def skip_1000_timers_ms(tmp: str) -> float:
    with TestEnv(warn_nondeterminism=False) as env:
        t0 = monotonic()  # time.perf_counter is frozen by freezegun inside the test environment
        env.run(timers, 1000)
        return (monotonic() - t0) * 1e3


# -- 6. history size on disk ----------------------------------------------------------------------------------

def bytes_per_step(tmp: str, n: int) -> float:
    db = os.path.join(tmp, "h.db")
    rk.run(steps, 10, workflow_id="small", db=db)
    base = _checkpointed_size(db)
    rk.run(steps, n, workflow_id="big", db=db)
    return (_checkpointed_size(db) - base) / n


def _checkpointed_size(db: str) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(db)


def dbos_bytes_per_step(tmp: str, n: int) -> float | None:
    db = os.path.join(tmp, "dbos.sqlite")
    if peer("dbos_bench.py", "steps", db, 10) is None:
        return None
    base = os.path.getsize(db)
    if peer("dbos_bench.py", "steps", db, n) is None:
        return None
    return (os.path.getsize(db) - base) / n


# -- 7. a million steps: replay memory stays bounded -------------------------------------------------------------

def million_step_replay(tmp: str, n: int) -> tuple[float, float]:
    """Write an n-step history directly, then resume it: (seconds, peak MB traced during the replay)."""
    db = os.path.join(tmp, "m.db")
    store = rk.SqliteStore(db)
    start = rk.Event(0, 0, "start", "bench.steps_then_signal", time.time(), "ok",
                     payloads.JSON, payloads.to_json({"args": [n], "kwargs": {}, "seed": 1, "rules": 2}))
    store.create("r", "bench.steps_then_signal", start)
    conn = store._conn()
    conn.execute("BEGIN")
    prev = conn.execute("SELECT digest FROM events WHERE run = 1 AND seq = 0").fetchone()[0]
    links = store.chain()

    def rows() -> Iterator[tuple[object, ...]]:  # each with its place in the run's hash chain
        nonlocal prev
        for i in range(n):
            event = rk.Event(i + 1, i + 1, "activity", "echo", 0.0, "ok", "json", str(i))
            prev = links.link(prev, event)
            yield (*event, prev)

    conn.executemany("INSERT INTO events VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.execute("COMMIT")
    store.close()
    rk.send_signal(db, "r", "go", 1)
    tracemalloc.start()
    t0 = time.perf_counter()
    with rk.Engine(db, activity_threads=0, history_warning=10**12) as engine:
        assert engine.start(steps_then_signal, n, workflow_id="r").result() == n * (n - 1) // 2 + 1
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return elapsed, peak


# -- the report -----------------------------------------------------------------------------------------------

def main() -> int:
    logging.getLogger("replaykit").setLevel(logging.ERROR)  # long benchmark histories warn by design
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (a smoke test)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--write", default=str(HERE.parent / "docs" / "benchmarks.md"),
                        help="where to write the markdown report ('' for nowhere)")
    opts = parser.parse_args()
    quick = opts.quick
    repeat = 1 if quick else opts.repeat
    peers = not opts.no_peers
    dbos = peers and have("dbos")
    temporal = peers and have("temporalio")
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None else f"{a / b:,.1f}x"

    out("# Benchmarks")
    out()
    out(f"Written by `python benchmarks/run_all.py` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPUs, "
        f"{platform.machine()}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
        + (f", dbos {_version('dbos')}" if dbos else "")
        + (f", temporalio {_version('temporalio')}" if temporal else "")
        + f". Medians of {repeat} runs{' (quick mode: small sizes)' if quick else ''}.")
    out()

    n_steps = 500 if quick else 5000
    out("## 1. One durable step (an activity that returns at once), against one raw SQLite commit")
    out()
    out("The marginal cost of a step of a long workflow under `rk.run` (n steps minus n/5 steps, per step), "
        "against one INSERT+COMMIT of the same row by hand, same journal and `synchronous` setting.")
    out()
    out("| durability | raw INSERT+COMMIT | replaykit step | vs raw (target <= 1.25x) | DBOS step | DBOS / replaykit |")
    out("|---|---|---|---|---|---|")
    dbos_step = median(min(repeat, 3), lambda t: (peer("dbos_bench.py", "steps", os.path.join(t, "d.sqlite"),
                                                       200 if quick else 1000) or float("nan")) * 1e6) \
        if dbos else None
    for mode in ("crash", "power"):
        n = n_steps if mode == "crash" else n_steps // 10
        raw = median(repeat, lambda t, m=mode, k=n: raw_commit_us(t, m, k))
        ours = median(repeat, lambda t, m=mode, k=n: step_us(t, m, k))
        target = "10x" if mode == "power" else "50x"
        theirs = (f"{dbos_step:,.0f} µs | {ratio(dbos_step, ours)} (target >= {target}) |" if dbos_step
                  else "n/a | n/a |")
        out(f"| {mode} | {raw:.1f} µs | {ours:.1f} µs | {ours / raw:.2f}x | {theirs}")
    out()
    out("DBOS on SQLite uses SQLite's defaults (rollback journal, `synchronous=FULL`): power-safe.")
    out()

    out("## 2. Resume after a crash")
    out()
    out("| recorded steps | replaykit | DBOS recovery after SIGKILL | temporalio Replayer | DBOS / replaykit | "
        "Temporal / replaykit |")
    out("|---|---|---|---|---|---|")
    for n in ((200, 1000) if quick else (1000, 10000)):
        ours = median(repeat, lambda t, k=n: resume_ms(t, k))
        theirs = median(1, lambda t, k=n: dbos_recovery_ms(t, k) or float("nan")) if dbos else None
        replay = (peer("temporal_bench.py", n) or float("nan")) * 1e3 if temporal else None
        out(f"| {n:,} | {ours:.1f} ms | " + (f"{theirs:,.0f} ms" if theirs else "n/a") + " | "
            + (f"{replay:,.0f} ms" if replay else "n/a") + f" | {ratio(theirs, ours)} | {ratio(replay, ours)} |")
    out()
    out("Targets: 10,000 steps <= 50 ms, and >= 100x faster than DBOS recovery and the Temporal Replayer. "
        "Each peer figure is one run (they take seconds); a Temporal history of N activities has 6 N + 5 events.")
    out()

    out("## 3. Throughput of one-step workflows (start to result, one process)")
    out()
    n_wf = 500 if quick else 5000
    inline = median(repeat, lambda t: throughput(t, n_wf, 0))
    pooled = median(repeat, lambda t: throughput(t, n_wf, 4))
    dbos_tp = peer("dbos_bench.py", "throughput", os.path.join(tempfile.mkdtemp(), "d.sqlite"),
                   200 if quick else 1000, 50) if dbos else None
    out("| engine | workflows/s | vs DBOS |")
    out("|---|---|---|")
    out(f"| replaykit, inline activities (`activity_threads=0`, a commit per step) | {inline:,.0f} | "
        f"{ratio(inline, dbos_tp)} |")
    out(f"| replaykit, 4 activity threads, group commit | {pooled:,.0f} | {ratio(pooled, dbos_tp)} |")
    out(f"| DBOS, 50 started at a time | {dbos_tp:,.0f} | 1.0x |" if dbos_tp else "| DBOS | n/a | |")
    out()
    out("Target: >= 5,000 workflows/s in the default durability mode.")
    out()

    out("## 4. Fan-out of parallel activities, gathered")
    out()
    n_fan = 100 if quick else 1000
    ours = median(repeat, lambda t: fan_out_ms(t, n_fan))
    theirs = (peer("dbos_bench.py", "fanout", os.path.join(tempfile.mkdtemp(), "d.sqlite"), n_fan) or 0) * 1e3 \
        if dbos else None
    out("| activities | replaykit `rk.all` | DBOS (a child workflow each) | DBOS / replaykit |")
    out("|---|---|---|---|")
    out(f"| {n_fan:,} | {ours:,.0f} ms | " + (f"{theirs:,.0f} ms" if theirs else "n/a") + f" | {ratio(theirs, ours)} |")
    out()

    out("## 5. Parked workflows and time skipping")
    out()
    n_park = 1000 if quick else 10000
    per = median(min(repeat, 3), lambda t: parked_bytes(t, n_park))
    evicted = median(min(repeat, 3), lambda t: parked_bytes(t, n_park, cache=0))
    skip = median(repeat, skip_1000_timers_ms)
    out("| measure | replaykit | target |")
    out("|---|---|---|")
    out(f"| memory per workflow parked on a timer, cached ({n_park:,} parked, Python heap) | {per / 1024:.1f} KB "
        "| <= 4 KB |")
    out(f"| the same, evicted (`max_cached_runs=0`: replayed when the timer is due) | {evicted / 1024:.2f} KB | |")
    out(f"| a workflow with 1,000 timers, run in the test environment | {skip:,.0f} ms | |")
    out()
    out("DBOS has no time skipping; Temporal's needs a separate test server binary.")
    out()

    out("## 6. History size on disk")
    out()
    size = median(repeat, lambda t: bytes_per_step(t, 2000 if quick else 10000))
    dbos_size = median(1, lambda t: dbos_bytes_per_step(t, 1000) or float("nan")) if dbos else None
    out("| | bytes per step |")
    out("|---|---|")
    out(f"| replaykit (SQLite, after checkpoint) | {size:.0f} |")
    if dbos_size:
        out(f"| DBOS (SQLite) | {dbos_size:.0f} |")
    out()

    out("## 7. Replaying a very long history")
    out()
    out("| recorded steps | resume time | Python heap peak during the resume |")
    out("|---|---|---|")
    for n_big in ((1_000, 10_000) if quick else (100_000, 1_000_000)):  # quick: a smoke run of the code path
        seconds, peak = million_step_replay(tempfile.mkdtemp(), n_big)
        out(f"| {n_big:,} | {seconds:.1f} s | {peak * 1024:,.0f} KB |")
    out()
    out("The peak does not grow with the history: it is streamed from SQLite, never loaded whole.")
    out()

    out("## 8. Non-determinism warnings")
    out()
    out("What `warn_nondeterminism` (on by default in `rk.run` and `Engine`) costs: a profile hook while "
        "workflow code runs a live step; replayed steps are not watched (`benchmarks/bench_nondeterminism.py`). "
        "CPU time of the process per step, runs with and without alternating.")
    out()
    from bench_nondeterminism import measure_all  # imported here: it imports this module's workflows

    out("| per step | without | with | cost of the warnings |")
    out("|---|---|---|---|")
    for what, without, with_ in measure_all(500 if quick else 5000, 1 if quick else max(repeat, 9)):
        out(f"| {what} | {without:.1f} µs | {with_:.1f} µs | {with_ - without:+.1f} µs |")
    out()
    if opts.write:
        kept = ""  # the sections from section 9 on come from their own scripts: keep them
        if Path(opts.write).exists():
            old = Path(opts.write).read_text()
            kept = old[old.index(KEPT_FROM):] if KEPT_FROM in old else ""
        Path(opts.write).write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
        print(f"\n(written to {opts.write})")
    return 0


KEPT_FROM = "## 9. "  # docs/benchmarks.md from this heading on comes from other scripts: kept as it is


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module)


if __name__ == "__main__":
    sys.exit(main())
