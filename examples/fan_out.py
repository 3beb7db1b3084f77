"""Fan-out / fan-in over 100 items: all run in parallel, results come back in order.

    python examples/fan_out.py

Kill it mid-way and rerun: finished items are not processed again.
"""

from __future__ import annotations

import argparse
import time

import replaykit as rk


@rk.activity(retry=rk.RetryPolicy(max_attempts=3, backoff=rk.Fixed(0.1)))
def score(item: int) -> int:
    time.sleep(0.05)  # pretend to call a service
    return item * item


@rk.workflow
def score_all(ctx: rk.Context, items: list[int]) -> rk.Flow[dict[str, int]]:
    scores: list[int] = yield rk.all(*[score(i) for i in items])
    ctx.set_status({"scored": len(scores)})
    return {"items": len(scores), "total": sum(scores), "best": max(scores)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="fan_out.db")
    parser.add_argument("--items", type=int, default=100)
    opts = parser.parse_args()
    started = time.monotonic()
    with rk.Engine(opts.db, activity_threads=32) as engine:
        result = engine.start(score_all, list(range(opts.items)), workflow_id="score-all").result()
    print(result, f"in {time.monotonic() - started:.2f}s")


if __name__ == "__main__":
    main()
