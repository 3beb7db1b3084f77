"""A process that keeps an engine busy on a store while another prunes it (``python prune_child.py DB N``):
it runs N short workflows to their end and says ``ended``, then N long ones, each stepping for a while
and then waiting for the signal ``finish``; it prints their results as one JSON line."""

from __future__ import annotations

import json
import sys

import replaykit as rk


@rk.activity
def square(x: int) -> int:
    return x * x


@rk.workflow(name="prune.squares")
def squares(ctx: rk.Context, n: int) -> rk.Flow[int]:
    total = 0
    for i in range(n):
        total += yield square(i)
        yield rk.sleep(0.002)
    finish: int = yield rk.wait_signal("finish")
    return total + finish


if __name__ == "__main__":
    db, count = sys.argv[1], int(sys.argv[2])
    with rk.Engine(db) as engine:
        ended = [engine.start(squares, 3, workflow_id=f"ended-{i}") for i in range(count)]
        for handle in ended:
            rk.send_signal(db, handle.workflow_id, "finish", 0)
        assert [h.result(timeout=60) for h in ended] == [5] * count
        print("ended", flush=True)
        busy = [engine.start(squares, 40 + i % 7, workflow_id=f"busy-{i}") for i in range(count)]
        print(json.dumps([h.result(timeout=120) for h in busy]), flush=True)
