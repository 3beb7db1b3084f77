"""Human approval with a timeout: the workflow waits, durably, for a signal.

    python examples/approval.py
    # then, from another shell, within the timeout:
    replaykit signal approval.db expense-17 approved '"alice"'
    # (or: python -m replaykit signal approval.db expense-17 approved '"alice"')

Without an answer the request is rejected when the timeout passes. Kill the
script while it waits and rerun it: it goes on waiting for the same deadline.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import replaykit as rk


@rk.activity
def notify(message: str) -> None:
    print(f"  notify: {message}", flush=True)


@rk.workflow
def expense(ctx: rk.Context, expense_id: str, amount: int, timeout_seconds: float) -> rk.Flow[str]:
    yield notify(f"please approve {expense_id} for {amount} EUR")
    approver = yield rk.wait_signal("approved", timeout=timedelta(seconds=timeout_seconds))
    if approver is None:
        yield notify(f"{expense_id} rejected: nobody approved it in time")
        return "rejected"
    yield notify(f"{expense_id} approved by {approver}")
    return f"approved by {approver}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="approval.db")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for approval")
    opts = parser.parse_args()
    print(f"waiting up to {opts.timeout:g}s; approve with:\n"
          f"  replaykit signal {opts.db} expense-17 approved '\"alice\"'", flush=True)
    print("result:", rk.run(expense, "expense-17", 250, opts.timeout, workflow_id="expense-17", db=opts.db))


if __name__ == "__main__":
    main()
