"""Money transfer with saga compensation: if any step fails, the finished steps are undone.

    python examples/money_transfer.py              # a transfer that succeeds, and one that is rolled back

Each compensation is an activity: durable, and retried until it succeeds.
"""

from __future__ import annotations

import argparse

import replaykit as rk

ACCOUNTS = {"alice": 1000, "bob": 100, "frozen": 0}


@rk.activity
def withdraw(account: str, cents: int) -> None:
    if ACCOUNTS[account] < cents:
        raise ValueError(f"{account} has only {ACCOUNTS[account]} cents")
    ACCOUNTS[account] -= cents
    print(f"  withdrew {cents} from {account}")


@rk.activity
def deposit(account: str, cents: int) -> None:
    if account == "frozen":
        raise PermissionError(f"{account} accepts no deposits")
    ACCOUNTS[account] += cents
    print(f"  deposited {cents} to {account}")


@rk.workflow
def transfer(ctx: rk.Context, source: str, target: str, cents: int) -> rk.Flow[str]:
    saga = rk.Saga()
    try:
        yield withdraw(source, cents)
        saga.add(deposit, source, cents)  # the undo of the withdrawal
        yield deposit(target, cents)
        saga.add(withdraw, target, cents)
        return "done"
    except (ValueError, PermissionError) as exc:
        with ctx.shield():  # a cancellation must not interrupt the compensation
            yield from saga.compensate()
        return f"rolled back: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="money_transfer.db")
    db = parser.parse_args().db
    print("alice -> bob, 300:")
    print(" ", rk.run(transfer, "alice", "bob", 300, workflow_id="transfer-1", db=db))
    print("alice -> frozen, 200:")
    print(" ", rk.run(transfer, "alice", "frozen", 200, workflow_id="transfer-2", db=db))
    print("balances:", ACCOUNTS)


if __name__ == "__main__":
    main()
