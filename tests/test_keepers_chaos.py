"""Chaos with keepers: three engine processes with tiny caches (``max_cached_runs`` 0 or 2) on one store
(SQLite, PostgreSQL), each starting runs and recovering in a loop, SIGKILLed and restarted at random
while the test signals, pauses/resumes, cancels and terminates runs from outside; then one survivor
recovers until every run has ended.

Every activity appends ``<run id>:<step> <pid> <start> <end>`` to one journal (O_APPEND). Checked:
every run ends (completed, or cancelled when asked); a step ran again only after the process that ran
the earlier copy was SIGKILLed (at-least-once), and never after its result was recorded; the activities
of one run never overlap in time in two processes; a run's activities move to another process only
once the process that ran the one before was killed (its engine held it, or kept it evicted: a live
keeper's runs are refused elsewhere); every history replays through the code (terminated runs aside).

``campaign()`` is also run outside pytest, longer (see the report of the campaign): it returns the
problems found instead of asserting.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

import replaykit as rk
from replaykit.errors import IllegalTransitionError, ResultTimeoutError, WorkflowNotFoundError
from replaykit.testing import replay_all

from conftest import PYTHON
from helpers import journal


@rk.activity(name="kc_note")
def note(path: str, tag: str) -> str:
    start = time.time()
    time.sleep(0.02)  # a window in which a second driver's copy would overlap
    journal(path, f"{tag} {os.getpid()} {start:.6f} {time.time():.6f}")
    return tag


@rk.workflow(name="kc_flow")
def flow(ctx: rk.Context, path: str, plan: list[list[Any]]) -> Any:
    """A note before each op of ``plan`` (["sleep", s], ["any", s]: a timer or a "poke" signal,
    ["child", plan]: a child run of this workflow) and one at the end."""
    wid = ctx.workflow_id
    for i, (kind, arg) in enumerate(plan):
        yield note(path, f"{wid}:{i}")
        if kind == "sleep":
            yield rk.sleep(arg)
        elif kind == "any":
            yield rk.any(rk.sleep(arg), rk.wait_signal("poke"))
        elif kind == "child":
            yield rk.child_workflow(flow, path, arg)
    yield note(path, f"{wid}:end")
    return len(plan)


# One engine process: starts the runs it was given that the store does not hold yet (a restarted
# process starts those its killed predecessor had not), a pause of KC_GAP seconds after each, then
# recovers in a loop until killed.
_ENGINE = """
import json, os, random, sys, time
import replaykit as rk
import test_keepers_chaos as kc
from helpers import journal
db, path, cache, seed, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
runs = json.loads(sys.argv[6])
rnd = random.Random(seed)
engine = rk.Engine(db, max_cached_runs=cache, poll_interval=0.05)
pid = os.getpid()
engine.on("*", lambda event: journal(path + ".events", f"{event.kind} {event.workflow_id} {pid}"))
print("up", pid, flush=True)
gap = [float(g) for g in os.environ.get("KC_GAP", "0.5,3.0").split(",")]
for wid, plan in runs:
    try:
        if engine.store.info(wid) is not None:
            continue
        engine.start(kc.flow, path, plan, workflow_id=wid)
        print("started", wid, flush=True)
    except Exception as exc:
        print("start failed", wid, repr(exc), flush=True)
    time.sleep(rnd.uniform(*gap))
if mode == "forever":
    engine.run_forever(rescan=0.2)
while True:
    try:
        engine.recover()
    except Exception as exc:
        print("recover failed", repr(exc), flush=True)
    time.sleep(rnd.uniform(0.05, 0.3))
"""


def _plan(rnd: random.Random, child_ok: bool = True) -> list[list[Any]]:
    ops: list[list[Any]] = []
    for _ in range(rnd.randint(4, 10)):
        roll = rnd.random()
        if roll < 0.55:
            ops.append(["sleep", round(rnd.uniform(0.05, 0.5), 3)])
        elif roll < 0.85 or not child_ok:
            ops.append(["any", round(rnd.uniform(0.1, 0.8), 3)])
        else:
            ops.append(["child", _plan(rnd, child_ok=False)])
    return ops


@attrs.frozen
class Line:
    wid: str
    step: str
    pid: int
    start: float
    end: float


def _lines(path: Path) -> list[Line]:
    lines = []
    if path.exists():
        for text in path.read_text().splitlines():
            tag, pid, start, end = text.split()
            wid, step = tag.rsplit(":", 1)
            lines.append(Line(wid, step, int(pid), float(start), float(end)))
    return lines


class Fleet:
    def __init__(self, db: str, path: str, env: dict[str, str], logs: Path, rnd: random.Random,
                 assigned: list[list[tuple[str, Any]]]) -> None:
        self.db, self.path, self.env, self.logs, self.rnd = db, path, env, logs, rnd
        self.assigned = assigned
        self.alive: dict[int, subprocess.Popen[bytes]] = {}  # slot -> process
        self.killed_at: dict[int, float] = {}  # pid -> time of its SIGKILL
        self.all: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def spawn(self, slot: int, runs: list[tuple[str, Any]] | None = None) -> None:
        self.count += 1
        cache = self.rnd.choice([0, 2])
        mode = self.rnd.choice(["recover", "forever"])
        runs = self.assigned[slot] if runs is None else runs
        with open(self.logs / f"engine-{self.count}-slot{slot}.log", "wb") as log:
            argv = [self.db, self.path, str(cache), str(self.rnd.randrange(1 << 30)), mode, json.dumps(runs)]
            proc = subprocess.Popen([PYTHON, "-c", _ENGINE, *argv], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.alive[slot] = proc
        self.all.append(proc)

    def kill(self, slot: int) -> None:
        proc = self.alive.pop(slot)
        proc.send_signal(signal.SIGKILL)
        self.killed_at[proc.pid] = time.time()
        proc.wait(timeout=30)

    def kill_all(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


class Controls(threading.Thread):
    """From outside, at random: signals, pause then resume, cancel, terminate (in threads of their own)."""

    def __init__(self, db: str, rnd: random.Random, tops: list[str], all_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.db, self.rnd, self.tops, self.all_ids = db, rnd, tops, all_ids
        self.done = threading.Event()
        self.asked_end: set[str] = set()  # cancel or terminate asked (top-level runs only)
        self.terminated: set[str] = set()  # terminate asked: its history ends without the code's say
        self.paused: set[str] = set()
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def _ids(self) -> list[str]:
        return self.all_ids + [f"{t}/{s}" for t in self.tops for s in range(20)]  # child ids, if they exist

    def run(self) -> None:
        pending_resume: list[tuple[float, str]] = []
        while not self.done.wait(self.rnd.uniform(0.2, 0.7)):
            now = time.monotonic()
            for when, wid in [p for p in pending_resume if p[0] <= now]:
                pending_resume.remove((when, wid))
                self._do("resume", wid, lambda w=wid: rk.resume(self.db, w))
            roll = self.rnd.random()
            try:
                with rk.Client(self.db) as client:
                    live = [i.workflow_id for i in client.list() if not i.status.is_terminal]
            except Exception as exc:  # noqa: BLE001 - reported
                self.errors.append(f"list: {exc!r}")
                continue
            if not live:
                continue
            live_tops = [w for w in live if w in self.tops] or live
            wid = self.rnd.choice(live)
            if roll < 0.45:
                self._do("signal", wid, lambda w=wid: rk.send_signal(self.db, w, "poke", 1))
            elif roll < 0.7:
                if self._do("pause", wid, lambda w=wid: rk.pause(self.db, w)):
                    self.paused.add(wid)
                    pending_resume.append((now + self.rnd.uniform(0.2, 2.0), wid))
            elif roll < 0.85 and len(self.asked_end) < len(self.tops) // 3:
                top = self.rnd.choice(live_tops)
                if self._do("cancel", top, lambda w=top: rk.cancel(self.db, w, "chaos")):
                    self.asked_end.add(top)
            elif roll >= 0.85 and len(self.asked_end) < len(self.tops) // 3:
                top = self.rnd.choice(live_tops)
                self.asked_end.add(top)
                self.terminated.add(top)
                t = threading.Thread(target=self._terminate, args=(top,), daemon=True)
                t.start()
                self.threads.append(t)
        for _, wid in pending_resume:
            self._do("resume", wid, lambda w=wid: rk.resume(self.db, w))

    def _terminate(self, wid: str) -> None:
        self._do("terminate", wid, lambda: rk.terminate(self.db, wid, "chaos", wait=40))

    def _do(self, kind: str, wid: str, call: Any) -> bool:
        try:
            call()
        except (IllegalTransitionError, WorkflowNotFoundError):
            return False  # ended, not paused, or not created yet
        except ResultTimeoutError as exc:
            self.errors.append(f"{kind} {wid}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - reported
            self.errors.append(f"{kind} {wid}: {exc!r}")
            return False
        self.counts[kind] += 1
        return True


@attrs.define
class Outcome:
    seed: int
    runs: int = 0
    kills: int = 0
    executions: int = 0
    resumed: int = 0  # run_resumed events: runs replayed (woken after eviction, or taken up)
    moved: int = 0  # runs whose activities ran in more than one process
    repeats_allowed: int = 0
    problems: list[str] = attrs.Factory(list)
    counts: dict[str, int] = attrs.Factory(dict)
    wall: float = 0.0


def campaign(db: str, env: dict[str, str], work: Path, seed: int, *, slots: int = 3, runs_per_slot: int = 6,
             chaos: float = 20.0, finish_within: float = 90.0) -> Outcome:
    rnd = random.Random(seed)
    out = Outcome(seed)
    began = time.monotonic()
    path = work / "journal"
    assigned = [[(f"s{slot}r{i}", _plan(rnd)) for i in range(runs_per_slot)] for slot in range(slots)]
    tops = [wid for runs in assigned for wid, _ in runs]
    fleet = Fleet(db, str(path), env, work, rnd, assigned)
    controls = Controls(db, random.Random(rnd.randrange(1 << 30)), tops, tops)
    try:
        for slot in range(slots):
            fleet.spawn(slot)
        time.sleep(1.0)
        controls.start()
        end_chaos = time.monotonic() + chaos
        while time.monotonic() < end_chaos:
            time.sleep(rnd.uniform(0.5, 2.0))
            slot = rnd.randrange(slots)
            fleet.kill(slot)
            out.kills += 1
            time.sleep(rnd.choice([0.0, 0.0, rnd.uniform(0.1, 1.0)]))
            fleet.spawn(slot)
        controls.done.set()
        controls.join(timeout=60)
        survivor = rnd.randrange(slots)
        for slot in list(fleet.alive):
            if slot != survivor:
                fleet.kill(slot)
                out.kills += 1
        fleet.spawn(slots, [run for runs in assigned for run in runs])  # starts the runs never started
        for wid in controls.paused:
            controls._do("resume", wid, lambda w=wid: rk.resume(db, w))
        deadline = time.monotonic() + finish_within
        with rk.Client(db) as client:
            while True:
                infos = client.list()
                if {i.workflow_id for i in infos} >= set(tops) and all(i.status.is_terminal for i in infos):
                    break
                if time.monotonic() > deadline:
                    stuck = [(i.workflow_id, i.status.value) for i in infos if not i.status.is_terminal]
                    out.problems.append(f"runs not ended {finish_within:g}s after the chaos: {stuck}; "
                                        f"keepers: {[(w, _keeper(client.store, w)) for w, _ in stuck]}")
                    break
                time.sleep(0.2)
            for t in controls.threads:
                t.join(timeout=60)
            out.problems += [f"control error: {e}" for e in controls.errors]
            by_id = {i.workflow_id: i for i in client.list()}
            histories = {wid: list(client.store.events(wid)) for wid in by_id}
            for report in replay_all(client.store, workflows=[flow]):
                if not report.ok and report.workflow_id.split("/")[0] not in controls.terminated:
                    out.problems.append(f"replay of {report.workflow_id}: {report.error!r}")
            plans = {wid: plan for runs in assigned for wid, plan in runs}
            _check(out, plans, by_id, histories, controls.asked_end, _lines(path), fleet.killed_at, client.store)
        out.counts = dict(controls.counts)
        events = Path(str(path) + ".events")
        out.resumed = events.read_text().count("run_resumed ") if events.exists() else 0
        out.runs = len(by_id)
    finally:
        controls.done.set()
        fleet.kill_all()
    out.wall = time.monotonic() - began
    return out


def _keeper(store: Any, wid: str) -> Any:
    try:
        return store.keeper_of(wid), store.lock_owner(wid)
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return repr(exc)


def _check(out: Outcome, plans: dict[str, Any], infos: dict[str, Any], histories: dict[str, list[Any]],
           asked_end: set[str], lines: list[Line], killed_at: dict[int, float], store: Any) -> None:
    problems = out.problems
    out.executions = len(lines)
    # Expected runs: every top run; a child for each child op its parent reached.
    for wid in plans:
        if wid not in infos:
            problems.append(f"{wid} was never created")
    for wid, info in infos.items():
        top = wid.split("/")[0]
        if info.status is rk.Status.COMPLETED:
            continue
        if info.status is rk.Status.CANCELLED and top in asked_end:
            continue
        if info.status.is_terminal:
            problems.append(f"{wid} ended {info.status.value} (top asked to end: {top in asked_end}): "
                            f"{histories[wid][-1]}")
    # Recorded activity results: tag -> time recorded.
    recorded: dict[tuple[str, str], float] = {}
    for wid, events in histories.items():
        for e in events:
            if e.kind == "activity" and e.outcome == "ok":
                tag = e.value(store.codec)
                w, step = tag.rsplit(":", 1)
                if (w, step) in recorded:
                    problems.append(f"{tag} recorded twice in {wid}")
                recorded[(w, step)] = e.at
        if infos[wid].status is rk.Status.COMPLETED:
            plan = plans.get(wid)
            if plan is None:  # a child: its plan is in its start event's args
                continue
            want = {str(i) for i in range(len(plan))} | {"end"}
            got = {step for (w, step) in recorded if w == wid}
            if got != want:
                problems.append(f"{wid} completed with steps {sorted(got)}, want {sorted(want)}")
    by_tag: dict[tuple[str, str], list[Line]] = collections.defaultdict(list)
    for line in lines:
        by_tag[(line.wid, line.step)].append(line)
    for tag, copies in by_tag.items():
        if tag not in recorded and infos.get(tag[0]) is not None and infos[tag[0]].status is rk.Status.COMPLETED:
            problems.append(f"{tag} ran ({copies}) but is not recorded in a completed run")
        copies.sort(key=lambda line: line.start)
        at = recorded.get(tag)
        for c in copies:
            if at is not None and c.start > at:
                problems.append(f"{tag} ran again after its result was recorded at {at:.6f}: {c}")
        for a, b in itertools.pairwise(copies):
            kill = killed_at.get(a.pid)
            if a.pid != b.pid and kill is not None and a.end <= kill <= b.start:
                out.repeats_allowed += 1
            else:
                problems.append(f"{tag} ran twice: {a} then {b} (first pid killed at {kill})")
    # One driver at a time: the activities of a run never overlap in two processes.
    by_run: dict[str, list[Line]] = collections.defaultdict(list)
    for line in lines:
        by_run[line.wid].append(line)
    out.moved = sum(1 for execs in by_run.values() if len({line.pid for line in execs}) > 1)
    for wid, execs in by_run.items():
        execs.sort(key=lambda line: line.start)
        for a, b in itertools.pairwise(execs):  # a run leaves a live process only for a killed one's successor
            kill = killed_at.get(a.pid)
            if b.pid != a.pid and (kill is None or kill > b.start):
                problems.append(f"{wid} moved from pid {a.pid} (alive: killed at {kill}) to pid {b.pid}: {a} then {b}")
        for i, a in enumerate(execs):
            for b in execs[i + 1:]:
                if b.start < a.end and b.pid != a.pid:
                    problems.append(f"{wid}: {a} and {b} ran at once in two processes")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [int(os.environ.get("KC_SEED", "0")) or 20261207])
def test_engines_with_tiny_caches_killed_at_random_keep_their_promises(any_db: str, tmp_path: Path,
                                                                       child_env: dict[str, str], seed: int) -> None:
    out = campaign(any_db, child_env, tmp_path, seed)
    store = "postgresql" if any_db.startswith("postgresql") else "sqlite"
    print(f"\nkeepers chaos {store} seed {seed}: {out.runs} runs, {out.kills} kills, {out.executions} executions, "
          f"{out.repeats_allowed} repeats after a kill, {out.resumed} resumes, {out.moved} runs moved, "
          f"controls {out.counts}, {out.wall:.1f} s")
    assert not out.problems, f"seed {seed} (rerun with KC_SEED={seed}):\n" + "\n".join(out.problems[:30])
    assert out.kills >= 5
