"""Non-determinism warnings are on by default in rk.run and Engine, and can be switched off."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
import warnings
from pathlib import Path

import replaykit as rk
from replaykit.testing import NonDeterminismWarning

from conftest import PYTHON, ROOT
from helpers import add


@rk.workflow
def reads_the_clock(ctx: rk.Context):
    started = time.time()  # the mistake: ctx.now() is the recorded time
    yield add(1, 2)
    return started > 0


CLOCK_LINE = inspect.getsourcelines(reads_the_clock.fn)[1] + 2


def warned(run: object) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert callable(run) and run() is True
    return [w for w in caught if issubclass(w.category, NonDeterminismWarning)]


def test_rk_run_warns_by_default(tmp_path: Path) -> None:
    caught = warned(lambda: rk.run(reads_the_clock, workflow_id="w", db=str(tmp_path / "a.db")))
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, CLOCK_LINE)]
    assert "time.time()" in str(caught[0].message) and "ctx.now()" in str(caught[0].message)


def test_rk_run_does_not_warn_when_switched_off(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    assert warned(lambda: rk.run(reads_the_clock, workflow_id="w", db=db, warn_nondeterminism=False)) == []


def test_an_engine_warns_by_default_and_not_when_switched_off() -> None:
    with rk.Engine(rk.MemoryStore()) as engine:
        assert len(warned(lambda: engine.start(reads_the_clock, workflow_id="on").result(timeout=10))) == 1
    with rk.Engine(rk.MemoryStore(), warn_nondeterminism=False) as engine:
        assert warned(lambda: engine.start(reads_the_clock, workflow_id="off").result(timeout=10)) == []


@rk.workflow
def reads_the_clock_then_waits(ctx: rk.Context):
    started = time.time()
    yield add(1, 2)
    yield rk.wait_signal("go")
    return started > 0


def test_replayed_steps_are_not_watched(tmp_path: Path) -> None:
    """A resumed run warns only about the code it runs live (replay stays as fast as without)."""
    db = str(tmp_path / "c.db")
    with rk.Engine(db, activity_threads=0, warn_nondeterminism=False) as engine:
        engine.start(reads_the_clock_then_waits, workflow_id="r")
        deadline = time.monotonic() + 10
        while (last := engine.store.last_event("r")) is None or last.kind != "activity":
            assert time.monotonic() < deadline
            time.sleep(0.01)
    rk.send_signal(db, "r", "go")
    assert warned(lambda: rk.run(reads_the_clock_then_waits, workflow_id="r", db=db)) == []


def test_the_warning_benchmark_runs(child_env: dict[str, str]) -> None:
    done = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "bench_nondeterminism.py"), "--steps", "200",
                           "--repeat", "1"], env=child_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rk.run, a step" in done.stdout and "replayed step" in done.stdout


LOADED_LATE = '''
import sys, warnings
import replaykit as rk
from replaykit.store import MemoryStore

@rk.activity
def nothing() -> int:
    return 0

@rk.workflow
def late(ctx):
    yield nothing()  # the first live step: the watched functions are gathered here
    import {modules}
    yield nothing()
{calls}
    yield nothing()

assert not {{{unloaded}}} & set(sys.modules), "the test needs them unloaded"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    rk.run(late, workflow_id="late", db=MemoryStore())
for w in caught:
    print(w.category.__name__, w.message)
'''


def warnings_when_loaded_late(modules: str, calls: str, env: dict[str, str], unloaded: str = "") -> str:
    """What a child process prints when its workflow imports ``modules`` after its first step, then runs
    ``calls`` (indented workflow code). ``unloaded``: those that must not be loaded before (default: all)."""
    unloaded = ", ".join(repr(m.strip()) for m in (unloaded or modules).split(","))
    script = LOADED_LATE.format(modules=modules, calls=calls, unloaded=unloaded)
    done = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_freezegun_loaded_after_the_first_step_is_still_watched(child_env: dict[str, str]) -> None:
    # replaykit never imports freezegun (it loads asyncio): it watches freezegun's clock once loaded
    out = warnings_when_loaded_late("freezegun", '''    with freezegun.freeze_time("2026-01-01"):
        import time
        time.time()''', child_env)
    assert "NonDeterminismWarning workflow code called time.time()" in out, out


def test_subprocess_and_socket_loaded_after_the_first_step_are_still_watched(child_env: dict[str, str]) -> None:
    # replaykit imports neither (5 ms at every start): it watches them once something loads them
    out = warnings_when_loaded_late("socket, subprocess", '''    subprocess.Popen([sys.executable, "-c", "pass"]).wait()
    with socket.socket() as s:
        s.connect_ex(("127.0.0.1", 9))''', child_env,
                                    unloaded="socket" if sys.version_info < (3, 11) else "socket, subprocess")
    # (Python 3.10's platform module, which attrs imports, loads subprocess: then it is watched from the start)
    assert "NonDeterminismWarning workflow code called subprocess.Popen()" in out, out
    assert "NonDeterminismWarning workflow code called socket.connect_ex()" in out, out
