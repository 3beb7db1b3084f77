"""The replay checker: recorded histories against changed code, JSON export, batch checks."""

from __future__ import annotations

import inspect
import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.testing import History, TestEnv, export_history, replay, replay_all

from conftest import PYTHON


@rk.activity
def reserve(item: str) -> str:
    return f"reserved {item}"


@rk.activity
def bill(item: str) -> str:
    return f"billed {item}"


@rk.workflow(name="shop")
def shop_v1(ctx: rk.Context, item: str):
    r = yield reserve(item)
    yield rk.sleep(60)
    b = yield bill(item)
    return [r, b]


def record(tmp_path: Path) -> History:
    with TestEnv(db=str(tmp_path / "prod.db")) as env:
        env.run(shop_v1, "lamp", workflow_id="shop-1")
    return export_history(str(tmp_path / "prod.db"), "shop-1")


def variant(body: str) -> rk.Workflow:
    """A workflow named like shop_v1 whose code is ``body``."""
    namespace = {"rk": rk, "reserve": reserve, "bill": bill}
    exec(compile(textwrap.dedent(body), "changed_shop.py", "exec"), namespace)
    return rk.Workflow(namespace["shop"], "shop")


def test_unchanged_code_passes(tmp_path: Path) -> None:
    report = replay(shop_v1, record(tmp_path))
    assert report.ok and report.steps == 3 and report.workflow_id == "shop-1"


@pytest.mark.parametrize(("body", "line", "recorded", "now"), [
    ("""
     def shop(ctx, item):
         r = yield reserve(item)
         yield rk.sleep(60)
         b = yield reserve(item)
         return [r, b]
     """, 5, "activity 'bill'", "activity reserve('lamp')"),  # a changed activity
    ("""
     def shop(ctx, item):
         yield rk.sleep(60)
         r = yield reserve(item)
         b = yield bill(item)
         return [r, b]
     """, 3, "activity 'reserve'", "sleep(0:01:00)"),  # a reordered yield
    ("""
     def shop(ctx, item):
         r = yield reserve(item)
         b = yield bill(item)
         return [r, b]
     """, 4, "timer", "activity bill('lamp')"),  # a removed timer
])
def test_changes_are_caught_with_file_line_and_a_side_by_side_diff(
        tmp_path: Path, body: str, line: int, recorded: str, now: str) -> None:
    history = record(tmp_path)
    with pytest.raises(rk.NonDeterminismError) as err:
        replay(variant(body), history)
    message = str(err.value)
    assert f"(changed_shop.py:{line})" in message
    assert f"history recorded: {recorded}" in message and f"code now yields:  {now}" in message
    marked = [row for row in err.value.diff.splitlines() if row.lstrip().startswith(">")]
    assert len(marked) == 1 and recorded in marked[0] and now in marked[0]


def test_code_that_ends_early_or_late_is_caught(tmp_path: Path) -> None:
    history = record(tmp_path)
    shorter = variant("""
     def shop(ctx, item):
         r = yield reserve(item)
         return [r]
     """)
    with pytest.raises(rk.NonDeterminismError, match="code now yields:  returns"):
        replay(shorter, history)
    longer = variant("""
     def shop(ctx, item):
         r = yield reserve(item)
         yield rk.sleep(60)
         b = yield bill(item)
         yield bill(item)
         return [r, b]
     """)
    with pytest.raises(rk.NonDeterminismError, match="history recorded: the workflow returned"):
        replay(longer, history)


def test_exported_json_round_trips(tmp_path: Path) -> None:
    history = record(tmp_path)
    path = tmp_path / "shop-1.json"
    history.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "replaykit-history" and data["events"][1]["value"] == "reserved lamp"
    assert History.load(path) == history
    assert replay(shop_v1, path).ok  # straight from the file


def _exported(value: Any) -> tuple[History, rk.Workflow]:
    """The history of a run whose one activity returned ``value``, exported, and its workflow."""
    @rk.activity
    def pair() -> Any:
        return value

    @rk.workflow
    def pairs(ctx: rk.Context):
        return (yield pair())

    with TestEnv() as env:
        env.run(pairs, workflow_id="p")
        return export_history(env.store, "p"), pairs


def test_pickled_payloads_round_trip(tmp_path: Path) -> None:
    history, _ = _exported(complex(1, 2))  # neither JSON nor typed JSON: pickled
    assert history.events[1].encoding == "pickle"
    assert History.from_json(json.loads(json.dumps(history.to_json()))) == history


def test_typed_payloads_export_as_readable_json_and_round_trip(tmp_path: Path) -> None:
    """A typed value (here a tuple: JSON with its type recorded) exports readable; before, the export
    asserted every payload that is not plain JSON was a pickle."""
    history, pairs = _exported((1, "a"))
    assert history.events[1].encoding == "typed"
    data = json.loads(json.dumps(history.to_json()))
    assert data["events"][1]["typed"]["v"] == [1, "a"]
    assert History.from_json(data).events[1].value() == (1, "a")
    assert replay(pairs, History.from_json(data)).ok


def test_wrong_workflow_for_a_history(tmp_path: Path) -> None:
    @rk.workflow
    def other(ctx: rk.Context):
        yield rk.sleep(1)

    with pytest.raises(rk.WorkflowConflictError, match="recorded by workflow 'shop'"):
        replay(other, record(tmp_path))


def test_batch_check_of_a_store(tmp_path: Path) -> None:
    db = str(tmp_path / "prod.db")
    with TestEnv(db=db) as env:
        env.run(shop_v1, "lamp", workflow_id="shop-1")
        env.run(shop_v1, "desk", workflow_id="shop-2")
    reports = replay_all(db, workflows=[shop_v1])
    assert [(r.workflow_id, r.ok, r.steps) for r in reports] == [("shop-1", True, 3), ("shop-2", True, 3)]
    changed = variant("""
     def shop(ctx, item):
         yield bill(item)
     """)
    reports = replay_all(db, workflows=[changed])
    assert [r.ok for r in reports] == [False, False]
    assert all(isinstance(r.error, rk.NonDeterminismError) for r in reports)


def test_check_command_for_ci(tmp_path: Path, child_env: dict[str, str]) -> None:
    (tmp_path / "myflows.py").write_text(textwrap.dedent("""
        import replaykit as rk

        @rk.activity
        def step(i):
            return i

        @rk.workflow
        def flow(ctx):
            yield step(1)
            yield step(2)
    """))
    db = str(tmp_path / "prod.db")
    run_once = "import myflows, replaykit as rk; rk.run(myflows.flow, workflow_id='f', db='prod.db')"
    subprocess.run([PYTHON, "-c", run_once], cwd=tmp_path, env=child_env, check=True, timeout=60)
    check = [PYTHON, "-m", "replaykit", "check", db, "-m", "myflows"]
    ok = subprocess.run(check, cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ok    f (flow, 2 steps)" in ok.stdout, ok.stderr
    source = tmp_path / "myflows.py"
    source.write_text(source.read_text().replace("yield step(2)", "yield rk.sleep(1)"))
    bad = subprocess.run(check, cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "FAIL  f (flow)" in bad.stdout and "0 passed, 1 failed" in bad.stdout
    assert "myflows.py:11" in bad.stdout  # the changed yield
    table = [line.strip() for line in bad.stdout.splitlines()]  # the side by side, a line each, not "\n" escapes
    assert any(line.startswith("history recorded:") for line in table) and "\\n" not in bad.stdout, bad.stdout
    assert any(line.startswith("code now yields:") for line in table), bad.stdout
    described = subprocess.run([PYTHON, "-m", "replaykit", "describe", db, "f", "-m", "myflows"], cwd=tmp_path,
                               env=child_env, capture_output=True, text=True, timeout=60)
    note = [line.strip() for line in described.stdout.splitlines()]  # describe's note: the same lines
    assert any(line.startswith("history recorded:") for line in note) and "\\n" not in described.stdout, \
        described.stdout


def test_engine_resume_error_has_the_diff_too(tmp_path: Path) -> None:
    db = str(tmp_path / "w.db")

    @rk.workflow(name="evolving")
    def v1(ctx: rk.Context):
        yield reserve("a")
        yield rk.wait_signal("go")

    @rk.workflow(name="evolving")
    def v2(ctx: rk.Context):
        yield bill("a")
        yield rk.wait_signal("go")

    with rk.Engine(db) as engine:
        engine.start(v1, workflow_id="e")
        while len(list(engine.store.events("e"))) < 2:
            pass
    with pytest.raises(rk.NonDeterminismError) as err:
        rk.run(v2, workflow_id="e", db=db)
    assert err.value.diff and f"{__file__}:{inspect.getsourcelines(v2.fn)[1] + 2}" in str(err.value)


def test_histories_with_retries_under_a_workflow_default_policy_replay() -> None:
    attempts: list[int] = []

    @rk.activity
    def shaky() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("try again")
        return "ok"

    @rk.workflow(name="retried-by-default", retry=rk.RetryPolicy(max_attempts=3, backoff=rk.Fixed(5)))
    def flow(ctx: rk.Context):
        return (yield shaky())

    with TestEnv() as env:
        assert env.run(flow, workflow_id="r") == "ok"
        history = export_history(env.store, "r")
        assert [e.name for e in history.events if e.kind == "timer"] == ["retry"]
        assert replay(flow, history).ok  # the workflow's default policy is part of the replay
        assert [r.ok for r in replay_all(env.store, workflows=[flow])] == [True]
