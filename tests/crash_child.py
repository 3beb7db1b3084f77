"""A script that runs a 10-step workflow and can SIGKILL itself at a chosen point.

    python crash_child.py DB JOURNAL KILL_AT [STEP_SECONDS | hold:PATH]

KILL_AT: ``boundary:i`` (after step i-1 was recorded, before step i's side
effect), ``inside:i`` (after step i's side effect, before it returns),
``end`` (after the last step, before the result is recorded), or ``none``.
``hold:PATH`` makes each step wait (after its side effect) until the file PATH exists, at most 60 s.
Exit code 3 with "LOCKED" means another process drives the workflow.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import replaykit as rk

from helpers import journal

journal_path = kill_at = hold = ""
step_seconds = 0.0


def die_if(point: str) -> None:
    if kill_at == point:
        os.kill(os.getpid(), signal.SIGKILL)


@rk.activity
def step(i: int) -> int:
    die_if(f"boundary:{i}")
    journal(journal_path, f"done {i} pid {os.getpid()}")  # the side effect
    time.sleep(step_seconds)
    deadline = time.monotonic() + 60
    while hold and not os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.005)
    die_if(f"inside:{i}")
    return i * i


@rk.workflow
def ten_steps(ctx: rk.Context):
    total = 0
    for i in range(10):
        total += yield step(i)
    die_if("end")
    return total


if __name__ == "__main__":
    db, journal_path, kill_at = sys.argv[1:4]
    pace = sys.argv[4] if len(sys.argv) > 4 else "0"
    if pace.startswith("hold:"):
        hold = pace[len("hold:"):]
    else:
        step_seconds = float(pace)
    try:
        print(rk.run(ten_steps, workflow_id="ten", db=db))
    except rk.WorkflowLockedError as exc:
        print("LOCKED", exc)
        sys.exit(3)
