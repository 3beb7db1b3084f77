"""A process whose engine journals every lifecycle event to a file (``python hooks_child.py DB JOURNAL``):
it starts (or, run again, recovers) the run ``h``, which records two steps, then waits for a signal."""

from __future__ import annotations

import sys

import replaykit as rk


@rk.activity
def step(i: int) -> int:
    return i


@rk.workflow(name="hooks.crashy")
def crashy(ctx: rk.Context) -> rk.Flow[str]:
    yield step(1)
    yield step(2)
    answer: str = yield rk.wait_signal("go")
    return answer


if __name__ == "__main__":
    db, journal = sys.argv[1], sys.argv[2]

    def write(e: rk.HookEvent) -> None:
        with open(journal, "a") as f:
            f.write(f"{e.kind} {e.step} {e.command}\n")

    with rk.Engine(db, workflows=[crashy]) as engine:
        engine.on("*", write)
        handles = engine.recover()
        handle = handles[0] if handles else engine.start(crashy, workflow_id="h")
        print(handle.result(timeout=60), flush=True)
