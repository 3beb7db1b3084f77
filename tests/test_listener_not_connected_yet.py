"""A PostgreSQL store's first look for news (``Store.changed``: it starts the listening connection) while
the server accepts no connection (restarting) raised ``StoreError``; a worker's serving thread died of
it (its idle wait is not guarded), and an engine's driver would stop. Unreachable, the store now says
"changed" at every look, as it does once the listening connection is lost, and listens once it can.
Found in CI: tests/test_outages.py's server restart hit a worker's first look. Real PostgreSQL server."""

from __future__ import annotations

import psycopg

from replaykit.store import open_store

from helpers import wait_until
from pgserver import PgServer


def test_a_first_look_for_news_while_the_server_refuses_connections_says_changed(pg_server: PgServer,
                                                                              pg_url: str) -> None:
    name = pg_url.split("///", 1)[1].split("?", 1)[0]
    with open_store(pg_url) as store, psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # superusers too: as while restarting
        try:
            assert store.changed() is True
            assert store.changed() is True  # still unreachable: still "changed", not an error
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        wait_until(lambda: store.changed() is False, "the store listens, and nothing changed since")
