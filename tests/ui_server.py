"""``replaykit ui DB --port 0`` in a process of its own, for the tests that talk to it over HTTP."""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request

from conftest import PYTHON


class UiServer:
    """The system chooses the port and the server prints it, so no other process can take the port
    between choosing and listening (a port found free, closed and handed over can be)."""

    def __init__(self, db: str, env: dict[str, str], *extra: str) -> None:
        self.proc = subprocess.Popen([PYTHON, "-m", "replaykit", "ui", db, "--port", "0", *extra],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        said = ""
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/", said)):
            line = self.proc.stderr.readline()
            assert line, (said, self.proc.communicate())
            said += line
        self.port = int(found.group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        """``(status, body)`` of one request, headers as given (``Host`` too)."""
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
