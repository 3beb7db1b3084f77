"""A workflow sees an activity's exception with the same ``__cause__`` and ``__context__`` live and on
replay. Live it gets the very object raised; on replay, its recorded copy, which had none (an
exception pickles without them), so code that looked at the cause took another path on replay (found
by a fuzz campaign). The copy now carries them."""

from __future__ import annotations

from typing import Any

import replaykit as rk


@rk.activity(name="causes.charge")
def charge() -> None:
    try:
        raise KeyError("card-42")
    except KeyError as missing:
        raise ValueError("charge failed") from missing


@rk.workflow(name="causes.pays")
def pays(ctx: rk.Context) -> rk.Flow[dict[str, Any]]:
    seen: dict[str, Any] = {}
    try:
        yield charge()
    except ValueError as exc:
        seen.update(message=str(exc), cause=repr(exc.__cause__), type=type(exc).__name__)
    ctx.set_query_handler("seen", lambda: seen)
    yield rk.sleep(0)
    return seen


def test_an_activity_error_is_the_same_live_and_on_replay(any_db: str) -> None:
    live = rk.run(pays, workflow_id="pay", db=any_db)
    assert live["message"] == "charge failed" and live["type"] == "ValueError"
    assert rk.query(any_db, "pay", "seen", workflows={"causes.pays": pays}) == live
