"""Workflows driven by worker processes in the tests; run as a script to serve as a worker:

    python tests/worker_app.py DB QUEUE[,QUEUE...] [--concurrency N] [--limit Q=N] [--version V]

Every activity appends ``name arg pid start end`` to the ledger named by ``RK_LEDGER``; one named by
``RK_HANG`` blocks for ever instead (in a worker that a test kills while it runs).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
import time
from typing import Any

import replaykit as rk


def _ledger(line: str) -> None:
    path = os.environ.get("RK_LEDGER")
    if path:
        with open(path, "a") as f:  # one short write per line: appends from processes do not interleave
            f.write(line + "\n")


@rk.activity
def work(name: str, n: int, seconds: float = 0.0) -> int:
    start = time.time()
    if os.environ.get("RK_HANG") == name:  # a worker a test kills: its activity named here never ends
        threading.Event().wait()
    if seconds:
        time.sleep(seconds)
    _ledger(f"{name} {n} {os.getpid()} {start:.6f} {time.time():.6f}")
    return n


@rk.workflow
def order(ctx: rk.Context, n: int, pause: float = 0.2):
    yield work("charge", n)
    yield rk.sleep(pause)
    approved = yield rk.wait_signal("approved", timeout=60)
    yield work("ship", n)
    return n * 2 if approved else -n


@rk.workflow
def quick(ctx: rk.Context, n: int, seconds: float = 0.0):
    yield work("quick", n, seconds)
    return n + 1


@rk.workflow
def parent(ctx: rk.Context, n: int):
    got = yield rk.child_workflow(quick, n)
    return got * 10


@rk.workflow
def sleeper(ctx: rk.Context, n: int, seconds: float):
    yield work("before", n)
    yield rk.sleep(seconds)
    yield work("after", n)
    return n


WORKFLOWS = [order, quick, parent, sleeper]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("queues")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--limit", action="append", default=[], help="QUEUE=N: fleet-wide concurrency")
    parser.add_argument("--version")
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args(argv)
    limits: dict[str, Any] = dict(item.split("=") for item in args.limit)
    queues = [rk.Queue(q, concurrency=int(limits[q])) if q in limits else q for q in args.queues.split(",")]
    faulthandler.register(signal.SIGUSR1)  # a hung worker in a test: kill -USR1 shows its threads
    made: list[rk.Worker] = []
    # A SIGTERM before run() installs its own handler still stops the worker gracefully.
    signal.signal(signal.SIGTERM, lambda *_: made[0].request_stop() if made else sys.exit(0))
    worker = rk.Worker(args.db, workflows=WORKFLOWS, queues=queues, concurrency=args.concurrency,
                       version=args.version, grace=args.grace, heartbeat=0.2)
    made.append(worker)
    print("ready", worker.worker_id, flush=True)
    worker.run()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
