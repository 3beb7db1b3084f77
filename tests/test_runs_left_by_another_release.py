"""A run a worker could not drive keeps the worker's code version beside its problem, and workers of
that version leave it alone; one of another version takes it up. The version covered only the
application's code, so after a replaykit upgrade that fixed what stopped the old workers (the same
application code on both sides), the new workers left the run alone for good (found by an upgrade
review). The version now covers replaykit's own code too."""

from __future__ import annotations

import sqlite3

import replaykit as rk
from replaykit.code_version import app_digest, code_version

from helpers import adder


def _left_with_a_problem(db: str, workflow_id: str, version: str) -> None:
    sql = "UPDATE {}work SET problem = %s, problem_version = %s WHERE workflow_id = %s"
    problem = "UnicodeEncodeError: 'utf-8' codec can't encode (a replaykit bug since fixed)"
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            conn.execute(sql.format("replaykit_"), (problem, version, workflow_id))
    else:
        with sqlite3.connect(db) as conn:
            conn.execute(sql.format("").replace("%s", "?"), (problem, version, workflow_id))


def test_a_run_a_worker_of_another_release_could_not_drive_is_driven(any_db: str) -> None:
    before_upgrade = app_digest([adder]).hex()  # what a worker of the same application code said before
    assert code_version([adder]) != before_upgrade
    with rk.Client(any_db) as client:
        handle = client.start(adder, 4, workflow_id="left")
        _left_with_a_problem(any_db, "left", before_upgrade)
        with rk.Worker(any_db, workflows=[adder]):
            assert handle.result(timeout=30) == 6
