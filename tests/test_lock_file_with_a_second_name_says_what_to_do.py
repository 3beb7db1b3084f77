"""A lock file with more than one name (a hard link: `cp -al` of the lock directory) is refused, since
closing a second descriptor of it would drop this process's locks; the error says to remove the
other name or the directory (replaykit makes it again), not to give this user access (found by a
review)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import replaykit as rk

from helpers import adder


def test_a_lock_file_with_a_second_name_gets_advice_about_the_link(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    assert rk.run(adder, 3, workflow_id="first", db=db) == 3
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    os.link(f"{db}-locks.d/0", snapshot / "0")  # as `cp -al` leaves it

    with pytest.raises(rk.StoreError) as refused:
        rk.run(adder, 3, workflow_id="second", db=db)
    text = str(refused.value)
    assert "hard link" in text
    assert "Give this user access" not in text, text
