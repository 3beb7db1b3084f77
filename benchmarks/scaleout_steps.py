"""The takeover benchmark's step bodies, shared by both sides (plain Python: the DBOS side runs in a
virtualenv of its own, without replaykit). Each stamps a ledger line ``kind pid time``."""

from __future__ import annotations

import os
import time


def stamp(ledger: str, kind: str) -> None:
    with open(ledger, "a") as f:  # one short append per line: lines of processes do not interleave
        f.write(f"{kind} {os.getpid()} {time.time():.6f}\n")


def block(ledger: str) -> int:
    """The first time (no flag file yet): stamp, then block until killed. Later: stamp and return."""
    stamp(ledger, "block")
    flag = ledger + ".taken"
    if not os.path.exists(flag):
        open(flag, "w").close()
        time.sleep(3600)
    return 1


def mark(ledger: str) -> int:
    stamp(ledger, "mark")
    return 1
