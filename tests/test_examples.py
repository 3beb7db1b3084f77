"""The examples run as a user runs them: as scripts, in their own processes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT

EXAMPLES = ROOT / "examples"


def run(script: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, str(EXAMPLES / script), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_quickstart(tmp_path: Path, child_env: dict[str, str]) -> None:
    first = run("quickstart.py", env=child_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("charging 1999 cents") == 1  # the second run inside does not charge
    assert first.stdout.count("'tracking': 'tracking-o-42'") == 2
    assert (tmp_path / "quickstart.db").exists()
    again = run("quickstart.py", env=child_env, cwd=tmp_path)
    assert "charging" not in again.stdout and "tracking-o-42" in again.stdout


def test_crash_resume(tmp_path: Path, child_env: dict[str, str]) -> None:
    killed = run("crash_resume.py", "--crash-after", "3", "--delay", "0", env=child_env, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert "step 3 done" in killed.stdout and "step 4 done" not in killed.stdout
    rerun = run("crash_resume.py", "--delay", "0", env=child_env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "step 1 done" not in rerun.stdout and "step 4 done" in rerun.stdout
    assert "result: ['result-1', 'result-2', 'result-3', 'result-4', 'result-5', 'result-6']" in rerun.stdout
    log = (tmp_path / "steps.log").read_text().splitlines()
    # Step 3 was killed after its side effect but before it was recorded: it ran once more.
    assert [line.split()[1] for line in log] == ["1", "2", "3", "3", "4", "5", "6"]


def test_approval_signalled_from_the_command_line(tmp_path: Path, child_env: dict[str, str]) -> None:
    waiting = subprocess.Popen([PYTHON, str(EXAMPLES / "approval.py"), "--timeout", "60"], env=child_env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    approve = [PYTHON, "-m", "replaykit", "signal", "approval.db", "expense-17", "approved", '"alice"']
    while subprocess.run(approve, env=child_env, cwd=tmp_path, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the workflow never started"
        time.sleep(0.05)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "result: approved by alice" in out


def test_approval_times_out(tmp_path: Path, child_env: dict[str, str]) -> None:
    done = run("approval.py", "--timeout", "0.3", env=child_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "nobody approved it in time" in done.stdout and "result: rejected" in done.stdout


def test_money_transfer(tmp_path: Path, child_env: dict[str, str]) -> None:
    done = run("money_transfer.py", env=child_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rolled back: frozen accepts no deposits" in done.stdout
    assert "balances: {'alice': 700, 'bob': 400, 'frozen': 0}" in done.stdout


def test_fan_out(tmp_path: Path, child_env: dict[str, str]) -> None:
    done = run("fan_out.py", env=child_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "{'items': 100, 'total': 328350, 'best': 9801}" in done.stdout


def test_escalation(tmp_path: Path, child_env: dict[str, str]) -> None:
    timed_out = run("escalation.py", "--timeout", "0.2", env=child_env, cwd=tmp_path)
    assert "asked director" in timed_out.stdout and "result: rejected: nobody answered" in timed_out.stdout
    waiting = subprocess.Popen([PYTHON, str(EXAMPLES / "escalation.py"), "--db", "answered.db", "--timeout", "60"],
                               env=child_env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    answer = [PYTHON, "-m", "replaykit", "signal", "answered.db", "expense-9", "manager", '"yes"']
    deadline = time.monotonic() + 30
    while subprocess.run(answer, env=child_env, cwd=tmp_path, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out, _ = waiting.communicate(timeout=60)
    assert "result: manager said yes" in out and "director" not in out


def test_monitor(tmp_path: Path, child_env: dict[str, str]) -> None:
    done = run("monitor.py", "--checks", "12", env=child_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "{'url': 'https://example.com/health', 'failures': 0}" in done.stdout
    assert "events in the current history: 6" in done.stdout  # 2 checks in the last run, not 12


def test_pipeline(tmp_path: Path, child_env: dict[str, str]) -> None:
    done = run("pipeline.py", env=child_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "{'a.pdf': 13, 'corrupt.pdf': 'skipped: cannot read corrupt.pdf', 'report.pdf': 18}" in done.stdout


@pytest.mark.slow
def test_the_benchmark_script_runs(tmp_path: Path, child_env: dict[str, str]) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\n## 1. stale\n\nold figures\n\n## 9. Scale-out\n\nfrom bench_scaleout.py\n")
    done = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--no-peers",
                           "--write", str(report)], env=child_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    for heading in ("## 1. One durable step", "## 2. Resume after a crash", "## 3. Throughput",
                    "## 4. Fan-out", "## 5. Parked workflows", "## 6. History size", "## 7. Replaying"):
        assert heading in text
    assert "old figures" not in text and text.endswith("## 9. Scale-out\n\nfrom bench_scaleout.py\n")  # kept


def test_the_engine_benchmark_runs(child_env: dict[str, str]) -> None:
    done = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "bench_engine.py"), "--repeat", "1", "--n", "50",
                           "--parked", "100"], env=child_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # nothing parked beside; then 1,000 kept in memory, all kept (the default) and all evicted, each with its ratio
    assert done.stdout.count("workflows/s") == 4 and done.stdout.count("x\n") == 3, done.stdout


def test_the_core_benchmark_runs(child_env: dict[str, str]) -> None:
    done = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "bench_core.py"), "--steps", "200", "--repeat", "1"],
                          env=child_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "10,000 recorded steps" in done.stdout and "crash" in done.stdout and "power" in done.stdout


def test_the_fresh_process_benchmark_runs_and_loads_nothing_heavy(child_env: dict[str, str]) -> None:
    """Neither ``import replaykit`` nor a one-step script on an existing store loads a module only some
    users need (issue 12): not sqlite_utils (only creating a store needs it), asyncio (only async
    activities), click, freezegun (testing), cattrs (the first typed value), psycopg, urllib.request,
    cloudpickle (the first pickled value)."""
    done = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "bench_fresh.py"), "--repeat", "1", "--steps", "300"],
                          env=child_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("x\n") == 3, done.stdout  # three figures, each with its ratio to the floor
    assert "heavy modules loaded by import replaykit: none" in done.stdout, done.stdout
    assert "heavy modules loaded by the one-step script on an existing store: none" in done.stdout, done.stdout


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_scale_out_client_and_two_workers(tmp_path: Path, child_env: dict[str, str], store: str,
                                          request: pytest.FixtureRequest) -> None:
    target = [] if store == "sqlite" else [str(request.getfixturevalue("pg_url"))]
    done = run("scale_out.py", *target, env=child_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "results: ['receipt-o-0-by-" in done.stdout
    assert "workers stopped: [0, 0]" in done.stdout  # both stopped gracefully on SIGTERM
    assert (tmp_path / "scale_out.db").exists() == (store == "sqlite")


def test_observe(tmp_path: Path, child_env: dict[str, str]) -> None:
    done = run("observe.py", env=child_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines.count("[hook] order-1: activity reserve attempt 1 failed: the stock service timed out") == 1
    assert "result: workflow 'order-2' was terminated: never paid" in lines
    assert "[hook] order-2 ended: never paid" in lines
    assert '[metric] replaykit_runs_ended_total{status="cancelled",workflow="fulfil"} 1.0' in lines
    assert sorted(line for line in lines if line.startswith("[span]")) == sorted(
        ["[span] activity reserve order-1 child of its run"] * 2 + ["[span] workflow fulfil order-1 root"]
        + ["[span] activity reserve order-2 child of its run"] * 2 + ["[span] workflow fulfil order-2 root"])
    assert lines[-1] == "prune would delete: ['order-1', 'order-2']"
