"""A second look at this stop's fixes to key files, imports, delete, retry policies and ids: what users did
before them still works (exports replaykit wrote import back, reading makes no key file, a single exception
class or a str subclass is still taken), and the new refusals say the right thing."""

from __future__ import annotations

import enum
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.testing import History, export_history, replay

from helpers import as_user

SECRET = "s" * 32


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = (value, "x")  # a tuple of a tuple and a str: typed JSON, descriptor ["tuple", [d, "j"]]
    return value


@rk.activity
def nested_value(depth: int) -> object:
    return _nested(depth)


@rk.workflow
def nesting(ctx: rk.Context, depth: int) -> rk.Flow[str]:
    yield nested_value(depth)
    return "done"


@rk.activity
def plus_one(x: int) -> int:
    return x + 1


@rk.workflow
def adding(ctx: rk.Context, x: int) -> rk.Flow[int]:
    y: int = yield plus_one(x)
    return y


# -- 1. import / replay refuse valid exports -----------------------------------------------------------


def test_an_export_of_a_typed_value_nested_60_deep_loads_back(tmp_path: Path) -> None:
    """Recording allows a typed value 100 levels deep, but its descriptor nests two levels per tuple:
    the new import check (is_json_exact on the whole {"t", "v"} record) refuses a real export made by
    replaykit itself, so `replaykit import` and `replay(workflow, "fixture.json")` both fail."""
    db = str(tmp_path / "src.db")
    assert rk.run(nesting, 60, workflow_id="deep", db=db) == "done"
    path = tmp_path / "deep.json"
    export_history(db, "deep").save(path)
    loaded = History.load(path)  # ValueError: a damaged history export: event 1 has typed ...
    assert loaded == export_history(db, "deep")
    assert replay(nesting, path).ok


def test_cli_import_of_a_typed_value_nested_60_deep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    assert rk.run(nesting, 60, workflow_id="deep", db=src) == "done"
    path = tmp_path / "deep.json"
    export_history(src, "deep").save(path)
    rk.SqliteStore(dst).close()
    assert main(["import", dst, str(path)]) == 0, capsys.readouterr().err[:300]


def test_import_of_a_time_too_large_for_a_float_is_refused_on_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CHANGELOG: import "checks every field ... finite times ... refuses a damaged one on one line".
    An integer `at` too large for a float raises OverflowError (a traceback) instead."""
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    rk.run(adding, 1, workflow_id="a", db=src)
    data = export_history(src, "a").to_json()
    data["events"][0]["at"] = 0
    text = json.dumps(data).replace('"at": 0', '"at": 1' + "0" * 400, 1)
    path = tmp_path / "bad.json"
    path.write_text(text)
    rk.SqliteStore(dst).close()
    assert main(["import", dst, str(path)]) == 1  # OverflowError: int too large to convert to float
    assert "nothing was imported" in capsys.readouterr().err


# -- 2. a read-only CLI verb makes the key file ------------------------------------------------------------


def test_replaykit_list_does_not_make_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty store without a key file (made by a process with a secret, or by c711567, which made the key
    at the first event): `replaykit list` now makes `<db>.key`. Run under sudo on a service user's store, the
    key file is root's (0600) and the service then refuses to open its own store
    (PayloadAuthenticationError: the key file ... cannot be read (Permission denied))."""
    db = str(tmp_path / "orders.db")
    rk.SqliteStore(db, secret=SECRET).close()  # the application's store, no runs yet
    assert not os.path.exists(db + ".key")
    monkeypatch.delenv("REPLAYKIT_SECRET")  # the operator's shell
    assert main(["list", db]) == 0
    assert not os.path.exists(db + ".key"), "a read-only verb made a key file"


def _open_as(uid: int, db: str) -> str:
    """Open ``db`` to write in a forked child running as ``uid``: "ok", or the error it raised."""
    def open_it() -> str:
        os.environ.pop("REPLAYKIT_SECRET", None)
        rk.SqliteStore(db).close()
        return "ok"

    return as_user(uid, uid, open_it)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play the operator under sudo")
def test_sudo_replaykit_list_does_not_lock_the_service_out_of_its_store(
        request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service (uid 1000) made its store with c711567 (no key file until its first event), or with a
    secret; an operator runs `sudo replaykit list` on it while it holds no runs. The key file made then is
    root's, 0600: the service can no longer open its own store."""
    service = 1000
    folder = Path(tempfile.mkdtemp(prefix="rk-review-srv-"))  # in /tmp: the service can reach it
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    os.chown(folder, service, service)
    db = str(folder / "orders.db")
    rk.SqliteStore(db, secret=SECRET).close()
    for name in os.listdir(folder):
        os.chown(folder / name, service, service)
    assert _open_as(service, str(folder / "probe.db")) == "ok"  # the service may use this folder
    monkeypatch.delenv("REPLAYKIT_SECRET")
    assert main(["list", db]) == 0  # the operator, as root
    assert _open_as(service, db) == "ok"


# -- 3. replaykit delete says the wrong reason ------------------------------------------------------------


def test_delete_of_an_id_with_no_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "orders.db")
    rk.run(adding, 1, workflow_id="a", db=db)
    assert main(["delete", db, "no-such-run"]) == 1
    err = capsys.readouterr().err
    assert "does not say whether its parent ended" not in err, err  # it has no start at all: it does not exist
    assert "no such run" in err


def test_delete_without_the_key_deletes_or_says_the_key_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """c711567 deleted an ended run without needing the store's key. Now the family check reads the run's
    start (which needs the key), swallows the PayloadAuthenticationError, and keeps the run saying "its
    start does not say whether its parent ended"."""
    db = str(tmp_path / "orders.db")
    assert rk.run(adding, 1, workflow_id="a", db=rk.SqliteStore(db, secret=SECRET)) == 2
    monkeypatch.delenv("REPLAYKIT_SECRET")
    code = main(["delete", db, "a"])
    err = capsys.readouterr().err
    assert code == 0 or "REPLAYKIT_SECRET" in err or "key" in err, err


# -- 4. RetryPolicy(non_retryable=SomeError) -------------------------------------------------------------------


def test_retry_policy_non_retryable_one_class_still_works() -> None:
    """c711567 accepted non_retryable=ValueError and honoured it (isinstance takes a class). The new
    converter=tuple makes it `TypeError: 'type' object is not iterable`, no hint what to write."""
    policy = rk.RetryPolicy(non_retryable=ValueError)  # type: ignore[arg-type]
    assert policy.non_retryable is ValueError or ValueError in tuple(policy.non_retryable)


def test_retry_policy_non_retryable_a_name_is_named_whole() -> None:
    with pytest.raises(TypeError) as caught:
        rk.RetryPolicy(non_retryable="PermissionError")  # type: ignore[arg-type]
    assert "'PermissionError'" in str(caught.value), str(caught.value)  # it says: not 'P'


# -- 5. workflow_id of a str subclass ---------------------------------------------------------------------------


class Job(str, enum.Enum):
    NIGHTLY = "nightly"


class OrderId(str):
    pass


@pytest.mark.parametrize("workflow_id", [Job.NIGHTLY, OrderId("order-1")])
def test_a_str_subclass_is_still_a_workflow_id(workflow_id: str) -> None:
    """c711567 ran these; check_workflow_id's `type(...) is not str` refuses them with
    "non-empty text ..., not 'order-1'"."""
    with rk.Engine(rk.MemoryStore()) as engine:
        assert engine.start(adding, 1, workflow_id=workflow_id).result(timeout=10) == 2
