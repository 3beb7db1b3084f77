"""Real processes killed with SIGKILL at every step boundary and inside activities, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.store import open_store

import crash_child
from conftest import PYTHON, ROOT
from helpers import read_journal

CHILD = str(ROOT / "tests" / "crash_child.py")
EXPECTED = sum(i * i for i in range(10))
KILL_POINTS = [f"boundary:{i}" for i in range(10)] + [f"inside:{i}" for i in range(10)] + ["end"]


def run_child(env: dict[str, str], db: str, journal: str, kill_at: str, step_seconds: float = 0.0,
              **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, CHILD, db, journal, kill_at, str(step_seconds)], env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def done_counts(journal: str) -> Counter[int]:
    return Counter(int(line.split()[1]) for line in read_journal(journal))


def assert_history_intact(db: str) -> None:
    with open_store(db) as store:
        events = list(store.events("ten"))
        assert store.info("ten").status is rk.Status.COMPLETED  # type: ignore[union-attr]
    assert [e.seq for e in events] == list(range(12))
    assert [e.kind for e in events] == ["start"] + ["activity"] * 10 + ["result"]
    assert [e.value() for e in events[1:11]] == [i * i for i in range(10)]
    assert events[-1].value() == EXPECTED


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_at_every_point_then_rerun_completes(any_db: str, tmp_path: Path, child_env: dict[str, str],
                                                     kill_at: str) -> None:
    journal = str(tmp_path / "journal")
    open_store(any_db).close()  # the children open an existing store: creating one is not what this tests
    killed = run_child(child_env, any_db, journal, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = done_counts(journal)

    rerun = run_child(child_env, any_db, journal, "none")
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == str(EXPECTED)

    after = done_counts(journal)
    where, _, index = kill_at.partition(":")
    in_flight = int(index) if where == "inside" else None
    for i in range(10):
        if i in before and i != in_flight:
            assert after[i] == 1, f"step {i} completed before the kill but ran again"
        elif i == in_flight:
            assert after[i] == 2, "the step in flight runs at most once more"
        else:
            assert after[i] == 1
    assert_history_intact(any_db)

    # A third run only reads the recorded result: run here, in this process (which never ran the
    # workflow, so it holds nothing of it), with the same steps writing to the same journal.
    crash_child.journal_path, crash_child.kill_at, crash_child.hold = journal, "none", ""
    assert rk.run(crash_child.ten_steps, workflow_id="ten", db=any_db) == EXPECTED
    assert done_counts(journal) == after


def test_sigkill_from_outside_at_random_moments(any_db: str, tmp_path: Path, child_env: dict[str, str]) -> None:
    journal = str(tmp_path / "journal")
    open_store(any_db).close()  # the children open an existing store
    rng = random.Random(1234)
    for _ in range(6):
        child = subprocess.Popen([PYTHON, CHILD, any_db, journal, "none", "0.02"], env=child_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finished = run_child(child_env, any_db, journal, "none", 0.0)
    assert finished.returncode == 0 and finished.stdout.strip() == str(EXPECTED), finished.stderr
    counts = done_counts(journal)
    assert set(counts) == set(range(10))
    # Each kill interrupts at most one step, which then runs at most once more.
    assert sum(counts.values()) - 10 <= 6
    assert_history_intact(any_db)


def test_two_copies_started_together_do_not_both_drive(any_db: str, tmp_path: Path,
                                                       child_env: dict[str, str]) -> None:
    journal = str(tmp_path / "journal")
    open_store(any_db).close()  # create the store first so both start on equal terms
    first, second = (subprocess.Popen([PYTHON, CHILD, any_db, journal, "none", "0.05"], env=child_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    outs = [p.communicate(timeout=120) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    locked = [out for out, _ in outs if out.startswith("LOCKED")]
    if codes == [0, 3]:
        assert "is being driven by another live process" in locked[0] and "pid" in locked[0]
    else:  # the first finished before the second tried: the second read the recorded result
        assert codes == [0, 0], outs
    assert all(n == 1 for n in done_counts(journal).values()) and len(done_counts(journal)) == 10
    assert len({line.split()[3] for line in read_journal(journal)}) == 1  # one process did all steps
    assert_history_intact(any_db)


def test_rerun_right_after_sigkill_continues_at_once(any_db: str, tmp_path: Path,
                                                     child_env: dict[str, str]) -> None:
    journal = str(tmp_path / "journal")
    open_store(any_db).close()  # the children open an existing store
    child = subprocess.Popen([PYTHON, CHILD, any_db, journal, "none", "0.1"], env=child_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while len(read_journal(journal)) < 3:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    rerun = run_child(child_env, any_db, journal, "none")  # no lease to wait out: the OS freed the lock
    assert rerun.returncode == 0 and rerun.stdout.strip() == str(EXPECTED), rerun.stdout + rerun.stderr
    assert_history_intact(any_db)


def test_second_process_fails_fast_while_the_first_drives(any_db: str, tmp_path: Path,
                                                          child_env: dict[str, str]) -> None:
    journal, release = str(tmp_path / "journal"), tmp_path / "release"
    open_store(any_db).close()  # the children open an existing store
    # The first holds its first step until the second has tried. (It slept 0.4 s a step, 4 s in all,
    # and the second had to try within them: slower, and a race on a loaded machine.)
    first = subprocess.Popen([PYTHON, CHILD, any_db, journal, "none", f"hold:{release}"], env=child_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not read_journal(journal):
            assert first.poll() is None, first.communicate()
            time.sleep(0.01)
        second = run_child(child_env, any_db, journal, "none")
    finally:
        release.touch()
    assert second.returncode == 3, second.stdout + second.stderr
    assert "is being driven by another live process or engine (" in second.stdout
    assert f"pid {first.pid} on" in second.stdout  # PostgreSQL adds its backend's pid: the holder's comes first
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and out.strip() == str(EXPECTED), err
    assert all(n == 1 for n in done_counts(journal).values())
    assert_history_intact(any_db)


def test_sigkill_during_a_fan_out(any_db: str, tmp_path: Path, child_env: dict[str, str]) -> None:
    journal = str(tmp_path / "journal")
    script = str(ROOT / "tests" / "fanout_child.py")
    open_store(any_db).close()  # the children open an existing store
    rng = random.Random(99)
    for _ in range(4):
        child = subprocess.Popen([PYTHON, script, any_db, journal], env=child_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.1, 0.35))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    done = subprocess.run([PYTHON, script, any_db, journal], env=child_env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == str(sum(i * i for i in range(20))), done.stderr
    with open_store(any_db) as store:
        events = list(store.events("fan"))
    recorded = [e.step for e in events if e.kind == "activity"]
    assert sorted(recorded) == list(range(1, 21))  # each leaf recorded exactly once
    counts = done_counts(journal)
    assert set(counts) == set(range(20))
    # At most 4 in flight per kill (the thread pool's size) ran again.
    assert sum(counts.values()) - 20 <= 4 * 4
