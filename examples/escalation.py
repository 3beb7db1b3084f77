"""Approval with escalation: ask the manager; if no answer in time, escalate to the director.

    python examples/escalation.py --timeout 1
    # from another shell, within the timeout:  replaykit signal escalation.db expense-9 manager '"yes"'
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import replaykit as rk


@rk.activity
def ask(who: str, question: str) -> None:
    print(f"  asked {who}: {question}", flush=True)


@rk.workflow
def approve(ctx: rk.Context, expense: str, timeout_seconds: float) -> rk.Flow[str]:
    timeout = timedelta(seconds=timeout_seconds)
    yield ask("manager", f"approve {expense}?")
    index, answer = yield rk.any(rk.wait_signal("manager"), rk.sleep(timeout))
    if index == 0:
        return f"manager said {answer}"
    yield ask("director", f"{expense} was not answered by the manager in time; approve?")
    answer = yield rk.wait_signal("director", timeout=timeout)
    return f"director said {answer}" if answer is not None else "rejected: nobody answered"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="escalation.db")
    parser.add_argument("--timeout", type=float, default=30.0)
    opts = parser.parse_args()
    print("result:", rk.run(approve, "expense-9", opts.timeout, workflow_id="expense-9", db=opts.db))


if __name__ == "__main__":
    main()
