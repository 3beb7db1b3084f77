"""A monitor that loops forever, kept fast with continue-as-new.

    python examples/monitor.py --checks 12

Every `per_run` checks the workflow continues as new: same id, fresh history,
so replaying it after a restart never gets slower.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import replaykit as rk


@rk.activity
def check(url: str) -> bool:
    return not url.endswith("/down")


@rk.workflow
def monitor(ctx: rk.Context, url: str, checks_left: int, failures: int, per_run: int = 5
            ) -> rk.Flow[dict[str, str | int]]:
    for _ in range(per_run):
        if checks_left == 0:
            return {"url": url, "failures": failures}
        healthy = yield check(url)
        failures += 0 if healthy else 1
        checks_left -= 1
        ctx.set_status({"checks_left": checks_left, "failures": failures})
        yield rk.sleep(timedelta(milliseconds=10))
    yield rk.continue_as_new(url, checks_left, failures, per_run)
    raise AssertionError("not reached: the run went on as a new run")  # tells type checkers so


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="monitor.db")
    parser.add_argument("--checks", type=int, default=12)
    opts = parser.parse_args()
    print(rk.run(monitor, "https://example.com/health", opts.checks, 0, workflow_id="monitor-1", db=opts.db))
    with rk.SqliteStore(opts.db) as store:
        print("events in the current history:", len(list(store.events("monitor-1"))))


if __name__ == "__main__":
    main()
