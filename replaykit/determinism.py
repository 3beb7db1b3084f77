"""Cheap warnings when workflow code reaches for the wall clock, randomness or I/O.

No import sandbox: while a workflow step runs (and only then), a profile hook
watches the calls made *directly from user code* and warns on the few that break
replay, pointing at ``ctx.now()``, ``ctx.random()``, ``ctx.uuid4()`` or an
activity. Calls made inside the standard library or installed packages are not
reported (uuid4 calling os.urandom is one mistake, not two).
"""

from __future__ import annotations

import builtins
import datetime
import io
import os
import random
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class NonDeterminismWarning(UserWarning):
    """Workflow code did something that will not replay the same way."""


_DIFFERS = "which returns something else on replay"
_CLOCK = f"{_DIFFERS}; use ctx.now(), the recorded time"
_RANDOM = f"{_DIFFERS}; use ctx.random(), seeded once per run"
_UUID = f"{_DIFFERS}; use ctx.uuid4(), drawn from the recorded seed"
_IO = "which is not recorded and runs again on every replay; do I/O in an activity"
_SLEEP = "which blocks the engine and is not durable; use `yield rk.sleep(...)`"

# builtin functions, by identity
_C_FUNCTIONS: dict[Any, tuple[str, str]] = {
    time.time: ("time.time()", _CLOCK),
    time.time_ns: ("time.time_ns()", _CLOCK),
    time.sleep: ("time.sleep()", _SLEEP),
    builtins.open: ("open()", _IO),
    io.open: ("open()", _IO),
    os.system: ("os.system()", _IO),
    os.urandom: ("os.urandom()", _RANDOM),
}
# builtin methods, by (owner, name)
_C_METHODS: dict[tuple[type, str], tuple[str, str]] = {
    (datetime.datetime, "now"): ("datetime.now()", _CLOCK),
    (datetime.datetime, "utcnow"): ("datetime.utcnow()", _CLOCK),
    (datetime.datetime, "today"): ("datetime.today()", _CLOCK),
    (datetime.date, "today"): ("date.today()", _CLOCK),
}
_SKIP_DIRS = tuple({os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
                   | {os.path.dirname(os.path.realpath(__file__))})


def _python_functions() -> dict[Any, tuple[str, str]]:
    watched: dict[Any, tuple[str, str]] = {
        uuid.uuid4.__code__: ("uuid.uuid4()", _UUID),
        uuid.uuid1.__code__: ("uuid.uuid1()", _UUID),
        subprocess.Popen.__init__.__code__: ("subprocess.Popen()", _IO),
    }
    for name in ("random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform", "gauss"):
        method = getattr(random.Random, name, None)
        if method is not None and hasattr(method, "__code__"):
            watched[method.__code__] = (f"random.{name}()", _RANDOM)
    try:  # under freezegun (the test environment), these stand in for the clock
        from freezegun import api as fz

        watched[fz.fake_time.__code__] = ("time.time()", _CLOCK)
        for owner, name, label in ((fz.FakeDatetime, "now", "datetime.now()"),
                                   (fz.FakeDatetime, "utcnow", "datetime.utcnow()"),
                                   (fz.FakeDate, "today", "date.today()")):
            watched[getattr(owner, name).__func__.__code__] = (label, _CLOCK)
    except ImportError:
        pass
    return watched


_PY_FUNCTIONS: dict[Any, tuple[str, str]] | None = None


def _user_frame(frame: FrameType | None) -> bool:
    return frame is not None and not os.path.realpath(frame.f_code.co_filename).startswith(_SKIP_DIRS)


def _identify(frame: FrameType, event: str, arg: Any) -> tuple[FrameType | None, tuple[str, str] | None]:
    """(the calling frame, what was called) for watched calls, else (None, None)."""
    if event == "c_call":
        found = _C_FUNCTIONS.get(arg) if _hashable(arg) else None
        owner = getattr(arg, "__self__", None)
        if found is None and owner is not None:
            if owner is random._inst:
                found = (f"random.{arg.__name__}()", _RANDOM)
            elif isinstance(owner, socket.socket) and arg.__name__ in ("connect", "connect_ex", "sendto"):
                found = (f"socket.{arg.__name__}()", _IO)
            elif isinstance(owner, type):
                found = _C_METHODS.get((owner, arg.__name__))
        return (frame, found) if found else (None, None)
    if event == "call":
        assert _PY_FUNCTIONS is not None
        found = _PY_FUNCTIONS.get(frame.f_code)
        if found is None:
            return None, None
        if found[1] is _RANDOM and frame.f_locals.get("self") is not random._inst:
            return None, None  # ctx.random() is a Random of its own: fine
        return frame.f_back, found
    return None, None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
        return True
    except TypeError:
        return False


def _warn(caller: FrameType, what: str, instead: str) -> None:
    warnings.warn_explicit(
        f"workflow code called {what}, {instead}",
        NonDeterminismWarning,
        caller.f_code.co_filename,
        caller.f_lineno,
        module=caller.f_globals.get("__name__"),
        registry=caller.f_globals.setdefault("__warningregistry__", {}),
    )


@contextmanager
def watching() -> Iterator[None]:
    """Warn about non-deterministic calls made from user code inside this block (this thread)."""
    global _PY_FUNCTIONS
    if _PY_FUNCTIONS is None:
        _PY_FUNCTIONS = _python_functions()
    previous = sys.getprofile()

    def hook(frame: FrameType, event: Any, arg: Any) -> None:
        if previous is not None:
            previous(frame, event, arg)
        caller, found = _identify(frame, event, arg)
        if found is not None and _user_frame(caller):
            assert caller is not None
            _warn(caller, *found)

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(previous)
