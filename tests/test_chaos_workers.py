"""Chaos: four worker processes on one store (an SQLite file, a PostgreSQL database), a random one
SIGKILLed and restarted every 1-2 s while a client starts 260 workflows and signals them.

Checked afterwards, from the store and from the activity ledger (``tests/worker_app.py``: every
activity appends ``name n pid start end``): every run completed once with the right result; no
step was recorded twice; no activity started again after its result was recorded; no two workers
drove one run at once; the limited queue never ran more activities at once than its limit; the
survivors stop cleanly on SIGTERM and the registry ends empty (the dead were reaped).
"""

from __future__ import annotations

import collections
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from worker_app import order, parent, quick, sleeper

import replaykit as rk
from replaykit.history import RESULT, Event

from conftest import PYTHON

APP = str(Path(__file__).with_name("worker_app.py"))
WORKERS = 4
LIMIT = 2  # the "limited" queue's fleet-wide concurrency
FINISH_WITHIN = 120.0  # seconds: a hang fails the test instead of blocking CI

# What each workflow's activities write to the ledger, in step order.
ACTIVITIES = {"order": ["charge", "ship"], "quick": ["quick"], "parent": [], "sleeper": ["before", "after"]}


@attrs.define
class Run:
    """A run the test expects: its id, workflow, the ``n`` its activities log, and its result."""

    workflow_id: str
    name: str
    n: int
    result: Any
    queue: str = "main"


@attrs.frozen
class Line:
    """One ledger line: an activity execution that finished."""

    name: str
    n: int
    pid: int
    start: float
    end: float


def _workload() -> tuple[list[tuple[Any, tuple[Any, ...], Run]], list[Run]]:
    """260 starts (110 orders, 60 quick, 30 parents with a child each, 20 sleepers, 40 quick in the
    limited queue), and every run expected (children included). Each ``n`` is unique in the store."""
    starts: list[tuple[Any, tuple[Any, ...], Run]] = []
    for n in range(110):
        starts.append((order, (n, 0.5), Run(f"order-{n}", "order", n, n * 2 if _approved(n) else -n)))
    for n in range(1000, 1060):
        starts.append((quick, (n,), Run(f"quick-{n}", "quick", n, n + 1)))
    for n in range(2000, 2030):
        starts.append((parent, (n,), Run(f"parent-{n}", "parent", n, (n + 1) * 10)))
    for n in range(3000, 3020):
        starts.append((sleeper, (n, 2.0), Run(f"sleeper-{n}", "sleeper", n, n)))
    for n in range(4000, 4040):
        starts.append((quick, (n, 0.1), Run(f"limited-{n}", "quick", n, n + 1, queue="limited")))
    random.shuffle(starts)
    runs = [run for _, _, run in starts]
    runs += [Run(f"{r.workflow_id}/1", "quick", r.n, r.n + 1) for r in runs if r.name == "parent"]
    return starts, runs


def _approved(n: int) -> bool:
    return n % 3 != 0


class Fleet:
    """Worker processes on one store, each serving ``main`` and ``limited`` (concurrency LIMIT)."""

    def __init__(self, db: str, env: dict[str, str], logs: Path) -> None:
        self.db, self.env, self.logs = db, env, logs
        self.alive: list[subprocess.Popen[bytes]] = []
        self.log_of: dict[int, Path] = {}
        self.killed: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._count = 0

    def spawn(self) -> None:
        self._count += 1
        path = self.logs / f"worker-{self._count}.log"
        with open(path, "wb") as log:  # the process keeps its own copy of the descriptor
            proc = subprocess.Popen([PYTHON, APP, self.db, "main,limited", "--limit", f"limited={LIMIT}"],
                                    env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.alive.append(proc)
        self.log_of[proc.pid] = path

    def kill_one(self) -> None:
        """SIGKILL a random live worker and start another in its place."""
        with self._lock:
            victim = random.choice(self.alive)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            self.alive.remove(victim)
            self.killed.append(victim)
            self.spawn()

    def pids(self) -> set[int]:
        with self._lock:
            return {p.pid for p in self.alive}

    def wait_ready(self) -> None:
        """Every live worker printed ``ready``, so it is about to handle SIGTERM itself (a worker is
        registered, and claims, before ``run()`` installs its handler: a SIGTERM in between kills it
        as Python's default does)."""
        deadline = time.monotonic() + 30
        for proc in self.alive:
            while b"ready " not in self.log_of[proc.pid].read_bytes():
                assert proc.poll() is None and time.monotonic() < deadline, self.log_of[proc.pid].read_text()
                time.sleep(0.05)

    def terminate(self) -> list[int | None]:
        """SIGTERM every live worker; their exit codes (None: still running after the timeout)."""
        with self._lock:
            for proc in self.alive:
                proc.send_signal(signal.SIGTERM)
            codes: list[int | None] = []
            for proc in self.alive:
                try:
                    codes.append(proc.wait(timeout=30))
                except subprocess.TimeoutExpired:
                    codes.append(None)
            return codes

    def kill_all(self) -> None:
        for proc in self.alive + self.killed:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


class Killer(threading.Thread):
    """Kills a random worker every 1-2 s until stopped."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(daemon=True)
        self.fleet, self.kills = fleet, 0
        self.errors: list[BaseException] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(random.uniform(1.0, 2.0)):
            try:
                self.fleet.kill_one()
                self.kills += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                return


@pytest.fixture(params=["sqlite", "postgres"])
def chaos_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "chaos.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def fleet(chaos_db: str, tmp_path: Path, child_env: dict[str, str]) -> Iterator[Fleet]:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    fleet = Fleet(chaos_db, {**child_env, "RK_LEDGER": str(ledger)}, tmp_path)
    try:
        yield fleet
    finally:
        fleet.kill_all()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workers_killed_at_random_lose_nothing_and_repeat_nothing(chaos_db: str, fleet: Fleet,
                                                                  tmp_path: Path) -> None:
    starts, runs = _workload()
    began = time.monotonic()
    with rk.Client(chaos_db) as client:
        for _ in range(WORKERS):
            fleet.spawn()
        killer = Killer(fleet)
        killer.start()
        try:
            _start_and_signal(client, starts)
            _wait_all_ended(client, len(runs))
            killer.done.set()
            killer.join(timeout=30)
            assert not killer.errors, killer.errors
            assert not killer.is_alive()
            wall = time.monotonic() - began
            fleet.wait_ready()
            _wait_registry_is(client, fleet.pids())
            codes = fleet.terminate()
            assert codes == [0] * WORKERS, _logs(tmp_path)
            assert client.workers() == []
            statuses = {info.workflow_id: info.status for info in client.list()}
            histories = {run.workflow_id: list(client.store.events(run.workflow_id)) for run in runs}
        finally:
            killer.done.set()
    lines = _ledger(tmp_path / "ledger.txt")
    assert statuses == {run.workflow_id: rk.Status.COMPLETED for run in runs}
    _check_results(runs, histories)
    duplicates = _repeats_after_record(runs, histories, lines)
    assert not duplicates, duplicates[:10]
    moved = _check_one_driver_at_a_time(runs, lines)
    overlap = _max_overlap([line for line in lines if line.n >= 4000])
    assert overlap <= LIMIT, f"the limited queue ran {overlap} activities at once (limit {LIMIT})"
    assert killer.kills >= 5, f"only {killer.kills} kills: the run was too short to test anything"
    struck = {p.pid for p in fleet.killed} & {line.pid for line in lines}
    assert struck, "no worker killed had run an activity: the kills tested nothing"
    store = "postgresql" if chaos_db.startswith("postgresql") else "sqlite"
    print(f"\nchaos {store}: {len(starts)} workflows (+{len(runs) - len(starts)} children), "
          f"{killer.kills} kills, {wall:.1f} s, {len(lines)} activity executions, {len(duplicates)} duplicates, "
          f"max overlap in 'limited' {overlap}/{LIMIT}, {len(struck)} killed workers had run activities, "
          f"{moved} runs driven by several workers")


# -- driving ----------------------------------------------------------------------------------


def _start_and_signal(client: rk.Client, starts: list[tuple[Any, tuple[Any, ...], Run]]) -> None:
    """Start a batch of runs a second (the kills go on the whole time). An order whose ``n`` is a
    multiple of 4 is signalled at once (often before any worker took it), the others two batches
    later (most find their order parked). Each batch also repeats one start of the batch before
    (a retried start is the same run, not a new one)."""
    unsignalled: list[list[Run]] = []
    previous: list[tuple[Any, tuple[Any, ...], Run]] = []
    for i in range(0, len(starts), 20):
        batch = starts[i:i + 20]
        for workflow, args, run in batch + previous[:1]:
            client.start(workflow, *args, workflow_id=run.workflow_id, queue=run.queue)
        orders = [run for _, _, run in batch if run.name == "order"]
        _signal(client, [run for run in orders if run.n % 4 == 0])
        unsignalled.append([run for run in orders if run.n % 4 != 0])
        if len(unsignalled) > 2:
            _signal(client, unsignalled.pop(0))
        previous = batch
        time.sleep(1.0)
    for runs in unsignalled:
        _signal(client, runs)


def _signal(client: rk.Client, runs: list[Run]) -> None:
    for run in runs:
        client.signal(run.workflow_id, "approved", _approved(run.n))


def _wait_all_ended(client: rk.Client, total: int) -> None:
    deadline = time.monotonic() + FINISH_WITHIN
    while time.monotonic() < deadline:
        infos = client.list()
        ended = [i for i in infos if i.status.is_terminal]
        if len(ended) == total:
            return
        failed = [i for i in ended if i.status != rk.Status.COMPLETED]
        assert not failed, failed
        time.sleep(0.2)
    open_runs = [i for i in client.list() if not i.status.is_terminal]
    raise AssertionError(f"{len(open_runs)} runs still open after {FINISH_WITHIN} s: {open_runs[:10]}; "
                         f"workers: {client.workers()}")


def _wait_registry_is(client: rk.Client, pids: set[int]) -> None:
    """The live workers reap the dead ones from the registry (bounded wait)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listed = {w.pid for w in client.workers()}
        if listed == pids:
            return
        time.sleep(0.1)
    raise AssertionError(f"registry lists pids {sorted(w.pid for w in client.workers())}, live are {sorted(pids)}")


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("worker-*.log")))


def _ledger(path: Path) -> list[Line]:
    lines = []
    for text in path.read_text().splitlines():
        name, n, pid, start, end = text.split()
        lines.append(Line(name, int(n), int(pid), float(start), float(end)))
    return lines


# -- checks -----------------------------------------------------------------------------------


def _check_results(runs: list[Run], histories: dict[str, list[Event]]) -> None:
    """Completed once, with the right result; no (step, kind) recorded twice."""
    for run in runs:
        events = histories[run.workflow_id]
        results = [e for e in events if e.kind == RESULT]
        assert len(results) == 1 and events[-1] is results[0], (run, events)
        assert (results[0].outcome, results[0].value()) == ("ok", run.result), (run, results[0])
        pairs = collections.Counter((e.step, e.kind) for e in events)
        assert max(pairs.values()) == 1, (run.workflow_id, [p for p, c in pairs.items() if c > 1])
        assert [e.seq for e in events] == list(range(len(events))), run.workflow_id


def _activity_steps(runs: list[Run], histories: dict[str, list[Event]]) -> dict[tuple[str, int], tuple[str, Event]]:
    """(ledger name, n) -> (run id, its recorded activity event)."""
    steps = {}
    for run in runs:
        recorded = sorted((e for e in histories[run.workflow_id] if e.kind == "activity"), key=lambda e: e.step)
        assert len(recorded) == len(ACTIVITIES[run.name]), (run, recorded)
        for name, event in zip(ACTIVITIES[run.name], recorded, strict=True):
            steps[(name, run.n)] = (run.workflow_id, event)
    return steps


def _repeats_after_record(runs: list[Run], histories: dict[str, list[Event]],
                          lines: list[Line]) -> list[tuple[Line, str, Event]]:
    """Each recorded activity ran (has a ledger line); the executions started after its result was
    recorded (at-least-once allows running again one that finished but was not yet recorded when
    its worker died: that one starts before the recorded event)."""
    steps = _activity_steps(runs, histories)
    seen = {(line.name, line.n) for line in lines}
    assert seen == set(steps), (sorted(seen - set(steps))[:10], sorted(set(steps) - seen)[:10])
    return [(line, *steps[(line.name, line.n)]) for line in lines if line.start > steps[(line.name, line.n)][1].at]


def _check_one_driver_at_a_time(runs: list[Run], lines: list[Line]) -> int:
    """Activities of one run, run by different workers, never overlap in time. Returns how many
    runs had activities run by more than one worker."""
    run_of = {(name, run.n): run.workflow_id for run in runs for name in ACTIVITIES[run.name]}
    by_run: dict[str, list[Line]] = collections.defaultdict(list)
    for line in lines:
        by_run[run_of[(line.name, line.n)]].append(line)
    clashes = []
    for workflow_id, execs in by_run.items():
        execs.sort(key=lambda line: line.start)
        for i, a in enumerate(execs):
            clashes += [(workflow_id, a, b) for b in execs[i + 1:] if b.start < a.end and b.pid != a.pid]
    assert not clashes, clashes[:10]
    return sum(1 for execs in by_run.values() if len({line.pid for line in execs}) > 1)


def _max_overlap(lines: list[Line]) -> int:
    """The most intervals open at one moment (an end at the same instant as a start closes first)."""
    points = sorted([(line.start, 1) for line in lines] + [(line.end, -1) for line in lines])
    most = now = 0
    for _, delta in points:
        now += delta
        most = max(most, now)
    return most
