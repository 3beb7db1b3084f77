"""A workflow whose history holds a pickled value in every place a payload lives: the start's
arguments, an activity's result, an error's pickled copy, a signal, the run's result. The hostile
store tests (test_signing.py) replace them with crafted pickles; importable from subprocesses."""

from __future__ import annotations

import pickle
from typing import Any

import replaykit as rk


class Refused(Exception):
    """An activity's error: recorded with a pickled copy."""


@rk.activity
def pair(n: int) -> tuple[int, int]:
    return (n, n)


@rk.activity
def refuse() -> None:
    raise Refused("no")


@rk.workflow(name="victim")
def victim(ctx: rk.Context, arg: tuple[int, int]):
    ctx.set_status("started")
    state: dict[str, Any] = {}
    ctx.set_query_handler("state", lambda: state)
    first = yield pair(arg[0])
    state["first"] = first
    try:
        yield refuse()
    except Refused:
        pass
    go = yield rk.wait_signal("go")
    return (first, go)


class _Crafted:
    """Unpickling it runs code: it creates the file ``path`` (a marker the tests look for)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def crafted_pickle(marker: str) -> bytes:
    """A pickle an attacker writes into the store: loading it creates ``marker``."""
    return pickle.dumps(_Crafted(marker))
