"""One SQLite store shared by an Engine, by-path calls in its own process, and other processes."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import replaykit as rk
from replaykit.testing import export_history, replay_all

from conftest import PYTHON
from helpers import adder, waits_for_approval

CHILD = str(Path(__file__).with_name("store_child.py"))
CLI = [PYTHON, "-m", "replaykit"]


@rk.activity
def slow_add(a: int, b: int) -> int:
    time.sleep(0.01)
    return a + b


@rk.workflow(name="shared.counter")
def counter(ctx: rk.Context, n: int):
    done = 0

    @ctx.query("done")
    def progress() -> int:
        return done

    for i in range(n):
        done = yield slow_add(done, 1)
        if i % 5 == 4:
            yield rk.sleep(0.01)
    return done


def _expected_errors(exc: BaseException) -> bool:
    """What the by-path calls may meet when they race the runs they touch (never a store failure)."""
    return isinstance(exc, (rk.IllegalTransitionError, rk.Cancelled, rk.WorkflowFailed, rk.WorkflowConflictError))


def test_by_path_calls_next_to_a_live_engine_lose_no_event(db: str, tmp_path: Path,
                                                          child_env: dict[str, str]) -> None:
    stop = str(tmp_path / "stop")
    readers = [subprocess.Popen([PYTHON, CHILD, "reader", db, stop], env=child_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    failures: list[str] = []
    engine = rk.Engine(db, activity_threads=4)  # group commit: several runs share each commit
    try:
        handles = {f"count-{i}": engine.start(counter, 12, workflow_id=f"count-{i}") for i in range(12)}
        handles |= {f"wait-{i}": engine.start(waits_for_approval, workflow_id=f"wait-{i}") for i in range(6)}
        by_path: list[Callable[[int], Any]] = [
            lambda i: rk.send_signal(db, f"wait-{i % 4}", "approved", i),
            lambda i: rk.query(db, f"count-{i % 12}", "done"),
            lambda i: rk.cancel(db, f"wait-{4 + i % 2}", "test"),
            lambda i: (rk.pause(db, f"count-{i % 12}"), rk.resume(db, f"count-{i % 12}")),
            lambda i: export_history(db, f"count-{i % 12}"),
            lambda i: replay_all(db, workflows=[counter, waits_for_approval]),
            lambda i: rk.run(adder, 3, workflow_id=f"run-{i}", db=db),
            lambda i: _second_engine(db, i),
        ]
        done = threading.Event()

        def hammer(call: Callable[[int], Any]) -> None:
            i = 0
            while not done.is_set() and i < 25:
                try:
                    call(i)
                except Exception as exc:  # noqa: BLE001 - sorted below
                    if not _expected_errors(exc):
                        failures.append(f"{type(exc).__name__}: {exc}")
                i += 1

        threads = [threading.Thread(target=hammer, args=(call,)) for call in by_path]
        for t in threads:
            t.start()
        shell = _shell_readers(db, stop)
        for workflow_id, handle in handles.items():
            try:
                handle.result(timeout=30)
            except Exception as exc:  # noqa: BLE001
                if not _expected_errors(exc):
                    failures.append(f"{workflow_id}: {type(exc).__name__}: {exc}")
        done.set()
        for t in threads:
            t.join(timeout=30)
        # Every run has ended and the engine is still open: what it committed, everyone must see.
        mine = {i.workflow_id: len(list(engine.store.events(i.workflow_id))) for i in engine.store.list()}
        Path(stop).touch()
        seen = {}
        for n, reader in enumerate(readers):
            out, err = reader.communicate(timeout=30)
            report = json.loads(out)
            assert report["errors"] == [] and err == "", (report["errors"], err)
            seen[f"python reader {n}"] = report["counts"]
        for name, text in shell:
            assert text.returncode == 0 and "I/O" not in text.stderr, (name, text.stderr)
        seen |= _shell_counts(db, list(mine))
    finally:
        Path(stop).touch()
        engine.close()
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
    assert "\n".join(sorted({f[:90] for f in failures})) == "", f"{len(failures)} by-path calls failed"
    assert all(mine[f"count-{i}"] == 12 + 2 + 12 // 5 for i in range(12))  # start, steps, sleeps, result
    for name, counts in seen.items():
        expected = {k: mine[k] for k in counts} if name == "replaykit history" else mine  # a sample
        lost = {k: (v, counts.get(k, 0)) for k, v in expected.items() if counts.get(k, 0) != v}
        assert lost == {}, f"{name} sees fewer events than the engine committed (run: (committed, seen))"


def _second_engine(db: str, i: int) -> None:
    with rk.Engine(db, activity_threads=2) as second:
        second.start(adder, 2, workflow_id=f"second-{i}").result(timeout=30)


def _shell_readers(db: str, stop: str) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    """The CLI (and the sqlite3 shell if installed) reading the file while the engine writes it."""
    out = [("replaykit list", subprocess.run([*CLI, "list", db], capture_output=True, text=True, timeout=30))]
    if shutil.which("sqlite3"):
        out.append(("sqlite3", subprocess.run(["sqlite3", "-cmd", ".timeout 10000", db, "SELECT count(*) FROM events"],
                                              capture_output=True, text=True, timeout=30)))
    return out


def _shell_counts(db: str, ids: list[str]) -> dict[str, dict[str, int]]:
    """Events per run as the sqlite3 shell counts them, and as `replaykit history` prints them for a sample
    (a process each; `replaykit list` must show every run)."""
    listed = subprocess.run([*CLI, "list", db, "--json"], capture_output=True, text=True, timeout=30)
    shown = {run["workflow_id"] for run in json.loads(listed.stdout or "[]")}
    assert shown == set(ids), f"replaykit list misses {set(ids) - shown} {listed.stderr}"
    found: dict[str, dict[str, int]] = {"replaykit history": {}}
    for workflow_id in ids[::8]:
        text = subprocess.run([*CLI, "history", db, workflow_id], capture_output=True, text=True, timeout=30)
        # a line per event under a header
        found["replaykit history"][workflow_id] = len(text.stdout.splitlines()) - 1 if text.returncode == 0 else -1
    if shutil.which("sqlite3") is None:
        warnings.warn("no sqlite3 shell on this machine: the store was read by replaykit and Python only",
                      stacklevel=2)
        return found
    text = subprocess.run(
        ["sqlite3", "-cmd", ".timeout 10000", "-separator", "\t", db,
         "SELECT r.workflow_id, COUNT(*) FROM events e JOIN runs r ON r.id = e.run GROUP BY r.workflow_id"],
        capture_output=True, text=True, timeout=30)
    assert text.returncode == 0, text.stderr
    found["sqlite3 shell"] = {k: int(v) for k, v in (line.split("\t") for line in text.stdout.splitlines())}
    return found


def test_opening_while_others_checkpoint_never_refuses_a_healthy_store(db: str, tmp_path: Path,
                                                                       child_env: dict[str, str]) -> None:
    rk.SqliteStore(db).close()
    stop = str(tmp_path / "stop")
    writers = [subprocess.Popen([PYTHON, CHILD, "writer", db, f"w{i}", stop], env=child_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        for w in writers:
            assert w.stdout is not None and w.stdout.readline().strip() == "1"  # writing, checkpointing
        openers = [subprocess.Popen([PYTHON, CHILD, "opener", db, "1000"], env=child_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        reports = [json.loads(o.communicate(timeout=60)[0]) for o in openers]
    finally:
        Path(stop).touch()
        for w in writers:
            w.communicate(timeout=30)
    assert [w.returncode for w in writers] == [0, 0]
    assert [(r["opened"], r["refusals"], r["refused"]) for r in reports] == [(1000, 0, [])] * 2
    with rk.SqliteStore(db) as store:
        assert len(store.list()) == 2


def test_a_writer_killed_during_checkpoints_leaves_a_store_that_opens(db: str, tmp_path: Path,
                                                                     child_env: dict[str, str]) -> None:
    for attempt in range(4):
        writer = subprocess.Popen([PYTHON, CHILD, "writer", db, f"w{attempt}", str(tmp_path / "never")],
                                  env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        for _ in range(20 + 37 * attempt):  # a different moment each time, every one mid-checkpoint or close
            writer.stdout.readline()
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=30)
        with rk.SqliteStore(db) as store:  # opens at once: SQLite recovers its own WAL
            recorded = [e.seq for e in store.events(f"w{attempt}")]
        assert recorded == list(range(len(recorded))) and len(recorded) > 20
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    check.close()
