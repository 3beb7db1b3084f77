"""A workflow sees an activity's exception chain (what it was raised from, all the way down) the same
live and on replay: it gets the recorded copy both times, with the chain recorded beside it; a link
that does not pickle is an ActivityFailed naming its type. Before, it got the very object raised
live, and on replay a copy with the cause one level deep only, or none when the cause did not
pickle (found by a review)."""

from __future__ import annotations

import threading
from typing import Any

import replaykit as rk


class Wrapped(Exception):
    pass


@rk.activity(name="chains.deep")
def deep() -> None:
    try:
        try:
            raise KeyError("card-42")
        except KeyError as missing:
            raise LookupError("no card") from missing
    except LookupError as lookup:
        raise ValueError("charge failed") from lookup


class HoldsALock(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.guard = threading.Lock()  # a live resource: the cause does not pickle


@rk.activity(name="chains.unpicklable_cause")
def unpicklable_cause() -> None:
    try:
        raise HoldsALock("connection dropped")
    except HoldsALock as dropped:
        raise ValueError("charge failed") from dropped


def _chain(exc: BaseException | None) -> list[str]:
    seen = []
    while exc is not None:  # a stand-in names the type it stands for
        seen.append(getattr(exc, "error_type", type(exc).__name__).rsplit(".", 1)[-1])
        exc = exc.__cause__
    return seen


@rk.workflow(name="chains.pays")
def pays(ctx: rk.Context, which: str) -> rk.Flow[dict[str, Any]]:
    seen: dict[str, Any] = {}
    try:
        yield (deep() if which == "deep" else unpicklable_cause())
    except ValueError as exc:
        seen["chain"] = _chain(exc)
    ctx.set_query_handler("seen", lambda: seen)
    yield rk.sleep(0)
    return seen


def test_a_cause_of_a_cause_is_the_same_live_and_on_replay(any_db: str) -> None:
    live = rk.run(pays, "deep", workflow_id="deep", db=any_db)
    assert live["chain"] == ["ValueError", "LookupError", "KeyError"]
    replayed = rk.query(any_db, "deep", "seen", workflows={"chains.pays": pays})
    assert replayed == live


def test_a_cause_that_does_not_pickle_is_the_same_live_and_on_replay(any_db: str) -> None:
    live = rk.run(pays, "unpicklable", workflow_id="unpicklable", db=any_db)
    assert live["chain"] == ["ValueError", "HoldsALock"]
    replayed = rk.query(any_db, "unpicklable", "seen", workflows={"chains.pays": pays})
    assert replayed == live
