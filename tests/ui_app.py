"""Workflows the ``replaykit ui -m ui_app`` server of tests/test_ui.py loads (and the test's worker drives)."""

from __future__ import annotations

import replaykit as rk


@rk.activity
def pick(items: list[str]) -> str:
    return items[-1]


@rk.workflow(name="ui.picking")
def picking(ctx: rk.Context, items: list[str]) -> rk.Flow[str]:
    picked = "nothing yet"

    @ctx.query("picked")
    def what(prefix: str) -> str:
        return prefix + picked

    @ctx.query("odd")
    def odd() -> dict[tuple[int, int], object]:
        return {(1, 2): {3}, (3, 4): float("nan")}  # what JSON cannot carry as it is

    @ctx.query("alike")
    def alike() -> dict[object, str]:
        return {1: "number", "1": "text"}  # keys that read alike as JSON text

    @ctx.query("refuses")
    def refuses() -> None:
        raise rk.IllegalTransitionError("not in this state")  # a replaykit error, raised by the handler

    picked = yield pick(items)
    yield rk.wait_signal("done")
    return picked
