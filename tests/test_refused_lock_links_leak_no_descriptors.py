"""A lock file reached under a second path (a hard link in another store's lock directory) is refused
before it is opened. Before, it was opened, found out, and left open once per refusal: every
`describe` of the other store (the web UI's page, polled every few seconds) cost the process one more
descriptor, until it ran out of them (found by a review)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import replaykit as rk
from replaykit.cli import main
from replaykit.store.locks import SHARDS, _offset

from helpers import adder, waits_for_approval


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_describing_a_store_whose_lock_file_is_another_stores_costs_no_descriptor_each_time(
        tmp_path: Path) -> None:
    a, b = str(tmp_path / "a" / "A.db"), str(tmp_path / "b" / "B.db")
    os.makedirs(os.path.dirname(a))
    os.makedirs(os.path.dirname(b))
    y = "y"
    rk.run(adder, 2, workflow_id=y, db=b)
    shutil.rmtree(b + "-locks.d")
    with rk.Engine(a) as engine:
        engine.start(waits_for_approval, workflow_id="x")  # this process holds A's lock files open
        shard = f"{_offset(y) % SHARDS:x}"
        os.mkdir(b + "-locks.d", 0o755)
        os.link(os.path.join(a + "-locks.d", shard), os.path.join(b + "-locks.d", shard))  # planted
        main(["describe", b, y])  # the first: whatever it answers, A's locks stay
        before = _open_descriptors()
        for _ in range(50):
            main(["describe", b, y])
        grown = _open_descriptors() - before
    assert grown < 5, f"50 describes of {b} left {grown} more descriptors open in this process"
