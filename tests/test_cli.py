"""The command line as a script or a person uses it: filters, ``--json``, ``describe``, ``result`` and
its exit codes, on SQLite and PostgreSQL (docs/cli.md is the contract)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.store import open_store

from conftest import PYTHON


@rk.activity
def double(x: int) -> int:
    return 2 * x


@rk.activity
def refuse(x: int) -> int:
    raise ValueError(f"order {x} is not allowed")


@rk.workflow(name="cli.doubling")
def doubling(ctx: rk.Context, x: int) -> rk.Flow[int]:
    return (yield double(x))


@rk.workflow(name="cli.refusing")
def refusing(ctx: rk.Context, x: int) -> rk.Flow[int]:
    ctx.set_status({"stage": "asking"})
    return (yield refuse(x))


@rk.workflow(name="cli.waiting")
def waiting(ctx: rk.Context) -> rk.Flow[str]:
    answer: str = yield rk.wait_signal("answer")
    return answer


@rk.workflow(name="cli.parent")
def parent(ctx: rk.Context, x: int) -> rk.Flow[int]:
    return (yield rk.child_workflow(doubling, x, workflow_id="child-of-p"))


@rk.workflow(name="cli.family")
def family(ctx: rk.Context, x: int) -> rk.Flow[int]:
    return (yield rk.child_workflow(doubling, x))  # the default id: family's id + "/1"


@rk.workflow(name="cli.generations")
def generations(ctx: rk.Context, n: int) -> rk.Flow[int]:
    got: int = yield double(n)
    if n < 2:
        yield rk.continue_as_new(n + 1)
    return got


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def listed(capsys: pytest.CaptureFixture[str], db: str, *options: str) -> list[str]:
    code, out, err = cli(capsys, "list", db, "--json", *options)
    assert code == 0, err
    return [run["workflow_id"] for run in json.loads(out)]


def test_list_filters_and_orders_newest_first(any_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(any_db) as engine:
        for i in range(3):
            engine.start(doubling, i, workflow_id=f"d-{i}").result(timeout=20)
            time.sleep(0.01)  # distinct creation times
        with pytest.raises(rk.WorkflowFailed):
            engine.start(refusing, 7, workflow_id="r-7").result(timeout=20)
        engine.start(waiting, workflow_id="w-1")
        between = (_created(any_db, "d-0") + _created(any_db, "d-1")) / 2  # d-0 before it, d-1 after
        middle = datetime.fromtimestamp(between, tz=timezone.utc).isoformat()
        assert listed(capsys, any_db) == ["w-1", "r-7", "d-2", "d-1", "d-0"]
        assert listed(capsys, any_db, "--status", "failed", "--status", "running") == ["w-1", "r-7"]
        assert listed(capsys, any_db, "--workflow", "cli.doubling", "--limit", "2") == ["d-2", "d-1"]
        assert listed(capsys, any_db, "--prefix", "d-", "--since", middle) == ["d-2", "d-1"]
        assert listed(capsys, any_db, "--prefix", "d-", "--until", middle) == ["d-0"]
        assert listed(capsys, any_db, "--since", "1h") == ["w-1", "r-7", "d-2", "d-1", "d-0"]
        assert listed(capsys, any_db, "--until", "1h") == []
        code, out, _ = cli(capsys, "list", any_db, "--json", "--status", "failed")
        assert json.loads(out) == [{
            "workflow_id": "r-7", "name": "cli.refusing", "status": "failed", "created_at": _iso(any_db, "r-7"),
            "updated_at": json.loads(out)[0]["updated_at"], "custom_status": {"stage": "asking"}, "queue": None,
            "problem": None}]
        code, out, _ = cli(capsys, "list", any_db)  # the table for people: a header, a row per run
        header, *rows = out.splitlines()
        assert header.split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "CUSTOM", "STATUS", "PROBLEM"]
        assert [row.split()[:3] for row in rows][:2] == [["w-1", "cli.waiting", "running"],
                                                         ["r-7", "cli.refusing", "failed"]]


def _created(db: str, workflow_id: str) -> float:
    with open_store(db, create=False) as store:
        info = store.info(workflow_id)
        assert info is not None
        return info.created_at


def _iso(db: str, workflow_id: str) -> str:
    return datetime.fromtimestamp(_created(db, workflow_id), tz=timezone.utc).isoformat(timespec="milliseconds")


def test_a_bad_time_or_limit_is_a_usage_error(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    rk.run(doubling, 1, workflow_id="d", db=db)
    code, _, err = cli(capsys, "list", db, "--since", "yesterday")
    assert code == 2 and "'--since'" in err and "30s, 15m, 2h, 7d" in err
    code, _, err = cli(capsys, "list", db, "--limit", "0")
    assert code == 2 and "'--limit'" in err
    code, _, err = cli(capsys, "list", db, "--status", "done")
    assert code == 2 and "'completed'" in err  # the choices are named


def test_describe_says_how_a_run_ended_and_where_it_came_from(any_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(any_db) as engine:
        assert engine.start(parent, 21, workflow_id="p").result(timeout=20) == 42
        with pytest.raises(rk.WorkflowFailed):
            engine.start(refusing, 7, workflow_id="r").result(timeout=20)
    code, out, _ = cli(capsys, "describe", any_db, "child-of-p", "--json")
    child = json.loads(out)
    assert code == 0 and child["parent"] == {"workflow_id": "p", "step": 1}
    assert (child["status"], child["args"], child["kwargs"], child["result"]) == ("completed", [21], {}, 42)
    assert child["last_event"]["kind"] == "result" and child["events"] == 3 and "error" not in child
    code, out, _ = cli(capsys, "describe", any_db, "r", "--json")
    failed = json.loads(out)
    assert failed["status"] == "failed" and failed["custom_status"] == {"stage": "asking"} and "result" not in failed
    assert failed["error"]["type"] == "builtins.ValueError" and failed["error"]["message"] == "order 7 is not allowed"
    if sys.version_info >= (3, 11):  # the activity's frames ride in a note on the exception the workflow gets
        assert "in refuse" in failed["error"]["traceback"]
    code, out, _ = cli(capsys, "describe", any_db, "r")  # for people: the error and its traceback, as lines
    assert code == 0 and "status:        failed" in out and "ValueError: order 7 is not allowed" in out
    assert "Traceback (most recent call last):" in out.splitlines() and "\\n" not in out


def test_describe_lists_a_runs_children(any_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(any_db) as engine:
        assert engine.start(parent, 21, workflow_id="p").result(timeout=20) == 42
        assert engine.start(family, 2, workflow_id="f").result(timeout=20) == 4
        assert engine.start(doubling, 5, workflow_id="f/9").result(timeout=20) == 10  # not f's child
    code, out, _ = cli(capsys, "describe", any_db, "f", "--json")
    assert code == 0 and json.loads(out)["children"] == [{"workflow_id": "f/1", "status": "completed"}]
    code, out, _ = cli(capsys, "describe", any_db, "p", "--json")
    assert json.loads(out)["children"] == []  # an id of its own: only a replay with the code knows it
    code, out, _ = cli(capsys, "describe", any_db, "p", "--json", "-m", __name__)
    assert json.loads(out)["children"] == [{"workflow_id": "child-of-p", "status": "completed"}]
    code, out, _ = cli(capsys, "describe", any_db, "f")
    assert "children:      f/1 (completed)" in out


def test_describe_names_the_process_driving_a_run(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(db) as engine:
        engine.start(waiting, workflow_id="w")
        deadline = time.monotonic() + 20
        while True:
            code, out, _ = cli(capsys, "describe", db, "w", "--json")
            if json.loads(out)["driven_by"] or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        described = json.loads(out)
        assert described["driven_by"].startswith("pid ") and described["status"] == "running"
        assert described["last_event"]["kind"] == "start" and "result" not in described
        assert (described["waiting_on"], described["waiting_at"]) == (None, None)  # not replayed without -m
        code, out, _ = cli(capsys, "describe", db, "w", "--json", "-m", __name__)
        replayed = json.loads(out)
        assert [(w["step"], w["kind"], w["name"]) for w in replayed["waiting_on"]] == [(1, "signal", "answer")]
        assert replayed["waiting_at"].startswith(__file__ + ":") and replayed["note"] is None
        code, out, _ = cli(capsys, "describe", db, "w", "-m", __name__)
        assert "waiting on:    step 1 signal answer since" in out and f"waiting at:    {__file__}:" in out


def test_result_exit_codes_and_wait(any_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(doubling, 5, workflow_id="done").result(timeout=20)
        with pytest.raises(rk.WorkflowFailed):
            engine.start(refusing, 3, workflow_id="failed").result(timeout=20)
        engine.start(waiting, workflow_id="open")
        assert cli(capsys, "result", any_db, "done") == (0, "10\n", "")
        code, out, err = cli(capsys, "result", any_db, "failed")
        assert (code, out) == (3, "") and "failed: builtins.ValueError: order 3 is not allowed" in err
        code, out, err = cli(capsys, "result", any_db, "open")
        assert (code, out) == (4, "") and "'open' has not ended: it is running" in err
        later = threading.Timer(0.3, lambda: rk.send_signal(any_db, "open", "answer", "yes"))
        later.start()
        try:
            assert cli(capsys, "result", any_db, "open", "--wait", "20") == (0, '"yes"\n', "")
        finally:
            later.cancel()
        code, _, err = cli(capsys, "result", any_db, "nobody")
        assert code == 1 and "no workflow with id 'nobody'" in err


def test_values_from_the_store_are_shown_not_run(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    class Order:  # not JSON: recorded pickled
        def __init__(self, n: int) -> None:
            self.n = n

    @rk.workflow(name="cli.pickled")
    def pickled(ctx: rk.Context, order: Any) -> rk.Flow[str]:
        yield rk.sleep(0)
        return "line\x1b[2Jcleared"

    rk.run(pickled, Order(1), workflow_id="o\x07", db=db)
    code, out, _ = cli(capsys, "describe", db, "o\x07", "--json")
    args = json.loads(out)["args"]
    assert code == 0 and args["pickled"].startswith("<pickle") and "bytes>" in args["pickled"]
    code, out, _ = cli(capsys, "list", db)
    assert "o\\x07" in out and "\x07" not in out
    code, out, _ = cli(capsys, "history", db, "o\x07")
    assert "\x1b" not in out and "\\x1b[2J" in out and "<pickle" in out


def test_version_and_help_from_a_shell(child_env: dict[str, str]) -> None:
    version = subprocess.run([PYTHON, "-m", "replaykit", "--version"], capture_output=True, text=True, env=child_env,
                             timeout=30)
    assert (version.returncode, version.stdout) == (0, f"replaykit {rk.__version__}\n")
    usage = subprocess.run([PYTHON, "-m", "replaykit", "frobnicate"], capture_output=True, text=True, env=child_env,
                           timeout=30)
    assert usage.returncode == 2 and "No such command 'frobnicate'" in usage.stderr


@rk.workflow(name="cli.counting")
def counting(ctx: rk.Context, upto: int) -> rk.Flow[int]:
    done = 0

    @ctx.query("progress")
    def progress(scale: int = 1) -> dict[str, int]:
        return {"done": done * scale, "total": upto}

    for i in range(upto):
        done += (yield double(i)) // (2 * i) if i else 1
    answer: int = yield rk.wait_signal("finish")
    return done + answer


def test_start_for_workers_then_query_signal_and_result(any_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(any_db):
        pass  # the store exists
    code, out, err = cli(capsys, "start", any_db, "cli.counting", "3", "--id", "c-1", "-m", __name__)
    assert (code, out) == (0, "started c-1 (cli.counting) in queue default\n"), err
    assert cli(capsys, "start", any_db, "cli.counting", "3", "--id", "c-1", "-m", __name__)[0] == 0  # same run
    code, _, err = cli(capsys, "start", any_db, "cli.counting", "4", "--id", "c-1", "-m", __name__)
    assert code == 1 and "c-1" in err  # another run under a taken id
    code, _, err = cli(capsys, "start", any_db, "cli.nothing", "--id", "c-2")
    assert code == 1 and "no workflow named 'cli.nothing'" in err
    code, _, err = cli(capsys, "start", any_db, "cli.counting", "three", "--id", "c-3", "-m", __name__)
    assert code == 2 and "'three' is not JSON" in err
    with rk.Worker(any_db, workflows=[counting], heartbeat=0.1, poll_interval=0.02):
        deadline = time.monotonic() + 20
        while True:
            code, out, _ = cli(capsys, "query", any_db, "c-1", "progress", "10", "-m", __name__)
            if code == 0 and json.loads(out)["done"] == 30 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (code, json.loads(out)) == (0, {"done": 30, "total": 3})
        assert cli(capsys, "signal", any_db, "c-1", "finish", "4")[0] == 0
        assert cli(capsys, "result", any_db, "c-1", "--wait", "20") == (0, "7\n", "")
    code, _, err = cli(capsys, "query", any_db, "c-1", "nope", "-m", __name__)
    assert code == 1 and "has no query 'nope'" in err and "progress" in err


@rk.workflow(name="cli.not_a_number")
def not_a_number(ctx: rk.Context) -> rk.Flow[float]:
    ctx.set_status({"progress": float("nan"), "eta": float("inf")})
    yield rk.sleep(0)
    return float("-inf")


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_json_even_for_nan_and_paths_that_cannot_be_written_are_one_line(
        db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rk.run(not_a_number, workflow_id="nan", db=db)
    for argv in (["list", db, "--json"], ["describe", db, "nan", "--json"], ["history", db, "nan", "--json"],
                 ["result", db, "nan"]):
        code, out, err = cli(capsys, *argv)
        assert code == 0, err
        _strict_json(out)  # NaN and Infinity are not JSON: shown as strings
    assert json.loads(cli(capsys, "describe", db, "nan", "--json")[1])["custom_status"] == {
        "progress": "NaN", "eta": "Infinity"}
    assert cli(capsys, "show", db, "nan", "--html", str(tmp_path / "nan.html"))[0] == 0
    page = (tmp_path / "nan.html").read_text()
    _strict_json(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    for argv in (["show", db, "nan", "--html", str(tmp_path / "no" / "x.html")],
                 ["export", db, "nan", "-o", str(tmp_path / "no" / "x.json")]):
        code, out, err = cli(capsys, *argv)
        assert code == 1 and err.startswith("replaykit: ") and "Traceback" not in err and len(err.splitlines()) == 1


def test_history_all_shows_every_generation_oldest_first(any_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rk.Engine(any_db) as engine:
        assert engine.start(generations, 0, workflow_id="gens").result(timeout=10) == 4
    code, out, err = cli(capsys, "history", any_db, "gens", "--all", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert [(g["generation"], g["status"]) for g in found] == [(1, "continued"), (2, "continued"),
                                                                      (3, "completed")]
    assert [[(e["kind"], e["value"]) for e in g["events"]][1:] for g in found] == [
        [("activity", 0), ("result", {"args": [1], "kwargs": {}})],
        [("activity", 2), ("result", {"args": [2], "kwargs": {}})],
        [("activity", 4), ("result", 4)]]
    code, out, err = cli(capsys, "history", any_db, "gens")  # the newest alone, as before
    assert code == 0 and len(out.splitlines()) == 4  # the header, its start, its activity, its result
    assert "continued" in out.splitlines()[1] and out.splitlines()[-1].split()[-1] == "4"
    code, out, err = cli(capsys, "history", any_db, "gens", "--all")
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("generation")] == [
        "generation 1", "generation 2", "generation 3"]
    assert "generation 1: continued, from " in out

