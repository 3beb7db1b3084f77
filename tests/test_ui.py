"""``replaykit ui``: a real server process, read and written over HTTP as a script does, checked against
its own OpenAPI document (schemathesis), and looked at in headless Chromium as a person does."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk

from conftest import PYTHON
from ui_server import UiServer

pytest.importorskip("fastapi", reason='replaykit ui needs the ui extra: pip install -e ".[test]"')


@rk.activity
def charge(cents: int) -> str:
    raise RuntimeError(f"card declined for {cents} cents")


@rk.workflow(name="ui.charging")
def charging(ctx: rk.Context, cents: int) -> rk.Flow[str]:
    return (yield charge(cents))


@rk.workflow(name="ui.waiting")
def waiting(ctx: rk.Context) -> rk.Flow[str]:
    answer: str = yield rk.wait_signal("answer")
    return answer


class Server(UiServer):
    """The UI in a process of its own, called with JSON bodies (and a token, if given)."""

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        status, text = self.request(method, path, None if body is None else json.dumps(body).encode(), headers)
        return status, (json.loads(text) if text and text[0] in "[{" else text)


@pytest.fixture
def runs(db: str) -> Iterator[rk.Engine]:
    with rk.Engine(db, poll_interval=0.02) as engine:
        with pytest.raises(rk.WorkflowFailed):
            engine.start(charging, 250, workflow_id="order/1").result(timeout=20)
        engine.start(waiting, workflow_id="asks")
        yield engine


def test_the_api_reads_and_writes_runs(db: str, runs: rk.Engine, child_env: dict[str, str]) -> None:
    server = Server(db, child_env, "--token", "s3cret")
    try:
        status, listed = server.call("GET", "/api/runs")
        assert status == 200 and [r["workflow_id"] for r in listed] == ["asks", "order/1"]
        assert [r["workflow_id"] for r in server.call("GET", "/api/runs?status=failed")[1]] == ["order/1"]
        status, run = server.call("GET", "/api/runs/order/1")  # an id with a slash
        assert status == 200 and run["status"] == "failed" and run["args"] == [250]
        assert run["error"]["message"] == "card declined for 250 cents"
        status, events = server.call("GET", "/api/runs/order/1/history")
        assert status == 200 and [e["kind"] for e in events] == ["start", "activity", "result"]
        assert server.call("GET", "/api/runs/order/1/result")[1]["status"] == "failed"
        assert server.call("GET", "/api/runs/asks/result")[0] == 409
        assert server.call("GET", "/api/runs/nobody")[0] == 404
        assert server.call("POST", "/api/runs/asks/signal", {"name": "answer", "payload": "yes"})[0] == 401
        assert server.call("POST", "/api/runs/asks/signal", {"name": "answer", "payload": "yes"}, "wrong")[0] == 401
        assert server.call("POST", "/api/runs/asks/signal", {"name": "answer", "payload": "yes"}, "s3cret")[0] == 204
        assert runs.handle("asks").result(timeout=20) == "yes"
        assert server.call("GET", "/api/runs/asks/result") == (200, {"status": "completed", "result": "yes",
                                                                      "error": None})
        assert server.call("POST", "/api/runs/asks/pause", None, "s3cret")[0] == 409  # it ended
        runs.start(waiting, workflow_id="later")
        assert server.call("POST", "/api/runs/later/pause", None, "s3cret")[0] == 204
        assert server.call("GET", "/api/runs/later")[1]["status"] == "paused"
        assert server.call("POST", "/api/runs/later/resume", None, "s3cret")[0] == 204
        assert server.call("POST", "/api/runs/later/cancel", {"reason": "enough"}, "s3cret")[0] == 204
        with pytest.raises(rk.WorkflowCancelled, match="enough"):
            runs.handle("later").result(timeout=20)
    finally:
        server.stop()


def test_the_api_starts_queries_and_terminates_runs_with_the_code_it_loaded(db: str, runs: rk.Engine,
                                                                          child_env: dict[str, str]) -> None:
    from ui_app import picking

    server = Server(db, child_env, "--token", "s3cret", "-m", "ui_app")
    try:
        body = {"workflow": "ui.picking", "workflow_id": "pick-1", "args": [["a", "b"]]}
        assert server.call("POST", "/api/runs", body)[0] == 401
        status, run = server.call("POST", "/api/runs", body, "s3cret")
        assert status == 201 and (run["workflow_id"], run["name"], run["queue"]) == ("pick-1", "ui.picking",
                                                                                       "default")
        assert server.call("POST", "/api/runs", body, "s3cret")[0] == 201  # the same run again
        assert server.call("POST", "/api/runs", {**body, "args": [["c"]]}, "s3cret")[0] == 409
        status, problem = server.call("POST", "/api/runs", {**body, "workflow": "ui.nothing"}, "s3cret")
        assert status == 404 and "no workflow named 'ui.nothing' is registered" in problem["detail"]
        status, problem = server.call("POST", "/api/runs", {**body, "args": [["a"], 2]}, "s3cret")
        assert status == 400 and "cannot be started with these arguments" in problem["detail"]
        assert server.call("POST", "/api/runs", {**body, "priority": 2**70}, "s3cret")[0] == 422
        assert server.call("POST", "/api/runs", {**body, "workflow_id": "pick-2"}, "s3cret")[0] == 201
        with rk.Worker(db, workflows=[picking], heartbeat=0.1, poll_interval=0.02):
            deadline = time.monotonic() + 20
            while len(list(runs.store.events("pick-1"))) < 2 or len(list(runs.store.events("pick-2"))) < 2:
                assert time.monotonic() < deadline, "the worker did not take the runs"
                time.sleep(0.02)
            assert server.call("POST", "/api/runs/pick-1/query", {"name": "picked", "args": ["got "]}) == (
                200, '"got b"')  # a JSON string; a read: no token
            status, problem = server.call("POST", "/api/runs/pick-1/query", {"name": "nope"})
            assert status == 404 and "has no query 'nope'; it answers: alike, odd, picked, refuses" in problem["detail"]
            assert server.call("POST", "/api/runs/nobody/query", {"name": "picked"})[0] == 404
            status, problem = server.call("POST", "/api/runs/pick-1/query", {"name": "picked", "args": [1, 2]})
            assert status == 400 and problem["detail"].startswith("the query handler 'picked' raised TypeError")
            assert server.call("POST", "/api/runs/pick-1/query", {"name": "odd"}) == (
                200, {"[1, 2]": [3], "[3, 4]": "NaN"})
            assert server.call("POST", "/api/runs/pick-1/query", {"name": "alike"}) == (
                200, [[1, "number"], ["1", "text"]])  # pairs: neither key is lost
            status, problem = server.call("POST", "/api/runs/pick-1/query", {"name": "refuses"})
            assert status == 400 and "raised IllegalTransitionError: not in this state" in problem["detail"]
            assert server.call("POST", "/api/runs/pick-2/terminate", {"reason": "enough"})[0] == 401
            assert server.call("POST", "/api/runs/pick-2/terminate", {"reason": "enough"}, "s3cret")[0] == 204
            with pytest.raises(rk.WorkflowTerminated, match="enough"):
                runs.handle("pick-2").result(timeout=20)
            assert server.call("POST", "/api/runs/pick-2/terminate", None, "s3cret")[0] == 409  # no body needed
            server.call("POST", "/api/runs/pick-1/signal", {"name": "done"}, "s3cret")
            assert runs.handle("pick-1").result(timeout=20) == "b"
        status, text = server.call("GET", "/metrics")
        assert status == 200
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line and not line.startswith("#")}
        assert samples['replaykit_store_runs{status="failed",workflow="ui.charging"}'] == 1
        assert samples['replaykit_store_runs{status="running",workflow="ui.waiting"}'] == 1
        assert samples['replaykit_store_runs{status="completed",workflow="ui.picking"}'] == 1
        assert samples['replaykit_store_runs{status="cancelled",workflow="ui.picking"}'] == 1
        assert samples['replaykit_store_run_duration_seconds_count{status="completed",workflow="ui.picking"}'] == 1
        assert samples['replaykit_store_run_duration_seconds_bucket{le="+Inf",status="failed",'
                       'workflow="ui.charging"}'] == 1
        assert samples['replaykit_store_workers{stopping="false"}'] == 0  # the worker unregistered
    finally:
        server.stop()


def test_the_api_keeps_to_its_openapi_document(db: str, runs: rk.Engine, child_env: dict[str, str]) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    server = Server(db, child_env)  # no token: on localhost, writes need none
    try:
        schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
        failures, called = [], []
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                called.append(case.operation.label)
                case.call_and_validate(base_url=server.base)

            try:
                check()
            except Exception as exc:  # collected: every operation is tried, then all failures shown
                failures.append(f"{operation.label}: {exc}")
        assert not failures, "\n\n".join(failures)
        assert len(set(called)) == 11 and len(called) > 11 * 10, called  # every operation, many cases each
        assert server.proc.poll() is None  # nothing brought it down
    finally:
        server.stop()


def test_a_person_finds_the_failed_run_and_its_traceback(db: str, runs: rk.Engine, child_env: dict[str, str],
                                                         tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(db, child_env, "--refresh", "3600")  # no reload while the test holds the page's elements
    web = browser
    try:
        web.get(server.base + "/?status=failed")
        rows = web.find_elements(By.CSS_SELECTOR, "tr[data-status]")
        assert [r.get_attribute("data-status") for r in rows] == ["failed"]
        rows[0].find_element(By.TAG_NAME, "a").click()
        WebDriverWait(web, 20).until(lambda b: b.execute_script("return document.body.dataset.ready") == "1")
        assert web.title == "replaykit: order/1"
        web.find_element(By.CSS_SELECTOR, ".lane.failed").click()
        assert "RuntimeError: card declined for 250 cents" in web.find_element(By.ID, "d-traceback").text
        web.save_screenshot(str(tmp_path / "ui-run.png"))
    finally:
        server.stop()


def test_listening_beyond_localhost_needs_a_token(db: str, runs: rk.Engine, child_env: dict[str, str]) -> None:
    out = subprocess.run([PYTHON, "-m", "replaykit", "ui", db, "--host", "0.0.0.0", "--port", "1"],
                         env={**child_env, "REPLAYKIT_UI_TOKEN": ""}, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "give a --token" in out.stderr
    out = subprocess.run([PYTHON, "-m", "replaykit", "ui", str(Path(db).with_name("missing.db"))],
                         env=child_env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "missing.db" in out.stderr


def test_a_port_in_use_is_refused_with_what_to_do(db: str, child_env: dict[str, str]) -> None:
    with rk.Engine(db):
        pass
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = subprocess.run([PYTHON, "-m", "replaykit", "ui", db, "--port", str(port)],
                             env=child_env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "--port 0" not in out.stderr and "0 lets the system choose" in out.stderr


def test_what_the_store_holds_is_text_on_the_run_list(db: str, child_env: dict[str, str], browser: Any) -> None:
    evil = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    with rk.Engine(db) as engine:
        with pytest.raises(rk.WorkflowFailed):
            engine.start(charging, 1, workflow_id="id" + evil).result(timeout=20)
    server = Server(db, child_env, "--refresh", "3600")  # no reload while the test reads the page
    try:
        browser.get(server.base + "/")
        assert browser.title.startswith("replaykit: ") and "pwned" not in browser.title
        assert browser.execute_script("return document.querySelectorAll('img').length") == 0
        assert browser.execute_script("return document.scripts.length") == 0
        assert "id" + evil in browser.execute_script("return document.querySelector('td.id').textContent")
        assert server.call("GET", "/api/runs")[1][0]["workflow_id"] == "id" + evil
    finally:
        server.stop()
