"""The pytest plugin: fixtures and strict mode, in this suite and in a fresh project."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.testing import TestEnv

from conftest import ROOT, UNNEEDED_PLUGINS


@rk.workflow
def reminder(ctx: rk.Context, days: int):
    yield rk.sleep(timedelta(days=days))
    return ctx.now().isoformat()


def test_rk_env_fixture_is_a_ready_test_env(rk_env: TestEnv) -> None:
    assert isinstance(rk_env, TestEnv)
    assert rk_env.run(reminder, 10) == "2030-01-11T00:00:00+00:00"


USER_TESTS = textwrap.dedent("""
    import random
    from datetime import timedelta

    import pytest
    import replaykit as rk

    @rk.activity
    def pick(side):
        return side

    @rk.workflow
    def flaky(ctx):
        yield rk.sleep(timedelta(days=1))
        side = "a" if random.random() < 0.5 else "b"
        chosen = yield pick(side)
        yield rk.sleep(timedelta(days=1))
        return chosen

    @rk.workflow
    def monthly(ctx):
        yield rk.sleep(timedelta(days=30))
        return ctx.now().isoformat()

    def test_month(rk_env):
        assert rk_env.run(monthly) == "2030-01-31T00:00:00+00:00"

    @pytest.mark.replaykit_strict
    def test_flaky_marked_strict(rk_env):
        with pytest.raises(rk.NonDeterminismError, match="strict replay"):
            for _ in range(40):
                rk_env.run(flaky)

    def test_flaky_not_strict(rk_env):
        for _ in range(40):  # without strict replay, the coin flip goes unnoticed
            rk_env.run(flaky)
""")


PLAIN_TESTS = textwrap.dedent("""
    import sys

    import replaykit as rk
    from replaykit.store import MemoryStore

    @rk.activity
    def double(x):
        return 2 * x

    @rk.workflow
    def doubling(ctx, x):
        return (yield double(x))

    def test_plain():
        assert rk.run(doubling, 21, workflow_id="d", db=MemoryStore()) == 42
        assert "freezegun" not in sys.modules
""")


def test_marker_and_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *UNNEEDED_PLUGINS)
    result.assert_outcomes(passed=3)
    strict = pytester.runpytest_subprocess("-q", "--replaykit-strict", "-k", "not marked", "-p", "no:cacheprovider",
                                           *UNNEEDED_PLUGINS)
    assert "strict replay" in strict.stdout.str()
    strict.assert_outcomes(passed=1, failed=1)  # test_flaky_not_strict now fails: the option turned strict on
    helped = pytester.runpytest_subprocess("--help", *UNNEEDED_PLUGINS)
    assert "--replaykit-strict" in helped.stdout.str()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plugin_works_in_a_fresh_project_that_only_installs_replaykit(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # No pip of its own (ensurepip took ~3 s): this interpreter's pip installs into it (pip --python).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    # The wheel `pip install <checkout>` builds, built once: both installs below take it (each built it again).
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, env=env, timeout=500)
    [wheel] = wheels.glob("replaykit-*.whl")
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_user.py").write_text(USER_TESTS)
    (project / "test_plain.py").write_text(PLAIN_TESTS)

    def pytest_in_project(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)

    # A production install (no fake clock): the plugin loads, plain tests run, rk_env says what to install.
    subprocess.run([*pip, str(wheel), "pytest"], check=True, env=env, timeout=500)
    plain = pytest_in_project("test_plain.py")
    assert plain.returncode == 0 and "1 passed" in plain.stdout, plain.stdout + plain.stderr
    missing = pytest_in_project("test_user.py")
    assert missing.returncode == 1 and 'pip install "replaykit[testing]"' in missing.stdout, missing.stdout
    # With the testing extra, the fixture and the marker work.
    subprocess.run([*pip, f"{wheel}[testing]"], check=True, env=env, timeout=500)
    done = pytest_in_project()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
