"""The UI on localhost answers only requests addressed to this machine, token or not; ``replaykit.cli.main``
returns to its caller past a worker's abandoned activity; ``json_text`` reads back as its value. Found by
a review of the operating-surface fixes; the first two failed before their fix."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

from hypothesis import assume, example, given
from hypothesis import strategies as st

import replaykit as rk
from replaykit.cli.output import json_text

from conftest import PYTHON
from helpers import SLOW_MODULE

# 1. A token turns the DNS-rebinding check off, also for the default listener on 127.0.0.1: any web page
#    that points its own name at 127.0.0.1 reads every run (and the pages) of a localhost UI that has a
#    token, where the same UI without a token answers it 403.

def test_a_token_ui_on_localhost_still_refuses_a_rebound_host(db: str, child_env: dict[str, str]) -> None:
    rk.SqliteStore(db).close()
    proc = subprocess.Popen([PYTHON, "-m", "replaykit", "ui", db, "--port", "0", "--token", "s3cret"],
                            env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        said = ""
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/", said)):
            line = proc.stderr.readline()
            assert line, said
            said += line
        port = found.group(1)
        # What Chromium sends after rebinding (checked with --host-resolver-rules="MAP rebind.example 127.0.0.1":
        # a fetch from http://rebind.example:PORT/ read /api/runs with 200).
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/runs", headers={
            "Host": f"rebind.example:{port}", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status == 403, f"a page of rebind.example read the runs of a 127.0.0.1 UI with a token ({status})"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# 2. `replaykit.cli.main(argv)` "runs a command line and returns its exit code" (docs/cli.md): for `worker`
#    stopped with an activity still running, _exit_past_abandoned_activities calls os._exit(0) and ends the
#    caller's whole process; main never returns.

def test_main_worker_returns_to_its_caller_past_an_abandoned_activity(tmp_path: Path,
                                                                      child_env: dict[str, str]) -> None:
    (tmp_path / "slowmod.py").write_text(SLOW_MODULE)
    (tmp_path / "caller.py").write_text(textwrap.dedent("""
        import os, signal, sys, threading
        import replaykit as rk, slowmod
        from replaykit.cli import main

        db = sys.argv[1]
        client = rk.Client(db)
        client.start(slowmod.slow, 60, workflow_id="slow-1")
        client.close()
        threading.Timer(3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()  # its activity is running
        code = main(["worker", db, "-m", "slowmod", "--grace", "1"])
        print("main returned", code, flush=True)
        os._exit(0)  # (do not wait for the abandoned activity here either)
    """))
    env = dict(child_env, PYTHONPATH=f"{tmp_path}:{child_env['PYTHONPATH']}")
    started = time.monotonic()
    out = subprocess.run([PYTHON, "caller.py", str(tmp_path / "store.db")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=50)
    assert time.monotonic() - started < 50
    assert "main returned 0" in out.stdout, (out.returncode, out.stdout, out.stderr)


# 3. json_text: "every character that is not printable ... written as a \\u escape, which JSON reads back".

_TEXT = st.text(st.sampled_from(["\ud83d", "\ude00", "\ud800", "\udfff", "\x9b", "\u202e", "\U000e0001", "a",
                                 "\\", "\n", "\x7f"]), max_size=8) | st.text(max_size=12)
_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | _TEXT,
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                       max_leaves=20)


@given(_VALUES, st.sampled_from([None, 2]))
@example({"\x9b\u202e": "\U000e0001\x7f"}, None)
def test_json_text_reads_back_as_the_same_value(value: object, indent: int | None) -> None:
    # Whatever JSON itself reads back: a lone high surrogate then a lone low one read back as one
    # character through any JSON escapes, json.dumps's own included.
    assume(json.loads(json.dumps(value)) == value)
    text = json_text(value, indent=indent)
    assert all(c.isprintable() or c == "\n" for c in text), ascii(text)
    assert json.loads(text) == value, ascii(text)
