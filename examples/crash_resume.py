"""Kill it, rerun it: the workflow continues where it died, and no step runs twice.

    python examples/crash_resume.py          # Ctrl-C or `kill -9` it mid-way, then run it again
    python examples/crash_resume.py --crash-after 3   # SIGKILLs itself after step 3, to try it hands-free

Each step appends to steps.log; after any number of kills and reruns, every step
that completed appears there once (the one killed mid-step may appear twice:
activities are at-least-once, which is why each gets an idempotency key).
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import replaykit as rk

args = argparse.Namespace(crash_after=None, log="steps.log", delay=0.5)


@rk.activity
def step(i: int) -> str:
    time.sleep(args.delay)  # pretend to work
    with open(args.log, "a") as log:
        log.write(f"step {i} done by pid {os.getpid()}\n")
    print(f"  step {i} done", flush=True)
    if args.crash_after == i:
        print(f"  (killing myself with SIGKILL after step {i})", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return f"result-{i}"


@rk.workflow
def pipeline(ctx: rk.Context, steps: int) -> rk.Flow[list[str]]:
    results: list[str] = []
    for i in range(1, steps + 1):
        ctx.logger.info("starting step %d", i)  # silent while replaying
        results.append((yield step(i)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="crash_resume.db")
    parser.add_argument("--log", default="steps.log")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds each step takes")
    parser.add_argument("--crash-after", type=int, default=None, help="SIGKILL this process after step N")
    parser.parse_args(namespace=args)
    print(f"running pipeline (db {args.db}); completed steps are replayed, not rerun", flush=True)
    print("result:", rk.run(pipeline, args.steps, workflow_id="pipeline-1", db=args.db))


if __name__ == "__main__":
    main()
