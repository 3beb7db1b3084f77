"""A worker's code version digests replaykit's own source files; a name that is not a regular file (an
editor's lock link such as Emacs's ".#worker.py" beside a file being edited in a checkout) is
skipped. Before, the worker did not start: FileNotFoundError (found by a review)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

START = textwrap.dedent("""
    import sys
    import replaykit as rk
    from helpers import adder
    worker = rk.Worker(sys.argv[1], workflows=[adder])
    print("version", worker.version, flush=True)
    worker.close()
""")


def test_a_worker_starts_while_a_replaykit_source_file_is_being_edited(tmp_path: Path) -> None:
    install = tmp_path / "checkout"
    shutil.copytree(ROOT / "replaykit", install / "replaykit", ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink("dev@laptop.4242:1733600000", install / "replaykit" / ".#worker.py")  # Emacs's lock on worker.py
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(install), str(ROOT / "tests")]))
    done = subprocess.run([sys.executable, "-c", START, str(tmp_path / "s.db")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # cwd: not this checkout's replaykit
    assert done.returncode == 0, done.stderr[-600:]
    assert done.stdout.startswith("version ")
