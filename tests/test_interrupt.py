"""Ctrl-C and close() stop a run at the next step boundary, leaving it resumable.

The activity in flight on the driver thread finishes and is recorded; no further
step starts. A rerun continues from there and runs no completed step again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import replaykit as rk
from replaykit.store import open_store

from conftest import PYTHON, ROOT
from helpers import journal, read_journal, wait_until

CHILD = str(ROOT / "tests" / "engine_child.py")
STEPS = 40


def wait_for_lines(ledger: str, count: int, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while len(read_journal(ledger)) < count:
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the workflow did not start"
        time.sleep(0.01)


def recorded_steps(db: str, workflow_id: str) -> int:
    with open_store(db) as store:
        return sum(1 for event in store.events(workflow_id) if event.kind == "activity")


def test_ctrl_c_stops_rk_run_at_the_next_step_and_a_rerun_finishes_the_rest(
        tmp_path: Path, any_db: str, child_env: dict[str, str]) -> None:
    ledger = str(tmp_path / "ledger")
    command = [PYTHON, CHILD, "steps", any_db, ledger, str(STEPS)]
    proc = subprocess.Popen(command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(ledger, 3, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGINT, err  # an uncaught KeyboardInterrupt
    assert "KeyboardInterrupt" in err

    executed = len(read_journal(ledger))
    assert recorded_steps(any_db, "steps") == executed  # the step in flight finished and was recorded
    assert executed < STEPS / 2, "the run went on after Ctrl-C"

    rerun = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == str(STEPS)
    runs = Counter(line.split()[1] for line in read_journal(ledger))
    assert len(runs) == STEPS and set(runs.values()) == {1}, "a completed step ran again"


step_3_began, closing = threading.Event(), threading.Event()


@rk.activity
def slow_step(ledger: str, i: int) -> int:
    time.sleep(0.02)
    if i == 3:  # the step under way when close() is called: it ends only once the engine is closing
        step_3_began.set()
        assert closing.wait(timeout=30)
    journal(ledger, f"step {i} pid {os.getpid()}")
    return i


@rk.workflow
def slow_steps(ctx: rk.Context, ledger: str, count: int):
    for i in range(count):
        yield slow_step(ledger, i)
    return count


def test_close_from_another_thread_stops_at_the_next_step_boundary(tmp_path: Path, any_db: str) -> None:
    ledger = str(tmp_path / "ledger")
    step_3_began.clear()
    closing.clear()
    engine = rk.Engine(any_db, activity_threads=0)
    engine.start(slow_steps, ledger, STEPS, workflow_id="s")
    assert step_3_began.wait(timeout=30)
    closer = threading.Thread(target=engine.close)
    closer.start()
    wait_until(lambda: engine._closed, "close() began", timeout=30)
    closing.set()
    closer.join(timeout=30)
    assert not closer.is_alive()

    executed = len(read_journal(ledger))
    assert recorded_steps(any_db, "s") == executed
    assert executed == 4, "close() let the run go on"  # steps 0-3: the one under way finished, no other began

    with rk.Engine(any_db, activity_threads=0) as engine:
        assert engine.start(slow_steps, ledger, STEPS, workflow_id="s").result(timeout=30) == STEPS
    steps = Counter(read_journal(ledger))
    assert len(steps) == STEPS and set(steps.values()) == {1}, "a completed step ran again"
