"""The test environment's fake time reaches user code, never pytest's own timing."""

from __future__ import annotations

import re
import textwrap

import pytest

from conftest import UNNEEDED_PLUGINS

USER_TESTS = textwrap.dedent("""
    import time
    from datetime import datetime, timedelta, timezone

    import replaykit as rk
    from replaykit.testing import TestEnv

    @rk.workflow
    def monthly(ctx):
        yield rk.sleep(timedelta(days=30))
        return ctx.now().isoformat()

    def test_fixture(rk_env):
        assert rk_env.run(monthly) == "2030-01-31T00:00:00+00:00"
        assert datetime.now(timezone.utc).year == 2030  # user code sees the fake time
        assert time.time() > 1.8e9

    def test_context_manager():
        with TestEnv() as env:
            assert env.run(monthly) == "2030-01-31T00:00:00+00:00"
            assert datetime.now(timezone.utc).year == 2030
        assert datetime.now(timezone.utc).year < 2030
""")

DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)s (setup|call|teardown) +(\S+)", re.MULTILINE)


def test_pytest_durations_are_real_for_tests_that_use_the_test_environment(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *UNNEEDED_PLUGINS, "--durations=0",
                                           "--durations-min=0", timeout=120)
    result.assert_outcomes(passed=2)
    durations = [(float(seconds), phase, test) for seconds, phase, test in DURATION.findall(result.stdout.str())]
    listed = {(phase, test.split("::")[-1]) for _, phase, test in durations}
    assert listed == {(phase, test) for phase in ("setup", "call", "teardown")  # (pytest hides negative ones)
                      for test in ("test_fixture", "test_context_manager")}, result.stdout.str()
    absurd = [d for d in durations if not 0 <= d[0] < 1000]  # a sanity bound: they take well under a second
    assert not absurd, f"fake time leaked into pytest's clock: {absurd}"
