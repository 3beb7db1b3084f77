"""An engine process for tests/test_terminate.py.

    python terminate_child.py DB MARKER      start `guarded` as "guarded", print "ready" once it waits,
                                             then print how its result() ended

The workflow lives only here: the test process, which terminates the run, never imports it.
"""

from __future__ import annotations

import sys
import time

import replaykit as rk

from helpers import journal


@rk.activity
def note(marker: str, what: str) -> None:
    journal(marker, what)


@rk.workflow
def guarded(ctx: rk.Context, marker: str):
    yield note(marker, "waiting")
    try:
        yield rk.wait_signal("never")
    except rk.Cancelled:
        yield note(marker, "compensated")  # what a cancellation runs, and a termination does not
        raise
    return "signalled"


def main(db: str, marker: str) -> None:
    with rk.Engine(db, poll_interval=0.05) as engine:
        handle = engine.start(guarded, marker, workflow_id="guarded")
        while len(list(engine.store.events("guarded"))) < 2:  # its start and its first step: now it waits
            time.sleep(0.01)
        print("ready", flush=True)
        try:
            print("result", handle.result(timeout=60), flush=True)
        except rk.WorkflowCancelled as exc:
            print(type(exc).__name__, exc, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
