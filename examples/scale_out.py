"""A client and two worker processes sharing one store.

    python examples/scale_out.py                                   # an SQLite file, on this host
    python examples/scale_out.py postgresql://app@db-host/orders   # PostgreSQL, workers anywhere

The script starts two worker processes (``python examples/scale_out.py DB --worker``; on
other machines you would run the same command there, or ``replaykit worker DB -m module``),
then acts as the client: it starts orders in the queue ``orders``, approves them with a
signal, waits for their results, and stops the workers with SIGTERM (a graceful stop).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import replaykit as rk

# At most 4 orders held at once across all workers, and 1 per customer.
ORDERS = rk.Queue("orders", concurrency=4, per_key=1)


@rk.activity
def charge(order_id: str, cents: int) -> str:
    return f"receipt-{order_id}-by-{os.getpid()}"


@rk.workflow
def order(ctx: rk.Context, order_id: str, cents: int) -> rk.Flow[str]:
    receipt: str = yield charge(order_id, cents)
    approved = yield rk.wait_signal("approved", timeout=60)
    return receipt if approved else "rejected"


def worker(db: str) -> None:
    rk.Worker(db, workflows=[order], queues=[ORDERS]).run()  # until SIGTERM


def client(db: str) -> None:
    workers = [subprocess.Popen([sys.executable, __file__, db, "--worker"]) for _ in range(2)]
    try:
        with rk.Client(db) as c:
            while len(c.workers()) < 2:  # both have registered
                time.sleep(0.05)
            handles = [c.start(order, f"o-{n}", 100 * n, workflow_id=f"order-o-{n}", queue="orders",
                               key=f"customer-{n % 5}") for n in range(12)]
            for n in range(12):
                if not c.handle(f"order-o-{n}").status().is_terminal:  # a rerun finds them done
                    c.signal(f"order-o-{n}", "approved", True)
            receipts = [h.result(timeout=60) for h in handles]
            print("results:", receipts[:3], "...")
            print("orders per worker:", sorted(Counter(r.rsplit("-", 1)[1] for r in receipts).values()))
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        print("workers stopped:", [w.wait(timeout=60) for w in workers])


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "scale_out.db"
    worker(target) if sys.argv[2:] == ["--worker"] else client(target)
