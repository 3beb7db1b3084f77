"""Idempotency keys never repeat across the generations of a workflow id (continue-as-new, restart)."""

from __future__ import annotations

from typing import Any

import pytest

import replaykit as rk

keys: list[str] = []
failing = {"on": False}


@rk.activity
def charge(cycle: int) -> int:
    keys.append(rk.activity_info().idempotency_key)
    if failing["on"]:
        raise RuntimeError("provider down")
    return cycle


@rk.workflow(name="billing_cycles")
def billing_cycles(ctx: rk.Context, cycle: int) -> Any:
    yield charge(cycle)
    if cycle < 3:
        yield rk.continue_as_new(cycle + 1)
    return cycle


@pytest.fixture(autouse=True)
def _clean() -> Any:
    keys.clear()
    failing["on"] = False
    yield


def test_each_run_after_continue_as_new_charges_under_a_key_of_its_own(any_db: str) -> None:
    assert rk.run(billing_cycles, 1, workflow_id="acct", db=any_db) == 3
    assert len(keys) == 3 and len(set(keys)) == 3, keys  # three real charges, three keys
    assert keys[0] == "acct:1:1"  # the first run keeps the documented form


def test_a_restarted_run_gets_keys_of_its_own(any_db: str) -> None:

    @rk.workflow(name="one_charge")
    def one_charge(ctx: rk.Context) -> Any:
        return (yield charge(7))

    failing["on"] = True
    with pytest.raises(rk.WorkflowFailed):
        rk.run(one_charge, workflow_id="once", db=any_db)
    failing["on"] = False
    rk.restart(any_db, "once")
    assert rk.run(one_charge, workflow_id="once", db=any_db) == 7
    assert keys[0] != keys[1], keys  # a provider that cached the failure under the old key is asked afresh
