"""The campaign of ``test_lost_commits_campaign.py`` (its scenarios, workflow and checks) on PostgreSQL:
a commit of the driver is lost because the backend of its group-commit batch's connection is terminated
from another connection (``helpers.lose_a_pg_commit``: as a server restart, a network cut or
``pg_terminate_backend`` would end it), at a random turn of a random small scenario.

* ``durability="power"``, lost at the commit: the batch's transaction (every write of the batch but its
  first, which commits alone) is rolled back by the server, and the commit raises.
* lost at a write (``"power"`` or ``"crash"``): that write fails, the rest of the batch is refused, and the
  commit raises; what the batch wrote before is recorded with ``"crash"`` (each write commits alone), only
  its first write with ``"power"``. (With ``"crash"`` nothing is ever open at a commit: a loss there loses
  nothing, see ``test_a_terminated_batch_connection_loses_what_is_open``.)
* lost at a read the driver makes on the batch's connection: the read fails; the batch is lost if a
  transaction of it was open, else the next write takes a new connection.
* a server restart before a commit: every client connection of the database is ended, the engine's lock
  connection too (with ``"crash"``, the batch has nothing open then: only the locks are lost).

Each example has a database of its own (``pg_server.create_database``, emptied after it). Checked, as on
SQLite: every run completes with the result its plan implies; no activity whose result was recorded ran
again after it; every history replays through the code; what a first engine's handle reported, and what
its hooks told, was committed when told.

``LCP_EXAMPLES`` runs more examples (a hunt: about 0.5 s an example, so past ~200 pass ``--timeout=0`` to
pytest, whose per-test timeout covers every example); ``LC_SEED`` picks hypothesis's seed.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import test_lost_commits_campaign as campaign
from test_lost_commits_campaign import _PLANS, flow

import replaykit as rk
from replaykit.store import open_store

from helpers import lose_a_pg_commit
from pgserver import PgServer


class Stats:
    examples = 0


def _events(store: Any) -> dict[str, list[int]]:
    return {i.workflow_id: [e.seq for e in store.events(i.workflow_id)] for i in store.list()}


@pytest.mark.parametrize("durability, at", [("power", "commit"), ("crash", "commit"), ("power", "write"),
                                            ("crash", "write")])
def test_a_terminated_batch_connection_loses_what_is_open(pg_url: str, tmp_path: Path, durability: str,
                                                          at: str) -> None:
    """The loss itself: three runs whose turns write several steps at once. At the commit, with "power",
    the batch's open transaction is lost (its first write committed alone) and the commit raises; with
    "crash" nothing is open then (each write committed alone), so nothing is lost. At a write, that write
    and the rest of the batch are lost, and the commit raises; with "crash" what the batch wrote before is
    recorded."""
    other = open_store(pg_url)
    engine = rk.Engine(pg_url, durability=durability, poll_interval=0.02)
    seen: dict[str, Any] = {}
    calls = itertools.count(1)

    def when() -> bool:
        if next(calls) != (1 if at == "commit" else 3):
            return False
        seen["batch"], seen["committed"] = _events(engine.store), _events(other)  # the batch's own view, and others'
        return True

    lost = lose_a_pg_commit(engine, pg_url, when, at)
    commit, raised = engine.store.commit, []

    def watched() -> None:
        try:
            commit()
        except rk.StoreError as exc:
            if not raised:
                raised.append(str(exc))
                seen["after"] = _events(other)
            raise

    engine.store.commit = watched  # type: ignore[method-assign]
    try:
        handles = [engine.start(flow, str(tmp_path / "j"), [["gather", None], ["act", None]], workflow_id=f"r{k}")
                   for k in range(3)]
        for handle in handles:
            try:
                handle.result(timeout=10)
            except rk.StoreError:
                pass
    finally:
        engine.close()
        final = _events(other)
        other.close()
    if (durability, at) == ("crash", "commit"):
        assert not lost and not raised and all(len(seqs) == 6 for seqs in final.values())  # all of it, done
        return
    assert lost and len(raised) == 1, raised
    assert seen["after"] == seen["committed"] == final  # nothing of the batch after the loss is recorded
    if at == "commit":
        assert seen["batch"] != seen["committed"]  # and there was something open to lose
        assert "Of this batch" not in raised[0]
    else:
        assert ("the writes before the failed one are recorded" if durability == "crash"
                else "only the first write is recorded") in raised[0] or "none of the writes" in raised[0]


def scenario(url: str, tmp: Path, durability: str, at: str, plans: list[list[list[Any]]], lose_at: int,
             cache1: int | None, cache2: int | None, sent_early: list[int], moves: int, rerun: bool) -> list[str]:
    """``test_lost_commits_campaign.scenario`` on PostgreSQL; the problems found."""
    return campaign.scenario(tmp, plans, lose_at, cache1, cache2, sent_early, moves, rerun, db=url,
                             options={"durability": durability},
                             lose=lambda engine, hit: lose_a_pg_commit(engine, url, hit, at))


_EXAMPLES = int(os.environ.get("LCP_EXAMPLES", "24"))
_MODES = st.sampled_from([("power", "commit"), ("power", "commit"), ("power", "write"), ("crash", "write"),
                          ("power", "restart"), ("crash", "restart"), ("power", "read"), ("crash", "read")])


@hypothesis.settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(mode=_MODES, plans=_PLANS, lose_at=st.integers(1, 14), cache1=st.sampled_from([0, None]),
                  cache2=st.sampled_from([0, None]), early=st.lists(st.integers(0, 3), min_size=3, max_size=3),
                  moves=st.integers(0, 6), rerun=st.booleans())
def test_a_lost_postgres_commit_anywhere_keeps_the_promise(pg_server: PgServer, mode: tuple[str, str],
                                                            plans: list[Any], lose_at: int, cache1: int | None,
                                                            cache2: int | None, early: list[int], moves: int,
                                                            rerun: bool) -> None:
    name = pg_server.create_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Stats.examples += 1
            problems = scenario(pg_server.url(name), Path(tmp), *mode, plans, lose_at, cache1, cache2,
                                early[:len(plans)], moves, rerun)
    finally:
        pg_server.release_database(name)
    if os.environ.get("LC_REPORT"):
        print(f"examples {Stats.examples} lost {campaign.Stats.lost}", flush=True)
    assert not problems, "\n".join(problems)


if os.environ.get("LC_SEED"):
    test_a_lost_postgres_commit_anywhere_keeps_the_promise = hypothesis.seed(int(os.environ["LC_SEED"]))(
        test_a_lost_postgres_commit_anywhere_keeps_the_promise)
