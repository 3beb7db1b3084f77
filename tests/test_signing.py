"""Nothing read from a store is unpickled unless the store's key signed it (docs/security.md).

A hostile store: a crafted pickle (loading it creates a marker file) replaces a payload in every
place one lives, and every reader is run on it: a rerun, a result, a query, the CLI's history and
check. None may run it. Then the keys: the SQLite key file, secrets and their rotation, a
PostgreSQL store without a secret, and ``pickle="off"``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostile_app import crafted_pickle, victim

import replaykit as rk
from replaykit.keys import Keyring
from replaykit.payloads import Codec
from replaykit.store import open_store

from conftest import PYTHON
from helpers import add, rechain

OTHER_KEY = "an-attacker-key-of-his-own-making"


@rk.workflow(name="plain-add")
def plain_add(ctx: rk.Context, a: int, b: int):
    return (yield add(a, b))


def _waiting(db: str) -> None:
    """Run ``victim`` up to its wait for the "go" signal: start, pair, refuse, (the wait)."""
    with rk.Engine(db, workflows=[victim]) as engine:
        engine.start(victim, (3, 4), workflow_id="v")
        deadline = time.monotonic() + 20
        while len(list(engine.store.events("v"))) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def _events(db: str) -> list[tuple[Any, ...]]:
    with open_store(db, create=False) as store:
        return [tuple(e) for e in store.events("v")]


def _write(db: str, sqlite_sql: str, pg_sql: str, params: tuple[Any, ...]) -> None:
    """Change the store behind replaykit's back, as anyone who can write the database can."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            assert conn.execute(pg_sql, params).rowcount == 1
        rechain(db)  # the forger fixes the checksums too: only the signatures are left to stop him
    else:
        conn = sqlite3.connect(db)
        try:
            with conn:
                assert conn.execute(sqlite_sql, params).rowcount == 1
        finally:
            conn.close()
        rechain(db)  # the forger fixes the checksums too: only the signatures are left to stop him


def _event_pickle(db: str, seq: int, data: bytes) -> None:
    _write(db, "UPDATE events SET encoding = 'pickle', payload = ? WHERE seq = ? "
               "AND run = (SELECT max(id) FROM runs WHERE workflow_id = 'v')",
           "UPDATE replaykit_events SET encoding = 'pickle', payload = NULL, payload_bytes = %s WHERE seq = %s "
           "AND run = (SELECT max(id) FROM replaykit_runs WHERE workflow_id = 'v')", (data, seq))


def _error_pickle(db: str, seq: int, data: bytes) -> None:
    record = json.dumps({"type": "hostile_app.Refused", "message": "no", "traceback": "",
                         "pickle": base64.b64encode(data).decode()})
    _write(db, "UPDATE events SET payload = ? WHERE seq = ? AND run = (SELECT max(id) FROM runs)",
           "UPDATE replaykit_events SET payload = %s WHERE seq = %s "
           "AND run = (SELECT max(id) FROM replaykit_runs)", (record, seq))


def _signal_pickle(db: str, data: bytes) -> None:
    _write(db, "UPDATE signals SET encoding = 'pickle', payload = ? WHERE name = 'go'",
           "UPDATE replaykit_signals SET encoding = 'pickle', payload = NULL, payload_bytes = %s WHERE name = 'go'",
           (data,))


def _crafted(marker: Path, kind: str) -> bytes:
    """The attacker's pickle: bare, behind a made-up signature, or signed with a key of his own."""
    data = crafted_pickle(str(marker))
    if kind == "bare":
        return data
    if kind == "forged":
        return b"rksig1:" + os.urandom(32) + data
    return Keyring.configured(OTHER_KEY).sign(data, "value")


def _rerun(db: str) -> object:
    return rk.run(victim, (3, 4), workflow_id="v", db=db)


def _query(db: str) -> object:
    return rk.query(db, "v", "state")


# Where the crafted pickle goes (after the run waits for "go"), and who then reads it.
PLACES: dict[str, Callable[[str, bytes], None]] = {
    "arguments": lambda db, data: _event_pickle(db, 0, data),
    "activity result": lambda db, data: _event_pickle(db, 1, data),
    "error's pickled copy": lambda db, data: _error_pickle(db, 2, data),
}


@pytest.mark.parametrize("kind", ["bare", "forged", "other key"])
@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("reader", [_rerun, _query], ids=["rerun", "query"])
def test_a_crafted_pickle_in_a_history_is_refused_and_runs_nothing(any_db: str, tmp_path: Path, place: str,
                                                                    kind: str, reader: Callable[[str], object]) -> None:
    _waiting(any_db)
    marker = tmp_path / "ran"
    PLACES[place](any_db, _crafted(marker, kind))
    before = _events(any_db)
    with pytest.raises(rk.PayloadAuthenticationError, match="'v'") as raised:
        reader(any_db)
    assert not marker.exists()
    assert "nothing ran" in str(raised.value) or "not unpickled" in str(raised.value)
    assert _events(any_db) == before  # nothing recorded, nothing lost


def test_a_crafted_signal_payload_is_refused_when_the_run_takes_it(any_db: str, tmp_path: Path) -> None:
    _waiting(any_db)
    rk.send_signal(any_db, "v", "go", complex(1, 2))  # pickled, signed
    marker = tmp_path / "ran"
    _signal_pickle(any_db, _crafted(marker, "forged"))
    with pytest.raises(rk.PayloadAuthenticationError, match="signal 'go' to 'v'"):
        _rerun(any_db)
    assert not marker.exists()


def test_a_crafted_result_is_refused_by_result_and_by_a_rerun(any_db: str, tmp_path: Path) -> None:
    _waiting(any_db)
    rk.send_signal(any_db, "v", "go", True)
    assert _rerun(any_db) == ((3, 3), True)
    marker = tmp_path / "ran"
    last = _events(any_db)[-1][0]
    _event_pickle(any_db, last, _crafted(marker, "bare"))
    with pytest.raises(rk.PayloadAuthenticationError, match="'v'"):
        _rerun(any_db)
    with rk.Client(any_db) as client, pytest.raises(rk.PayloadAuthenticationError):
        client.handle("v").result(timeout=5)
    assert not marker.exists()


def test_the_command_line_shows_a_crafted_pickle_opaque_and_check_refuses_it(
        any_db: str, tmp_path: Path, child_env: dict[str, str]) -> None:
    _waiting(any_db)
    marker = tmp_path / "ran"
    _event_pickle(any_db, 1, _crafted(marker, "forged"))
    shown = subprocess.run([PYTHON, "-m", "replaykit", "history", any_db, "v"], capture_output=True, text=True,
                           env=child_env, timeout=60)
    assert shown.returncode == 0 and re.search(r"<pickle[ ,].* bytes>", shown.stdout), shown
    checked = subprocess.run([PYTHON, "-m", "replaykit", "check", any_db, "-m", "hostile_app"], capture_output=True,
                             text=True, env=child_env, timeout=60)
    assert checked.returncode == 1 and "FAIL  v" in checked.stdout and "signature" in checked.stdout, checked
    assert not marker.exists()


# -- keys -----------------------------------------------------------------------------------------------


def test_an_sqlite_store_without_a_secret_makes_an_owner_only_key_file_the_others_share(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child_env: dict[str, str]) -> None:
    monkeypatch.delenv("REPLAYKIT_SECRET")
    del child_env["REPLAYKIT_SECRET"]
    db = str(tmp_path / "orders.db")
    procs = [subprocess.Popen([PYTHON, "-c", "import sys, replaykit as rk; from hostile_app import pair; "
                               "from replaykit.store import open_store; s = open_store(sys.argv[1]); "
                               "print(s.codec.encode(complex(1, 2), 'x')[1].hex())", db], env=child_env,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]  # racing to make the key
    blobs = [bytes.fromhex(p.communicate(timeout=60)[0]) for p in procs]
    key_file = Path(db + ".key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".orders.db.key")]  # no temporary left
    with open_store(db) as store:
        assert [store.codec.decode("pickle", b) for b in blobs] == [complex(1, 2)] * 3  # one key for all
    key_file.chmod(0o644)
    with pytest.raises(rk.PayloadAuthenticationError, match="chmod 600"), open_store(db) as store:
        store.codec.decode("pickle", blobs[0])  # a key others can read signs nothing and checks nothing
    key_file.chmod(0o600)
    key_file.write_text("0123456789abcdef" * 4 + "\n")  # a key of the right shape: not the one that signed
    with open_store(db) as store, pytest.raises(rk.PayloadAuthenticationError, match=str(key_file)):
        store.codec.decode("pickle", blobs[0])


def test_another_secret_is_refused_and_a_rotated_one_still_reads(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    old, new = "the-old-secret-of-this-app", "the-new-secret-of-this-app"
    with rk.Engine(db, secret=old) as engine:
        engine.start(victim, (5, 6), workflow_id="v")
        deadline = time.monotonic() + 20
        while len(list(engine.store.events("v"))) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    with rk.SqliteStore(db, secret=new) as store, \
            pytest.raises(rk.PayloadAuthenticationError, match="REPLAYKIT_OLD_SECRETS"):
        rk.query(store, "v", "state")
    with rk.SqliteStore(db, secret=[new, old]) as store:  # signs with the new one, reads both
        assert rk.query(store, "v", "state") == {"first": (5, 5)}
        with pytest.raises(rk.PayloadAuthenticationError):
            Codec(Keyring.configured(old)).decode(*store.codec.encode(complex(7, 1), "x"))


def test_a_short_secret_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        rk.Engine(str(tmp_path / "s.db"), secret="short")
    assert not (tmp_path / "s.db").exists()


def test_postgres_needs_a_shared_secret_for_pickles_and_says_so(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLAYKIT_SECRET")
    with rk.Engine(pg_url, workflows=[victim]) as engine, \
            pytest.raises(rk.SerializationError, match="arguments of workflow 'victim'.*REPLAYKIT_SECRET"):
        engine.start(victim, (1, 2j), workflow_id="v")
    assert rk.run(plain_add, 1, 2, workflow_id="plain", db=pg_url) == 3  # JSON alone needs no secret
    with rk.Engine(pg_url, workflows=[victim], secret="a-secret-shared-by-the-fleet") as engine:
        engine.start(victim, (1, 2j), workflow_id="v")  # with one, it is recorded


def test_pickle_off_refuses_a_value_that_needs_pickle_naming_it(any_db: str) -> None:
    with rk.Engine(any_db, pickle="off") as engine, pytest.raises(rk.SerializationError, match="pickle='off'"):
        engine.start(victim, (1, 2j), workflow_id="v")
    with open_store(any_db) as store:
        assert store.info("v") is None  # nothing recorded
    with pytest.raises(ValueError, match="pickle="):
        rk.Engine(any_db, pickle="maybe")
