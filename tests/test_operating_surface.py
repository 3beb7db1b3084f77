"""The operating surface (CLI, web UI, `replaykit worker`) as an operator on call uses it: a web page of
another site, a password in a URL, a damaged store, stored text with control characters, a worker
stopped with a long activity. Found by an operator's review; each test failed before its fix."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main

from conftest import PYTHON
from helpers import SLOW_MODULE
from ui_server import UiServer


@rk.activity
def rev_echo(value: str) -> str:
    return value


@rk.workflow(name="review_ops.waits")
def rev_waits(ctx: rk.Context) -> rk.Flow[str]:
    answer: str = yield rk.wait_signal("go")
    return answer


@rk.workflow(name="review_ops.echoes")
def rev_echoes(ctx: rk.Context, value: str) -> rk.Flow[str]:
    ctx.set_status(value)
    echoed: str = yield rev_echo(value)
    return echoed


@rk.workflow(name="review_ops.fails")
def rev_fails(ctx: rk.Context) -> rk.Flow[str]:
    yield rev_echo("x")
    raise ValueError("boom")


def _waiting_run(db: str, workflow_id: str = "victim") -> None:
    """A run waiting on a signal, that no process holds (so a terminate ends it at once)."""
    with rk.Engine(db, poll_interval=0.02) as engine:
        engine.start(rev_waits, workflow_id=workflow_id)
        deadline = time.monotonic() + 10
        while len(list(engine.store.events(workflow_id))) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)


def _status(db: str, workflow_id: str) -> str:
    with rk.SqliteStore(db) as store:
        info = store.info(workflow_id)
        assert info is not None
        return info.status.value


# 1. The UI's writes can be made by any web page the operator's browser opens (CSRF).

def test_ui_refuses_a_cross_site_write_made_by_a_browser(db: str, child_env: dict[str, str]) -> None:
    """What Chromium sends for `<form method=POST enctype=text/plain action=http://127.0.0.1:8000/api/runs/victim/
    terminate>` submitted by a page of another site: the default `replaykit ui` (localhost, no token) must not act
    on it. (Reproduced in headless Chromium too: a page on http://localhost:8799 terminated and cancelled runs.)"""
    _waiting_run(db)
    server = UiServer(db, child_env)
    try:
        status, _ = server.request("POST", "/api/runs/victim/terminate", data=b"", headers={  # a form with no fields
            "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
            "Content-Type": "text/plain"})
        assert status in (401, 403), status
        assert _status(db, "victim") == "running"
        # A body-less fetch(url, {method: "POST", mode: "no-cors"}) from another origin
        status, _ = server.request("POST", "/api/runs/victim/pause", headers={
            "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
        assert status in (401, 403), status
        assert _status(db, "victim") == "running"
    finally:
        server.stop()


# 2. The UI shows the PostgreSQL password to anyone who can read its pages.

def test_ui_run_list_does_not_show_the_database_password(pg_url: str, child_env: dict[str, str]) -> None:
    from replaykit.store import open_store

    open_store(pg_url).close()  # a store (empty)
    url = pg_url + "&password=hunter2-very-secret"  # the test server trusts its socket: any password works
    server = UiServer(url, child_env)
    try:
        status, page = server.request("GET", "/")
        assert status == 200
        assert "hunter2-very-secret" not in page, re.search(r"<title>.*?</title>", page)
    finally:
        server.stop()


# 3. A damaged store answers 503 (unavailable) where docs/ui.md says 500 with what is damaged.

def test_ui_answers_500_for_a_damaged_store(db: str, child_env: dict[str, str]) -> None:
    _waiting_run(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET status = 'weird' WHERE workflow_id = 'victim'")
    conn.commit()
    conn.close()
    server = UiServer(db, child_env)
    try:
        status, body = server.request("GET", "/api/runs")
        assert "damaged" in json.loads(body)["detail"]
        assert status == 500, (status, body)
    finally:
        server.stop()


# 4. `replaykit check` calls a terminated run a divergence (exit 1).

def test_check_passes_a_run_that_was_terminated(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    _waiting_run(db)
    rk.terminate(db, "victim", "not needed")
    assert _status(db, "victim") == "cancelled"
    code = main(["check", db])
    out = capsys.readouterr().out
    assert code == 0, out


# 5. `replaykit import` of an exported terminated run records it `failed`, not `cancelled`.

def test_import_of_a_terminated_run_keeps_it_cancelled(tmp_path: Path, db: str) -> None:
    _waiting_run(db)
    rk.terminate(db, "victim", "not needed")
    exported = tmp_path / "victim.json"
    assert main(["export", db, "victim", "-o", str(exported)]) == 0
    other = str(tmp_path / "other.db")
    rk.SqliteStore(other).close()
    assert main(["import", other, str(exported)]) == 0
    assert _status(other, "victim") == "cancelled"


# 6. Stored text printed with control characters: `result`, `--json`, `restart`/`fork`.

NASTY = "A\x9b2J\x9b1;1HB\u202eC"  # C1 CSI (clear screen, move cursor), a bidi override


def _unprintable(text: str) -> list[str]:
    return sorted({c for c in text if not (c.isprintable() or c in "\n\t")})


def test_result_and_json_output_escape_control_characters(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    rk.run(rev_echoes, NASTY, workflow_id="nasty", db=db)
    capsys.readouterr()
    assert main(["result", db, "nasty"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == NASTY  # still the value
    assert _unprintable(printed) == [], printed
    assert main(["list", db, "--json"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed)[0]["custom_status"] == NASTY
    assert _unprintable(printed) == [], printed


def test_restart_and_fork_print_the_run_id_escaped(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    workflow_id = "order\x1b]0;owned\x07\x1b[2J"
    with pytest.raises(rk.WorkflowFailed):
        rk.run(rev_fails, workflow_id=workflow_id, db=db)
    capsys.readouterr()
    assert main(["restart", db, workflow_id]) == 0
    assert main(["fork", db, workflow_id, "copy", "--step", "1"]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed, printed


# 7. `replaykit worker` stopped by SIGTERM does not exit until the activities it abandoned return.

def test_worker_exits_soon_after_sigterm_despite_a_long_activity(tmp_path: Path, child_env: dict[str, str]) -> None:
    (tmp_path / "slowmod.py").write_text(SLOW_MODULE)
    db = str(tmp_path / "store.db")
    env = dict(child_env, PYTHONPATH=f"{tmp_path}:{child_env['PYTHONPATH']}")
    subprocess.run([PYTHON, "-c", "import replaykit as rk, slowmod\n"
                    f"c = rk.Client({db!r}); c.start(slowmod.slow, 90, workflow_id='slow-1'); c.close()"],
                   env=env, cwd=tmp_path, check=True)
    proc = subprocess.Popen([PYTHON, "-m", "replaykit", "worker", db, "-m", "slowmod", "--grace", "1"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with rk.SqliteStore(db) as store:
                if any("slow-1" in w.runs for w in store.workers()):
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the worker did not claim the run")
        time.sleep(0.5)  # its activity is running
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            proc.wait(timeout=20)  # --grace 1, then hand back and leave
        except subprocess.TimeoutExpired:
            pytest.fail("replaykit worker --grace 1 was still running 20 s after SIGTERM (its abandoned activity "
                        "sleeps 90 s)")
        assert proc.returncode == 0
        assert time.monotonic() - sent < 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# 8. The UI's run list silently stops at 1,000 runs and says that is how many the store holds.

def test_ui_run_list_does_not_claim_a_false_count(db: str, child_env: dict[str, str]) -> None:
    client = rk.Client(db)
    try:
        for i in range(1001):
            client.start(rev_echoes, "x", workflow_id=f"many-{i:04d}")
    finally:
        client.close()
    server = UiServer(db, child_env)
    try:
        status, page = server.request("GET", "/")
        assert status == 200
        heading = re.search(r"<h1>(.*?)</h1>", page)
        assert heading is not None
        assert not heading.group(1).startswith("1000 runs in"), heading.group(1)
    finally:
        server.stop()


def test_ui_without_a_token_answers_only_requests_addressed_to_this_machine(db: str, child_env: dict[str, str]) -> None:
    """DNS rebinding: a page of evil.example rebinds its name to 127.0.0.1; its requests are then
    same-origin to the browser (Origin and Host both evil.example), so only the Host tells. Without a
    token, the UI answered them (reads and writes)."""
    _waiting_run(db)
    server = UiServer(db, child_env)
    try:
        status, _ = server.request("GET", "/api/runs", headers={"Host": "evil.example:8765"})
        assert status == 403, status
        status, _ = server.request("POST", "/api/runs/victim/terminate", headers={
            "Host": "evil.example:8765", "Origin": "http://evil.example:8765", "Sec-Fetch-Site": "same-origin"})
        assert status == 403, status
        assert _status(db, "victim") == "running"
        status, _ = server.request("GET", "/api/runs", headers={"Host": "localhost"})
        assert status == 200, status
    finally:
        server.stop()


def test_the_cli_names_a_postgres_store_without_its_password(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`replaykit describe URL ID` of a missing run (and `migrate URL`) printed the URL as given, password
    and all, where the store's own messages redact it."""
    from replaykit.store import open_store

    open_store(pg_url).close()  # a store (empty)
    url = pg_url + "&password=hunter2-very-secret"  # the test server trusts its socket: any password works
    assert main(["migrate", url]) == 0
    assert main(["describe", url, "nobody"]) == 1
    printed = capsys.readouterr()
    assert "hunter2" not in printed.out + printed.err, printed
    assert "nobody" in printed.err
