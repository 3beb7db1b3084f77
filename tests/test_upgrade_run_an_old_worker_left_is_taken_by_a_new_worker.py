"""Rolling deploy, clients first: a client of this version starts a run whose argument holds a lone
surrogate (a file name from os.listdir), which this version records escaped. A 0.1 worker cannot drive
it (UnicodeEncodeError, 0.1's bug this version fixes) and records the problem under its *code version*,
a digest of the application's workflows only (worker.py code_version). Workers of this version running
the same application compute the same code version, so they leave the run too (sqlite_work.candidates:
problem_version != version): once the deploy is finished, the run still never moves, though this
version drives it fine. The worker's log says "workers of another version will try it"."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import replaykit as rk

import upgrade_versions as v

APP = '''
import replaykit as rk

@rk.activity
def measure(text: str) -> int:
    return len(text)

@rk.workflow(name="upgrade.echo")
def echo(ctx, text: str):
    n = yield measure(text)
    return [text, n]
'''


def test_a_run_a_0_1_worker_could_not_drive_is_driven_by_a_worker_of_this_version(tmp_path: Path) -> None:
    (tmp_path / "upgrade_app.py").write_text(APP)
    sys.path.insert(0, str(tmp_path))
    try:
        import upgrade_app
    finally:
        sys.path.remove(str(tmp_path))
    db = str(tmp_path / "orders.db")
    v.run(v.OLD, "import sys, replaykit as rk; rk.store.open_store(sys.argv[1]).close()", db)  # made by 0.1

    with rk.Client(db) as client:  # a client already upgraded
        client.start(upgrade_app.echo, "report-\udcff.csv", workflow_id="echo-1")

    old = subprocess.Popen([sys.executable, "-m", "replaykit", "worker", db, "-m", "upgrade_app"],
                           env=v.env(v.OLD, str(tmp_path)), cwd=v.clone(v.OLD), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    time.sleep(4)
    old.send_signal(signal.SIGTERM)
    log, _ = old.communicate(timeout=30)
    assert "cannot drive workflow 'echo-1'" in log, log  # 0.1's bug, recorded as a problem

    worker = rk.Worker(db, workflows=[upgrade_app.echo], poll_interval=0.1)  # the deploy reaches the workers
    try:
        deadline = time.monotonic() + 20
        info = worker.store.info("echo-1")
        while time.monotonic() < deadline and info is not None and not info.status.is_terminal:
            time.sleep(0.2)
            info = worker.store.info("echo-1")
        assert info is not None and info.status is rk.Status.COMPLETED, info  # before the fix: running, left for good
    finally:
        worker.stop()
