"""A store made before identities stays at the previous version's schema so that 0.1's processes go on
with it (a rolling deploy, a rollback: CHANGELOG "processes of the previous version go on with it (a
rollback too)"). But this version now records an activity's exception as the pickle of a 4-tuple
(exc, __cause__, __context__, __suppress_context__) in the same "pickle" field. 0.1's decode_error
accepts only a pickled BaseException there and otherwise falls back to ActivityFailed: a run whose
activity failed under this version replays under 0.1 with another exception type, so the workflow's
`except ValueError` no longer matches and the replay takes another path (the run fails on rollback)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import replaykit as rk

import upgrade_versions as v
from helpers import wait_until

FLOW = '''
import replaykit as rk

@rk.activity(name="rollback.charge")
def charge():
    try:
        raise KeyError("card-42")
    except KeyError as missing:
        raise ValueError("charge failed") from missing

@rk.workflow(name="rollback.pays")
def pays(ctx):
    seen = {}
    try:
        yield charge()
    except ValueError as exc:
        seen["caught"] = type(exc).__name__
    except Exception as exc:
        seen["caught"] = "other: " + type(exc).__name__
    ctx.set_query_handler("seen", lambda: seen)
    yield rk.wait_for_signal("go")
    return seen
'''

QUERY_UNDER_OLD = """
import json, sys, replaykit as rk
import rollback_flows
print(json.dumps(rk.query(sys.argv[1], "pay", "seen", workflows={"rollback.pays": rollback_flows.pays})))
"""


def _seen(db: str, pays: object) -> object:
    try:
        return rk.query(db, "pay", "seen", workflows={"rollback.pays": pays})
    except rk.UnknownQueryError:  # not caught yet
        return None


def test_an_activity_error_recorded_by_this_version_replays_the_same_under_0_1(tmp_path: Path) -> None:
    (tmp_path / "rollback_flows.py").write_text(FLOW)
    db = str(tmp_path / "orders.db")
    v.run(v.OLD, v.MAKE_STORE, db)  # a store of 0.1 (schema 4): this version keeps it at 4 for 0.1
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchall() == [(4,)]

    sys.path.insert(0, str(tmp_path))
    try:
        import rollback_flows
    finally:
        sys.path.remove(str(tmp_path))
    with rk.Engine(db) as engine:  # this version drives the run: the activity fails, the workflow catches it
        engine.start(rollback_flows.pays, workflow_id="pay")
        wait_until(lambda: _seen(db, rollback_flows.pays) is not None, "the activity failed and was caught")
        assert _seen(db, rollback_flows.pays) == {"caught": "ValueError"}

    old = v.run(v.OLD, QUERY_UNDER_OLD, db, paths=(str(tmp_path),))  # 0.1 (rolled back to) replays the run
    assert json.loads(old.stdout) == {"caught": "ValueError"}  # fails: {"caught": "other: ActivityFailed"}
