"""DBOS Transact on SQLite, for the side-by-side benchmarks (run as its own process).

    python dbos_bench.py steps DB N            -> seconds per step of an N-step workflow
    python dbos_bench.py throughput DB N C     -> one-step workflows per second (C at once)
    python dbos_bench.py fanout DB N           -> seconds to fan out N child workflows and gather them
    python dbos_bench.py record DB N FLAG      -> run N steps, then block in a step until FLAG exists
    python dbos_bench.py recover DB            -> seconds from launch to the recovered workflow's result

Each prints one number on its last line. DBOS keeps one configuration per process,
hence one process per measurement.
"""

from __future__ import annotations

import os
import sys
import time

from dbos import DBOS, DBOSConfig

mode, db = sys.argv[1], sys.argv[2]
config: DBOSConfig = {"name": "replaykit-bench", "system_database_url": f"sqlite:///{db}",
                      "run_admin_server": False}
DBOS(config=config)

FLAG = sys.argv[4] if mode == "record" else os.environ.get("BENCH_FLAG", "")


@DBOS.step()
def echo(i: int) -> int:
    return i


@DBOS.step()
def wait_for_flag() -> int:
    while not os.path.exists(FLAG):
        time.sleep(0.01)
    return 0


@DBOS.workflow()
def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += echo(i)
    return total


@DBOS.workflow()
def steps_then_block(n: int) -> int:
    total = 0
    for i in range(n):
        total += echo(i)
    return total + wait_for_flag()


@DBOS.workflow()
def one_step(i: int) -> int:
    return echo(i)


@DBOS.workflow()
def fan_out(n: int) -> int:
    handles = [DBOS.start_workflow(one_step, i) for i in range(n)]
    return sum(h.get_result() for h in handles)


def main() -> None:
    DBOS.launch()
    if mode == "steps":
        n = int(sys.argv[3])
        t0 = time.perf_counter()
        assert steps(n) == n * (n - 1) // 2
        print("RESULT", (time.perf_counter() - t0) / n)
    elif mode == "throughput":
        n, concurrency = int(sys.argv[3]), int(sys.argv[4])
        t0 = time.perf_counter()
        for start in range(0, n, concurrency):
            handles = [DBOS.start_workflow(one_step, i) for i in range(start, min(n, start + concurrency))]
            for h in handles:
                h.get_result()
        print("RESULT", n / (time.perf_counter() - t0))
    elif mode == "fanout":
        n = int(sys.argv[3])
        t0 = time.perf_counter()
        assert fan_out(n) == n * (n - 1) // 2
        print("RESULT", time.perf_counter() - t0)
    elif mode == "record":
        DBOS.start_workflow(steps_then_block, int(sys.argv[3]))
        time.sleep(3600)  # the parent SIGKILLs this process once the steps are recorded
    elif mode == "recover":
        pass  # DBOS.launch() above recovered the pending workflow; wait for it below
    DBOS.destroy()


if __name__ == "__main__":
    if mode == "recover":
        t0 = time.perf_counter()
        DBOS.launch()
        pending = DBOS.list_workflows(status="PENDING") or DBOS.list_workflows()
        result = DBOS.retrieve_workflow(pending[0].workflow_id).get_result()
        print("RESULT", time.perf_counter() - t0)
        DBOS.destroy()
    else:
        main()
