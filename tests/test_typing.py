"""Type checkers on user code, as a user runs them.

``tests/typing/good.py`` must pass ``mypy --strict`` and ``pyright`` (strict); every line of
``tests/typing/bad.py`` marked ``# E`` must be reported by both, and no other line; ``examples/``
must pass ``mypy --strict``. The checkers run in a directory outside the repository, so they find
replaykit only as installed (the editable install's .pth path, or the wheel and its py.typed).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

import replaykit as rk

from conftest import ROOT

TYPING = ROOT / "tests" / "typing"
GOOD, BAD = TYPING / "good.py", TYPING / "bad.py"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
MYPY_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*)$")
NOT_FOUND = "replaykit is not visible to the type checker: reinstall it (pip install -e .) and see pyproject.toml"


def marked_lines(path: Path) -> set[int]:
    return {n for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\s\s# E(\s|$)", line)}


def errors_by_file(errors: list[tuple[str, int, str]]) -> dict[str, dict[int, list[str]]]:
    out: dict[str, dict[int, list[str]]] = {}
    for path, line, message in errors:
        out.setdefault(Path(path).name, {}).setdefault(line, []).append(message)
    return out


@pytest.fixture(scope="module")
def checkers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Start mypy and pyright at once (two cores); each test reads the one it needs."""
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    cwd = tmp_path_factory.mktemp("user")  # no pyproject here: the checkers' defaults, as in a user's project
    procs = {"mypy": subprocess.Popen(
        [sys.executable, "-m", "mypy", "--strict", "--no-pretty", "--cache-dir", str(cwd / "cache"),
         *map(str, [GOOD, BAD, *EXAMPLES])],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)}
    if _pyright_runs():
        procs["pyright"] = subprocess.Popen(
            [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable,
             "-p", str(TYPING / "pyrightconfig.json"), str(GOOD), str(BAD)],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pyright_runs() -> bool:
    try:
        import pyright  # noqa: F401
    except ImportError:
        return False
    return shutil.which("node") is not None


def _output(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=120)
    return out


@pytest.fixture(scope="module")
def mypy_errors(checkers: dict[str, subprocess.Popen[str]]) -> dict[str, dict[int, list[str]]]:
    output = _output(checkers["mypy"])
    assert 'module named "replaykit"' not in output and "py.typed" not in output, f"{NOT_FOUND}\n{output}"
    errors = [(m["path"], int(m["line"]), m["message"]) for m in map(MYPY_LINE.match, output.splitlines()) if m]
    assert errors or checkers["mypy"].returncode == 0, output  # a crash or a usage error, not type errors
    return errors_by_file(errors)


@pytest.fixture(scope="module")
def pyright_errors(checkers: dict[str, subprocess.Popen[str]]) -> dict[str, dict[int, list[str]]]:
    if "pyright" not in checkers:
        pytest.skip("pyright (test extra) and node are needed")
    proc = checkers["pyright"]
    out, err = proc.communicate(timeout=120)
    report = json.loads(out or "{}")
    assert "generalDiagnostics" in report, f"pyright did not run: {err}{out}"
    errors = [(d["file"], d["range"]["start"]["line"] + 1, d["message"])
              for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert not any('"replaykit" could not be resolved' in m for _, _, m in errors), NOT_FOUND
    return errors_by_file(errors)


@pytest.mark.parametrize("checker", ["mypy_errors", "pyright_errors"])
def test_typed_user_module_passes(checker: str, request: pytest.FixtureRequest) -> None:
    errors = request.getfixturevalue(checker)
    assert errors.get(GOOD.name, {}) == {}


@pytest.mark.parametrize("checker", ["mypy_errors", "pyright_errors"])
def test_every_mistake_is_reported(checker: str, request: pytest.FixtureRequest) -> None:
    errors = request.getfixturevalue(checker).get(BAD.name, {})
    expected = marked_lines(BAD)
    lines = BAD.read_text().splitlines()
    missed = [f"{n}: {lines[n - 1].strip()}" for n in sorted(expected - set(errors))]
    unexpected = [f"{n}: {errors[n]}" for n in sorted(set(errors) - expected)]
    assert not missed and not unexpected, f"not reported: {missed}\nreported on unmarked lines: {unexpected}"


def test_examples_pass_mypy_strict(mypy_errors: dict[str, dict[int, list[str]]]) -> None:
    assert {name: found for name, found in mypy_errors.items() if name in {p.name for p in EXAMPLES}} == {}


def test_generic_types_work_at_runtime() -> None:
    """Subscripted in annotations read at run time, and still frozen, slotted, hashable, picklable values."""
    @rk.activity
    def add(a: int, b: int) -> int:
        return a + b

    aliases = [rk.Command[int], rk.ActivityCall[int], rk.Activity[[int, int], int], rk.Workflow[[str], str],
               rk.WorkflowHandle[str], rk.Flow[str], rk.SideEffect[float], rk.Group[list[Any]], rk.ChildWorkflow[str]]
    assert all(alias.__origin__ is not None for alias in aliases)  # type: ignore[attr-defined]
    call = add(1, 2)
    assert isinstance(call, rk.Command) and call == add(1, 2) and hash(call) == hash(add(1, 2))
    for command in (call, rk.sleep(timedelta(seconds=1)), rk.wait_signal("go", timeout=5), rk.all(rk.sleep(1))):
        assert not hasattr(command, "__dict__")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            command.x = 1  # type: ignore[union-attr]
    sleep = rk.sleep(timedelta(seconds=1))
    assert pickle.loads(pickle.dumps(sleep)) == sleep
