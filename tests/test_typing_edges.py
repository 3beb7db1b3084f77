"""Activities and sagas as users type them: an activity returning ``Any`` stays a checked sync activity,
a compensation may take a parameter named ``activity``, an activity one named ``self``. Found by a
review of this stop's typing changes (the first undid one of them).

The snippets run as tests/test_typing.py runs good.py and bad.py: in a directory outside the
repository, against replaykit as installed. A line marked ``# E`` must be reported, no other line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import replaykit as rk

MYPY_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*)$")
PYRIGHT_CONFIG = {"typeCheckingMode": "strict", "reportUnnecessaryTypeIgnoreComment": "error",
                  "pythonVersion": "3.10"}


def _errors(checker: str, source: str, where: Path) -> dict[int, list[str]]:
    """The lines ``checker`` reports in ``source`` (a user's module), with their messages."""
    module = where / "user_module.py"
    module.write_text(textwrap.dedent(source))
    found: dict[int, list[str]] = {}
    if checker == "mypy":
        pytest.importorskip("mypy", reason="mypy is in the test extra")
        done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-pretty", "--cache-dir",
                               str(where / "cache"), str(module)], cwd=where, capture_output=True, text=True,
                              timeout=300)
        assert 'module named "replaykit"' not in done.stdout, done.stdout
        for match in map(MYPY_LINE.match, done.stdout.splitlines()):
            if match:
                found.setdefault(int(match["line"]), []).append(match["message"])
        assert found or done.returncode == 0, done.stdout + done.stderr
        return found
    try:
        import pyright  # noqa: F401
    except ImportError:
        pytest.skip("pyright (test extra) is needed")
    if shutil.which("node") is None:
        pytest.skip("pyright needs node")
    (where / "pyrightconfig.json").write_text(json.dumps(PYRIGHT_CONFIG))
    done = subprocess.run([sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable,
                           "-p", str(where / "pyrightconfig.json"), str(module)],
                          cwd=where, capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout or "{}")
    assert "generalDiagnostics" in report, done.stdout + done.stderr
    for d in report["generalDiagnostics"]:
        if d["severity"] == "error":
            found.setdefault(d["range"]["start"]["line"] + 1, []).append(d["message"])
    return found


def _check(checker: str, source: str, where: Path) -> None:
    lines = textwrap.dedent(source).splitlines()
    expected = {n for n, line in enumerate(lines, 1) if re.search(r"\s\s# E(\s|$)", line)}
    errors = _errors(checker, source, where)
    missed = [f"{n}: {lines[n - 1].strip()}" for n in sorted(expected - set(errors))]
    unexpected = [f"{n}: {lines[n - 1].strip()} -> {errors[n]}" for n in sorted(set(errors) - expected)]
    assert not missed and not unexpected, f"not reported: {missed}\nreported on unmarked lines: {unexpected}"


CHECKERS = ["mypy", "pyright"]

ANY_RESULT = """
from __future__ import annotations

import json
from typing import Any

import replaykit as rk


@rk.activity
def load(key: str) -> Any:  # a JSON document: an Any result, as json.loads gives
    return json.loads(key)


@rk.activity(name="load-v2")
def load_v2(key: str) -> Any:
    return json.loads(key)


@rk.workflow
async def report(ctx: rk.Context, key: str) -> int:
    await load(42)  # E wrong activity argument type
    await load_v2(key, "extra")  # E too many activity arguments
    doc: dict[str, int] = await load(key)
    count: int = load.fn(key)["count"]  # .fn is the plain (sync) function: its result, not a coroutine
    size: int = load_v2.fn(key) + 1
    return doc["n"] + count + size
"""


@pytest.mark.parametrize("checker", CHECKERS)
def test_an_activity_with_an_any_result_is_checked_and_sync(checker: str, tmp_path: Path) -> None:
    """typing.md: ``@rk.activity`` on ``def f(...) -> R`` is an ``rk.Activity[[...], R]`` whose calls are
    checked, and a plain function's ``.fn`` returns its result. With ``-> Any`` (a JSON document, an
    untyped library's value), the coroutine overload, now first and returning a different type
    (AsyncActivity) than the sync one, also matches: mypy makes the whole activity ``Any`` (no call is
    checked; before today it was ``Activity[[str], Any]``), pyright makes it an ``AsyncActivity`` (its
    ``.fn(...)`` a coroutine, so ``load.fn(key)["count"]`` is a false error and ``await load.fn(key)``,
    a TypeError at run time, passes)."""
    _check(checker, ANY_RESULT, tmp_path)


def test_a_compensation_may_take_a_parameter_named_activity() -> None:
    """saga.md: ``saga.add(activity, *args, **kwargs)`` registers ``activity(*args, **kwargs)``.
    ``undo(activity="charge", step=1)`` is a valid call of the activity below, but ``Saga.add``'s own
    first parameter is positional-or-keyword: Python raises ``got multiple values for argument
    'activity'`` and both type checkers report the line (the ParamSpec signature repeats the clash)."""
    @rk.activity
    def undo(activity: str, step: int) -> None:
        pass

    saga = rk.Saga()
    saga.add(undo, activity="charge", step=1)
    assert len(saga._undo) == 1


SELF_KEYWORD = """
from __future__ import annotations

import replaykit as rk


@rk.activity
def release(self: str) -> None:
    pass


release(self="seat-1")
"""


def test_an_activity_called_with_the_keyword_self() -> None:
    """Both checkers accept ``release(self="seat-1")`` (``Activity.__call__``'s ``self`` is bound), but
    ``self`` is not positional-only at run time: ``Activity.__call__() got multiple values for argument
    'self'``. A missed error and a runtime failure (the same clash as Saga.add's ``activity``)."""
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(SELF_KEYWORD), "user_module.py", "exec"), namespace)  # raises now
