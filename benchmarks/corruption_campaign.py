"""A corruption campaign for SQLite stores: damage a recorded store one way at a time, read it back.

    python benchmarks/corruption_campaign.py [--trials 1000] [--seed 1] [--jobs 2] [--keep-failures DIR]
    python benchmarks/corruption_campaign.py --seed 1 --only-trial 17 [--pristine DIR/pristine]

Each shape (8-20 activities returning str, int, dict and tuple values: JSON and signed pickles; a timer;
a signal) is recorded once by a subprocess into a pristine store: ``done`` runs completed, ``killed``
ones were SIGKILLed before an activity (their -wal file is left), ``waiting`` ones park on a signal
that is then sent. Beside ``wf`` each store holds a finished run ``other``. A trial copies a pristine
store, damages it one seeded way (DAMAGES), then runs each reader in a child forked from one fresh
subprocess that has imported replaykit: ``replaykit history``, ``list``, ``check`` (``replaykit.cli.main``,
as the console script calls it), then a rerun (``rk.run``, same id). Every activity appends its index to
a ledger (one per reader). Outcomes: see OUTCOMES; a tail-loss is damage that only lost the last commits
of an unfinished run, after which only those activities run again (and a CLI shows the shorter history).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import replaykit as rk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corruption_damage import DAMAGES, WF  # noqa: E402  (beside this script)

HERE = Path(__file__).resolve().parent
SECRET = "corruption-campaign-test-secret-7f3a"
PAYLOAD = {"approved": True, "by": "campaign"}
READERS = ("history", "list", "check", "rerun")
REFUSED, HARMLESS, TAIL = "refused", "harmless", "tail-loss (expected re-run)"
WRONG, RERUN, RAW, HANG = "WRONG RESULT", "ACTIVITY RE-RUN", "RAW EXCEPTION", "HANG"
OUTCOMES = (REFUSED, HARMLESS, TAIL, WRONG, RERUN, RAW, HANG)
BAD = (WRONG, RERUN, RAW, HANG)
ENDED_OTHERWISE = ("WorkflowFailed", "WorkflowCancelled", "WorkflowTimedOut")  # a rerun that ends a new way


# -- the workflow every shape records -------------------------------------------------------------------

def _step(name: str, make: Callable[[int], Any]) -> Any:
    """An activity that appends ``i`` to the ledger (one write(2): it survives a SIGKILL), then returns
    ``make(i)``. The builder of a ``killed`` shape dies just before activity $CAMPAIGN_KILL_AT."""
    def run(i: int) -> Any:
        if os.environ.get("CAMPAIGN_KILL_AT") == str(i):
            os.kill(os.getpid(), signal.SIGKILL)
        fd = os.open(os.environ["CAMPAIGN_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{i}\n".encode())
        finally:
            os.close(fd)
        return make(i)
    return rk.activity(name=name)(run)


STEPS = (_step("as_str", lambda i: f"s-{i}"), _step("as_int", lambda i: i * 7),
         _step("as_dict", lambda i: {"i": i, "square": [i, i * i]}),
         _step("as_tuple", lambda i: (i, f"t-{i}")))  # a tuple is not JSON: a signed pickle


@rk.workflow(name="corruption-campaign")
def flow(ctx: rk.Context, n: int, wait: float | None):
    """n activities (a 1 ms timer halfway), then the signal ``go`` (None once ``wait`` seconds pass)."""
    results = []
    for i in range(n):
        if i == n // 2:
            yield rk.sleep(timedelta(milliseconds=1))
        results.append((yield STEPS[i % len(STEPS)](i)))
    go = yield rk.wait_signal("go", timeout=None if wait is None else timedelta(seconds=wait))
    return {"results": results, "go": go}


# -- pristine stores, one per shape ---------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """How ``wf`` was left: ``done``, ``killed`` (SIGKILL before activity ``kill_at``, the -wal file left;
    its rerun's signal wait times out after ``wait`` s) or ``waiting`` (its signal sent afterwards)."""

    n: int
    end: str
    kill_at: int = -1
    wait: float | None = None


SHAPES = {"done-8": Shape(8, "done"), "done-20": Shape(20, "done"), "killed-12": Shape(12, "killed", 7, 0.05),
          "killed-20": Shape(20, "killed", 16, 0.05), "waiting-14": Shape(14, "waiting")}


def build_main(argv: list[str]) -> None:
    """Subprocess: record shape ``argv[0]`` into the directory ``argv[1]`` (store.db, ledger)."""
    shape, out = SHAPES[argv[0]], Path(argv[1])
    db = str(out / "store.db")
    os.environ["CAMPAIGN_LEDGER"] = str(out / "other-ledger")
    rk.run(flow, 3, 0.001, workflow_id="other", db=db)
    os.environ["CAMPAIGN_LEDGER"] = str(out / "ledger")
    if shape.end == "killed":
        os.environ["CAMPAIGN_KILL_AT"] = str(shape.kill_at)
        rk.run(flow, shape.n, shape.wait, workflow_id=WF, db=db)
        raise SystemExit("the killed shape ran to its end")
    with rk.Engine(db) as engine:
        handle = engine.start(flow, shape.n, None, workflow_id=WF)
        if shape.end == "done":
            engine.signal(WF, "go", PAYLOAD)
            handle.result(timeout=60)
            return
        deadline = time.monotonic() + 60
        while (last := engine.store.last_event(WF)) is None or last.seq < shape.n + 1:  # start, timer, n
            assert time.monotonic() < deadline, "the waiting shape did not record its activities"
            time.sleep(0.005)
    rk.send_signal(db, WF, "go", PAYLOAD)


@dataclass
class Pristine:
    """A pristine store of one shape, and what the readers say about an undamaged copy of it."""

    name: str
    dir: Path
    recorded: list[int]  # the activities of ``wf`` it recorded (its builder's ledger)
    rows: list[tuple[Any, ...]]  # the raw rows of ``wf``'s events
    baseline: dict[str, dict[str, Any]]


def child_env() -> dict[str, str]:
    """The environment of every subprocess: the campaign's secret, and this directory importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("REPLAYKIT_OLD_SECRETS", "CAMPAIGN_KILL_AT")}
    env.update(REPLAYKIT_SECRET=SECRET, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")]))
    return env


def _python(function: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"import sys, corruption_campaign as c; c.{function}(sys.argv[1:])", *args]


def copy_store(src: Path, dst: Path) -> None:
    """A store's files: not its -shm (SQLite rebuilds the WAL index from the -wal), nor its lock file."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("store.db", "store.db-wal"):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)


def raw_rows(d: Path) -> list[tuple[Any, ...]] | None:
    """The raw event rows of ``wf`` in the store in ``d``, read from a copy (a read checkpoints the WAL);
    None if SQLite cannot read them."""
    tmp = Path(tempfile.mkdtemp(prefix="raw-", dir=d.parent))
    try:
        copy_store(d, tmp)
        conn = sqlite3.connect(tmp / "store.db")
        try:
            return conn.execute("SELECT e.seq, e.step, e.kind, e.name, e.at, e.outcome, e.encoding, e.payload, "
                                "e.digest FROM events e JOIN runs r ON r.id = e.run WHERE r.workflow_id = ? "
                                "ORDER BY e.seq", (WF,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(root: Path) -> dict[str, Pristine]:
    """Record each shape under ``root`` (unless recorded there before), and read an undamaged copy."""
    found = {}
    for name, shape in SHAPES.items():
        d = root / name
        if not (d / "store.db").exists():
            d.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(_python("build_main", name, str(d)), env=child_env(), capture_output=True,
                                  text=True, timeout=120)
            if done.returncode != (-signal.SIGKILL if shape.end == "killed" else 0):
                raise RuntimeError(f"recording shape {name} failed ({done.returncode}):\n{done.stderr}")
        copy = Path(tempfile.mkdtemp(prefix=f"baseline-{name}-", dir=root)) / "store"
        copy_store(d, copy)
        recorded = [int(x) for x in (d / "ledger").read_text().split()]
        p = Pristine(name, d, recorded, raw_rows(copy) or [], read_store(copy, name, 60.0))
        shutil.rmtree(copy.parent, ignore_errors=True)
        for reader in READERS:
            if classify(reader, p.baseline[reader], p, None)[0] != HARMLESS:
                raise RuntimeError(f"the undamaged {name} store fails {reader}: {p.baseline[reader]}")
        found[name] = p
    return found


# -- the readers, each in a child forked from one fresh subprocess --------------------------------------

def read_main(argv: list[str]) -> None:
    """Subprocess: run each reader on the store in ``argv[0]`` (of shape ``argv[1]``, ``argv[2]`` seconds
    each) in a child forked from this process, which imported replaykit only; print their reports."""
    d, shape, timeout = Path(argv[0]), SHAPES[argv[1]], float(argv[2])
    db = str(d / "store.db")
    calls: dict[str, Callable[[Path], int]] = {
        "history": lambda res: _cli(["history", db, WF]), "list": lambda res: _cli(["list", db]),
        "check": lambda res: _cli(["check", db, "-m", __name__]), "rerun": lambda res: _rerun(db, shape, res)}
    print(json.dumps({name: _forked(d, name, calls[name], timeout) for name in READERS}))


def _forked(d: Path, name: str, call: Callable[[Path], int], timeout: float) -> dict[str, Any]:
    """Run ``call`` in a forked child with its own stdout, stderr and ledger: its exit code, output and
    ledger (and the JSON it wrote), or ``hang`` if it took longer than ``timeout`` (it is killed)."""
    out, err, ledger, res = (d.parent / f"{name}.{x}" for x in ("out", "err", "ledger", "json"))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 70
        try:
            os.environ["CAMPAIGN_LEDGER"] = str(ledger)
            for fd, path in ((1, out), (2, err)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            code = call(res)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    status = _wait(pid, timeout)
    text = {p: p.read_text(errors="replace") if p.exists() else "" for p in (out, err, ledger, res)}
    report = {"hang": status is None, "rc": None if status is None else os.waitstatus_to_exitcode(status),
              "stdout": text[out], "stderr": text[err], "ledger": [int(x) for x in text[ledger].split()]}
    return {**report, **(json.loads(text[res]) if text[res] else {})}


def _wait(pid: int, timeout: float) -> int | None:
    """The wait status of child ``pid``; None (and the child killed) if it runs beyond ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)
    return done[1]


def _cli(argv: list[str]) -> int:
    """What the ``replaykit`` console script does, ``sys.exit(main())``: a traceback if anything escapes."""
    from replaykit.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
        return 1


def _rerun(db: str, shape: Shape, res: Path) -> int:
    """Rerun ``wf`` as its script would; write its result's repr, or the exception, to ``res``."""
    try:
        report = {"result": repr(rk.run(flow, shape.n, shape.wait, workflow_id=WF, db=db))}
    except BaseException as exc:
        report = {"error": f"{type(exc).__module__}.{type(exc).__qualname__}", "text": str(exc),
                  "traceback": "".join(traceback.format_exception(exc))}
    res.write_text(json.dumps(report))
    return 0


def read_store(d: Path, shape: str, timeout: float) -> dict[str, dict[str, Any]]:
    """The readers' reports on the store in ``d``, from one fresh subprocess."""
    try:
        done = subprocess.run(_python("read_main", str(d), shape, str(timeout)), env=child_env(),
                              capture_output=True, text=True, timeout=timeout * len(READERS) + 60)
    except subprocess.TimeoutExpired:
        return {reader: {"hang": True} for reader in READERS}
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"the readers' process failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# -- a trial: copy, damage, read, classify --------------------------------------------------------------

@dataclass
class Trial:
    """A trial: which shape got which damage, each reader's (outcome, text, origin) and raw report."""

    k: int
    seed: int
    shape: str
    damage: str
    detail: str
    outcomes: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def bad(self) -> list[str]:
        return [reader for reader, (outcome, _, _) in self.outcomes.items() if outcome in BAD]


def plan(k: int, seed: int) -> tuple[str, str, random.Random]:
    """Trial ``k``'s damage (each kind once per round of len(DAMAGES) trials, in a seeded order), its
    shape, and the random source of its damage: a function of (seed, k) only."""
    kinds = sorted(DAMAGES)
    random.Random(f"{seed}:round:{k // len(kinds)}").shuffle(kinds)
    damage, rng = kinds[k % len(kinds)], random.Random(f"{seed}:trial:{k}")
    return damage, rng.choice([name for name, s in SHAPES.items() if s.end in DAMAGES[damage][1]]), rng


def run_trial(k: int, seed: int, pristine: dict[str, Pristine], workdir: Path, hang_timeout: float = 30.0,
              keep: Path | None = None) -> Trial:
    """Copy the pristine store of trial ``k``'s shape, damage it, read it, classify each reader."""
    damage, name, rng = plan(k, seed)
    p, d = pristine[name], Path(tempfile.mkdtemp(prefix=f"trial-{k}-", dir=workdir))
    try:
        copy_store(p.dir, d / "store")
        detail, loss = DAMAGES[damage][0](rng, d / "store")
        copy_store(d / "store", d / "damaged")  # as damaged, before a reader opens it
        lost = lost_activities(p, raw_rows(d / "damaged")) if loss and SHAPES[name].end != "done" else None
        if lost is not None:
            detail += f"; {WF} lost its last commits: activities {lost} unrecorded"
        trial = Trial(k, seed, name, damage, detail, reports=read_store(d / "store", name, hang_timeout))
        trial.outcomes = {reader: classify(reader, trial.reports[reader], p, lost) for reader in READERS}
        if keep is not None and trial.bad:
            shutil.copytree(d / "damaged", keep / f"trial-{k}", dirs_exist_ok=True)
        return trial
    finally:
        shutil.rmtree(d, ignore_errors=True)


def lost_activities(p: Pristine, rows: list[tuple[Any, ...]] | None) -> list[int] | None:
    """If ``wf``'s damaged history is a strict prefix of the pristine one, the activities it lost."""
    if rows is None or len(rows) >= len(p.rows) or rows != p.rows[:len(rows)]:
        return None
    count = sum(row[2] == "activity" for row in p.rows[len(rows):])
    return p.recorded[len(p.recorded) - count:]


def classify(reader: str, rep: dict[str, Any], p: Pristine, lost: list[int] | None) -> tuple[str, str, str]:
    """(outcome, error or what differs, where in replaykit it was raised) of one reader's report."""
    if rep.get("hang"):
        return HANG, "no answer in the time allowed (killed)", ""
    again = [i for i in rep["ledger"] if i in p.recorded]
    text, where = _error(rep)
    if set(again) - set(lost or ()) or len(set(rep["ledger"])) < len(rep["ledger"]):
        return RERUN, f"ran recorded activities {again} again (ledger {rep['ledger']}); {text}", where
    verdict = _verdict(reader, rep, p.baseline[reader])
    if verdict == WRONG and reader != "rerun" and lost is not None:
        verdict = TAIL  # a CLI shows the shorter history that lost commits leave
    elif verdict == "same":
        verdict = TAIL if again else HARMLESS
    return verdict, text or (f"got {rep.get('result') or rep['stdout']!r:.300}" if verdict == WRONG else ""), where


def _verdict(reader: str, rep: dict[str, Any], base: dict[str, Any]) -> str:
    """refused, RAW EXCEPTION, WRONG RESULT, or "same" (as the undamaged store's)."""
    out, err = rep["stdout"], rep["stderr"]
    if reader == "rerun":
        if "error" in rep:
            ours = rep["error"].startswith("replaykit.")
            return RAW if not ours else WRONG if rep["error"].rsplit(".", 1)[1] in ENDED_OTHERWISE else REFUSED
        return RAW if rep["rc"] != 0 or "result" not in rep else "same" if rep["result"] == base["result"] else WRONG
    if "Traceback (most recent call last)" in out + err or rep["rc"] < 0:
        return RAW
    if rep["rc"] != 0:
        return REFUSED if err.startswith("replaykit: ") or out.startswith("FAIL ") or "\nFAIL " in out else RAW
    return "same" if out == base["stdout"] else WRONG


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _error(rep: dict[str, Any]) -> tuple[str, str]:
    """A report's error, and where: the last replaykit frame of its traceback (and the last frame)."""
    tb = rep.get("traceback") or rep["stderr"]
    if "error" in rep:
        text = f"{rep['error']}: {rep['text']}"
    elif "Traceback (most recent call last)" in tb:
        text = tb.strip().splitlines()[-1]
    else:
        text = rep["stderr"].strip() or "; ".join(x for x in rep["stdout"].splitlines() if x.startswith("FAIL"))
    frames = _FRAME.findall(tb.rsplit("Traceback (most recent call last):", 1)[-1]) if "Traceback" in tb else []
    at = [f"{'replaykit/' + f[0].rsplit('/replaykit/', 1)[1] if '/replaykit/' in f[0] else f[0]}:{f[1]} in {f[2]}"
          for f in frames]
    mine = [a for a in at if a.startswith("replaykit/")]
    return text, (mine[-1] if mine else "") + (f" (raised in {at[-1]})" if at and at[-1] not in mine else "")


# -- the campaign ---------------------------------------------------------------------------------------

def table(trials: list[Trial], key: Callable[[Trial, str], str], title: str) -> str:
    """Counts of outcomes (one per trial and reader) by ``key`` (the damage, the reader or the shape)."""
    counts: dict[str, Counter[str]] = {"TOTAL": Counter()}
    for t in trials:
        for reader, (outcome, _, _) in t.outcomes.items():
            counts.setdefault(key(t, reader), Counter())[outcome] += 1
            counts["TOTAL"][outcome] += 1
    width = max(len(title), *map(len, counts))
    rows = [[title.ljust(width), *OUTCOMES, "total"]]
    for row in [*sorted(set(counts) - {"TOTAL"}), "TOTAL"]:
        rows.append([row.ljust(width), *(str(counts[row][o]).rjust(len(o)) for o in OUTCOMES),
                     str(sum(counts[row].values())).rjust(5)])
    return "\n".join(" | ".join(row) for row in rows)


def bad_records(trials: list[Trial]) -> list[dict[str, Any]]:
    """One record per bad outcome: enough to rerun its trial alone (--seed, --only-trial)."""
    return [{"trial": t.k, "seed": t.seed, "shape": t.shape, "damage": t.damage, "detail": t.detail,
             "reader": reader, "outcome": t.outcomes[reader][0], "error": t.outcomes[reader][1],
             "origin": t.outcomes[reader][2], "traceback": t.reports[reader].get("traceback", ""),
             "repro": f"python benchmarks/corruption_campaign.py --seed {t.seed} --only-trial {t.k}"}
            for t in trials for reader in t.bad]


def show(trial: Trial) -> None:
    """Everything one trial saw, for --only-trial."""
    print(f"trial {trial.k} (seed {trial.seed}): shape {trial.shape}, {trial.damage}: {trial.detail}")
    for reader, (outcome, text, where) in trial.outcomes.items():
        print(f"\n== {reader}: {outcome}  {text[:500]}  {where}")
        for name, value in trial.reports[reader].items():
            if name in ("result", "stdout", "stderr", "traceback", "ledger") and value:
                print(f"-- {name}:\n{str(value).rstrip()[-3000:]}")


def report(trials: list[Trial], args: argparse.Namespace, seconds: float) -> None:
    """Print the tables and the bad outcomes; write those, one JSON line each, for reproduction."""
    for key, title in ((lambda t, r: t.damage, "damage"), (lambda t, r: r, "reader"), (lambda t, r: t.shape, "shape")):
        print(table(trials, key, title), end="\n\n")
    bad = bad_records(trials)
    out = (args.keep_failures or Path(tempfile.gettempdir())) / f"corruption-campaign-seed{args.seed}.jsonl"
    out.write_text("".join(json.dumps(record) + "\n" for record in bad))
    print(f"{len(trials)} trials in {seconds:.0f} s with --jobs {args.jobs}; {len(bad)} bad outcomes in "
          f"{len({r['trial'] for r in bad})} trials, written to {out}")
    for r in bad:
        print(f"  trial {r['trial']} {r['damage']} on {r['shape']} -> {r['reader']}: {r['outcome']}: "
              f"{r['error'][:240]} [{r['origin']}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep-failures", type=Path, help="keep the pristine stores and bad trials' damaged ones")
    parser.add_argument("--only-trial", type=int, help="run trial K of this seed alone, and show all it saw")
    parser.add_argument("--pristine", type=Path, help="reuse the pristine stores a run kept (DIR/pristine)")
    parser.add_argument("--hang-timeout", type=float, default=30.0, help="seconds a reader may take")
    args = parser.parse_args()
    work, started = Path(tempfile.mkdtemp(prefix="rk-corruption-")), time.monotonic()
    try:
        pristine = prepare(args.pristine or work / "pristine")
        if args.keep_failures:
            args.keep_failures.mkdir(parents=True, exist_ok=True)
        if args.keep_failures and not args.pristine:
            shutil.copytree(work / "pristine", args.keep_failures / "pristine", dirs_exist_ok=True)
        if args.only_trial is not None:
            show(run_trial(args.only_trial, args.seed, pristine, work, args.hang_timeout, args.keep_failures))
            return
        trials: list[Trial] = []
        with ThreadPoolExecutor(args.jobs) as pool:
            for trial in pool.map(lambda k: run_trial(k, args.seed, pristine, work, args.hang_timeout,
                                                      args.keep_failures), range(args.trials)):
                trials.append(trial)
                if len(trials) % 50 == 0:
                    print(f"{len(trials)} trials, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(trials, args, time.monotonic() - started)


if __name__ == "__main__":
    main()
