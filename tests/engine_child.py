"""Engine processes for the ownership and interrupt tests (tests/test_ownership.py, tests/test_interrupt.py).

    python engine_child.py drive DB LEDGER COUNT           start COUNT `chain` runs, wait for them, exit
    python engine_child.py recover DB LEDGER STOPFILE      call engine.recover() in a tight loop until STOPFILE exists
    python engine_child.py worker DB LEDGER COUNT SEED     start or recover the COUNT `chain` runs until all ended
    python engine_child.py steps DB LEDGER COUNT           rk.run a COUNT-step workflow (for Ctrl-C)

Every activity execution appends ``<workflow id> <step> <attempt> <pid>`` to LEDGER with one
O_APPEND write, before it returns: the ledger counts executions, whoever ran them.
"""

from __future__ import annotations

import os
import random
import sys
import time

import replaykit as rk

from helpers import journal

CHAIN_STEPS = 3


@rk.activity
def work(ledger: str, i: int, pause: float = 0.0) -> int:
    info = rk.activity_info()
    time.sleep(pause)
    journal(ledger, f"{info.workflow_id} {info.seq} {info.attempt} {os.getpid()}")
    return i * i


@rk.workflow
def chain(ctx: rk.Context, ledger: str, k: int, ticks: int = 0):
    """Three steps, each followed by a timer when ``ticks``: it sleeps ``ticks`` ticks of 0.1 s,
    to a tick boundary, so that many runs wake in the same turn of their engine (and their
    steps are recorded in one batch). Returns ``chain_result(k)``."""
    total = k
    for i in range(CHAIN_STEPS):
        total += yield work(ledger, i)
        if ticks:
            now = ctx.now().timestamp()
            yield rk.sleep(TICK * ticks - now % TICK)
    return total


TICK = 0.1


def chain_result(k: int) -> int:
    return k + sum(i * i for i in range(CHAIN_STEPS))


@rk.workflow
def counted_steps(ctx: rk.Context, ledger: str, count: int, pause: float):
    done = []
    for i in range(count):
        done.append((yield work(ledger, i, pause)))
    return len(done)


def drive(db: str, ledger: str, count: int) -> None:
    with rk.Engine(db, workflows=[chain]) as engine:
        # The recovering process may take a run between its creation and our lock: wait for it then.
        handles = [engine.start(chain, ledger, k, workflow_id=f"w{k}", lock_timeout=30) for k in range(count)]
        results = [h.result(timeout=60) for h in handles]
    assert results == [chain_result(k) for k in range(count)], results
    print("DONE", flush=True)


def recover(db: str, stopfile: str) -> None:
    with rk.Engine(db, workflows=[chain]) as engine:
        while not os.path.exists(stopfile):
            engine.recover()
    print("STOPPED", flush=True)


def ticks(k: int) -> int:
    """Run k's timers, in ticks: runs end over a few seconds, while workers are being killed."""
    return 1 + k % 10


def worker(db: str, ledger: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    cache = rng.choice([None, 0, 0, 1])  # most workers evict runs parked on timers
    with rk.Engine(db, workflows=[chain], activity_threads=rng.choice([2, 16]), max_cached_runs=cache) as engine:
        for k in rng.sample(range(count), count):
            engine.start(chain, ledger, k, ticks(k), workflow_id=f"w{k}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = engine.store.list()
            if len(runs) == count and all(info.status.is_terminal for info in runs):
                break
            engine.recover()  # often: each try is a chance to take over a run another process gives up
            time.sleep(0.002)
    print("DONE", flush=True)


if __name__ == "__main__":
    mode, db, ledger = sys.argv[1:4]
    if mode == "drive":
        drive(db, ledger, int(sys.argv[4]))
    elif mode == "recover":
        recover(db, sys.argv[4])
    elif mode == "worker":
        worker(db, ledger, int(sys.argv[4]), int(sys.argv[5]))
    elif mode == "steps":
        print(rk.run(counted_steps, ledger, int(sys.argv[4]), 0.05, workflow_id="steps", db=db), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
