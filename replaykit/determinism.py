"""Cheap warnings when workflow code reaches for the wall clock, randomness or I/O.

No import sandbox: while a workflow step runs (and only then), a profile hook
watches the calls made *directly from user code* and warns on the few that break
replay, pointing at ``ctx.now()``, ``ctx.random()``, ``ctx.uuid4()`` or an
activity. Calls made inside the standard library or installed packages are not
reported (uuid4 calling os.urandom is one mistake, not two).

The hook runs for every call and return of the step, so its common case (nothing
watched) is two comparisons and a dictionary lookup by ``id``: the cost per step is
in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import builtins
import datetime
import io
import os
import random
import sys
import time
import uuid
import warnings
from types import FrameType, TracebackType
from typing import Any


class NonDeterminismWarning(UserWarning):
    """Workflow code did something that will not replay the same way."""


_DIFFERS = "which returns something else on replay"
_CLOCK = f"{_DIFFERS}; use ctx.now(), the recorded time"
_RANDOM = f"{_DIFFERS}; use ctx.random(), seeded once per run"
_UUID = f"{_DIFFERS}; use ctx.uuid4(), drawn from the recorded seed"
_IO = "which is not recorded and runs again on every replay; do I/O in an activity"
_SLEEP = "which blocks the engine and is not durable; use `yield rk.sleep(...)`"

# builtin functions, by id (each entry keeps its function alive, so the id stays its own)
_C_FUNCTIONS: dict[int, tuple[Any, str, str]] = {
    id(fn): (fn, label, instead) for fn, label, instead in (
        (time.time, "time.time()", _CLOCK),
        (time.time_ns, "time.time_ns()", _CLOCK),
        (time.sleep, "time.sleep()", _SLEEP),
        (builtins.open, "open()", _IO),
        (io.open, "open()", _IO),
        (os.system, "os.system()", _IO),
        (os.urandom, "os.urandom()", _RANDOM),
    )
}
# builtin methods, by (owner, name)
_C_METHODS: dict[tuple[type, str], tuple[str, str]] = {
    (datetime.datetime, "now"): ("datetime.now()", _CLOCK),
    (datetime.datetime, "utcnow"): ("datetime.utcnow()", _CLOCK),
    (datetime.datetime, "today"): ("datetime.today()", _CLOCK),
    (datetime.date, "today"): ("date.today()", _CLOCK),
}
_SKIP_DIRS: tuple[str, ...] = ()  # the stdlib's, installed packages' and replaykit's: filled when first needed


def _python_functions() -> tuple[dict[int, tuple[Any, str, str]], tuple[str, ...]]:
    """Watched Python functions, by id of their code object (hashing a code object is slow); and
    the modules of :data:`_UNTIL_LOADED` not (or not yet wholly) loaded, whose functions are not among them."""
    watched: list[tuple[Any, str, str]] = [
        (uuid.uuid4.__code__, "uuid.uuid4()", _UUID),
        (uuid.uuid1.__code__, "uuid.uuid1()", _UUID),
    ]
    popen = getattr(sys.modules.get("subprocess"), "Popen", None)  # None while its import is under way
    if popen is not None:
        watched.append((popen.__init__.__code__, "subprocess.Popen()", _IO))
    for name in ("random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform", "gauss"):
        method = getattr(random.Random, name, None)
        if method is not None and hasattr(method, "__code__"):
            watched.append((method.__code__, f"random.{name}()", _RANDOM))
    fz = sys.modules.get("freezegun.api")
    if fz is not None and hasattr(fz, "FakeDate"):  # under freezegun (tests), these stand in for the clock
        watched.append((fz.fake_time.__code__, "time.time()", _CLOCK))
        for owner, name, label in ((fz.FakeDatetime, "now", "datetime.now()"),
                                   (fz.FakeDatetime, "utcnow", "datetime.utcnow()"),
                                   (fz.FakeDate, "today", "date.today()")):
            watched.append((getattr(owner, name).__func__.__code__, label, _CLOCK))
    awaited = tuple(name for name, ready in (("freezegun.api", fz is not None and hasattr(fz, "FakeDate")),
                                             ("subprocess", popen is not None)) if not ready)
    return {id(code): (code, label, instead) for code, label, instead in watched}, awaited


_PY_FUNCTIONS: dict[int, tuple[Any, str, str]] = {}
# Modules whose functions are watched once they are loaded, and never imported here (freezegun loads
# asyncio, 50 ms; subprocess and socket 5 ms together): code cannot call them before something imports
# them. _PY_FUNCTIONS is filled again at the first step after one appears.
_UNTIL_LOADED = ("freezegun.api", "subprocess")
_awaited: tuple[str, ...] = _UNTIL_LOADED  # those not loaded when _PY_FUNCTIONS was last filled


def _user_frame(frame: FrameType | None) -> bool:
    global _SKIP_DIRS
    if frame is None:
        return False
    if not _SKIP_DIRS:
        import sysconfig

        _SKIP_DIRS = tuple({os.path.realpath(sysconfig.get_paths()[k])
                            for k in ("stdlib", "platstdlib", "purelib", "platlib")}
                           | {os.path.dirname(os.path.realpath(__file__))})
    return not os.path.realpath(frame.f_code.co_filename).startswith(_SKIP_DIRS)


_SOCKET_CALLS = frozenset({"connect", "connect_ex", "sendto"})


def _builtin(fn: Any) -> tuple[str, str] | None:
    """(what, instead) if ``fn``, a builtin about to be called, is watched."""
    found = _C_FUNCTIONS.get(id(fn))
    if found is not None and found[0] is fn:
        return found[1], found[2]
    owner = getattr(fn, "__self__", None)
    if owner is random._inst:
        return f"random.{fn.__name__}()", _RANDOM
    if fn.__name__ in _SOCKET_CALLS:  # the name first: every builtin call of a step comes through here
        sockets = getattr(sys.modules.get("socket"), "socket", None)  # not loaded: no socket to call
        if sockets is not None and isinstance(owner, sockets):
            return f"socket.{fn.__name__}()", _IO
    if isinstance(owner, type):
        return _C_METHODS.get((owner, fn.__name__))
    return None


def _hook(frame: FrameType, event: str, arg: Any) -> None:
    if event == "call":
        found = _PY_FUNCTIONS.get(id(frame.f_code))
        if found is None or found[0] is not frame.f_code:
            return
        if found[2] is _RANDOM and frame.f_locals.get("self") is not random._inst:
            return  # ctx.random() is a Random of its own: fine
        if _user_frame(frame.f_back):
            _warn(frame.f_back, found[1], found[2])  # type: ignore[arg-type]
    elif event == "c_call":
        what = _builtin(arg)
        if what is not None and _user_frame(frame):
            _warn(frame, *what)


def _warn(caller: FrameType, what: str, instead: str) -> None:
    warnings.warn_explicit(
        f"workflow code called {what}, {instead}",
        NonDeterminismWarning,
        caller.f_code.co_filename,
        caller.f_lineno,
        module=caller.f_globals.get("__name__"),
        registry=caller.f_globals.setdefault("__warningregistry__", {}),
    )


class watching:  # noqa: N801 - used as a function: ``with watching(): ...``
    """Warn about non-deterministic calls made from user code inside this block (this thread)."""

    __slots__ = ("_previous", "_installed")

    def __enter__(self) -> None:
        global _awaited
        if not _PY_FUNCTIONS or (_awaited and not sys.modules.keys().isdisjoint(_awaited)):
            found, _awaited = _python_functions()
            _PY_FUNCTIONS.update(found)
        previous = self._previous = sys.getprofile()
        self._installed = previous is None or callable(previous)
        if previous is None:
            sys.setprofile(_hook)
        elif callable(previous):  # another profile function runs on this thread: call it too

            def chained(frame: FrameType, event: Any, arg: Any) -> None:
                previous(frame, event, arg)
                _hook(frame, event, arg)

            sys.setprofile(chained)
        # else a profiler written in C (cProfile's) runs here: leave it alone, and warn about nothing

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            sys.setprofile(self._previous)
