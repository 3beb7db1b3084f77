"""A script fanning out 20 slow activities with rk.all, for SIGKILL tests: python fanout_child.py DB JOURNAL."""

from __future__ import annotations

import os
import sys
import time

import replaykit as rk

from helpers import journal

journal_path = ""


@rk.activity
def square(i: int) -> int:
    time.sleep(0.05)
    journal(journal_path, f"done {i} pid {os.getpid()}")
    return i * i


@rk.workflow
def fan(ctx: rk.Context):
    first = yield rk.all(*[square(i) for i in range(10)])
    second = yield rk.all(*[square(i) for i in range(10, 20)])
    return sum(first) + sum(second)


if __name__ == "__main__":
    db, journal_path = sys.argv[1:3]
    with rk.Engine(db, activity_threads=4) as engine:
        print(engine.start(fan, workflow_id="fan").result())
