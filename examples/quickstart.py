"""replaykit in one screen: a durable order workflow on an SQLite file.

    python examples/quickstart.py            # runs the workflow, then shows it is recorded
    python examples/quickstart.py --db x.db  # somewhere else

Run it twice: the second run returns the recorded result without charging again.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import replaykit as rk


@rk.activity
def charge_card(order_id: str, cents: int) -> str:
    key = rk.activity_info().idempotency_key  # pass this to your payment API
    print(f"  charging {cents} cents for {order_id} (idempotency key {key})")
    return f"receipt-{order_id}"


@rk.activity
def ship(order_id: str, receipt: str) -> str:
    print(f"  shipping {order_id} (paid: {receipt})")
    return f"tracking-{order_id}"


@rk.workflow
def order(ctx: rk.Context, order_id: str) -> rk.Flow[dict[str, str]]:
    receipt: str = yield charge_card(order_id, 1999)
    yield rk.sleep(timedelta(seconds=1))  # a durable timer: survives restarts
    tracking: str = yield ship(order_id, receipt)
    return {"order": order_id, "receipt": receipt, "tracking": tracking}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="quickstart.db")
    db = parser.parse_args().db

    print("run 1 (starts order-o-42; on a rerun of this script, returns the recorded result):")
    print("  result:", rk.run(order, "o-42", workflow_id="order-o-42", db=db))
    print("run 2 (from the recorded history; nothing is charged again):")
    print("  result:", rk.run(order, "o-42", workflow_id="order-o-42", db=db))
    print(f"history of order-o-42 in {db}:")
    with rk.SqliteStore(db) as store:
        for event in store.events("order-o-42"):
            print(f"  {event.seq}  {event.describe():<28} {event.outcome:<6} {event.payload!s:.60}")


if __name__ == "__main__":
    main()
