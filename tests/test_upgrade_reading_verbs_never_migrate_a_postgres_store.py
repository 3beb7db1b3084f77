"""The CLI's reading verbs never migrate a store ("Reading a store never writes it"): on SQLite a
schema-3 store is read as it stands. On PostgreSQL, `replaykit list` of this version migrates a
schema-4 store to 6 (control.opened(reading=True) -> store/open.py open_to_read -> open_store), and
from then on every process of 0.1 (which reads up to 5) refuses the database: an operator's look at
the runs during a rolling deploy stops the rest of the fleet."""

from __future__ import annotations

import pytest

import upgrade_versions as v


def _schema(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT value FROM replaykit_meta WHERE key = 'schema_version'").fetchall()[0][0]


@pytest.mark.parametrize("verb", [["list"], ["describe", "done"], ["history", "done"], ["result", "done"], ["workers"]])
def test_a_reading_verb_leaves_a_schema_4_postgres_store_at_schema_4(pg_url: str, verb: list[str]) -> None:
    v.run(v.PREVIOUS, v.MAKE_STORE, pg_url)
    assert _schema(pg_url) == "4"

    read = v.cli_here(verb[0], pg_url, *verb[1:])
    assert read.returncode == 0, read.stderr
    assert _schema(pg_url) == "4"  # before the fix: 6

    old = v.cli(v.OLD, "list", pg_url)
    assert old.returncode == 0, old.stderr
