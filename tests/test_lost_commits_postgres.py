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
import time
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
from test_lost_commits_campaign import _PLANS, _generation, expected, flow, shape

import replaykit as rk
from replaykit.errors import ResultTimeoutError
from replaykit.store import open_store
from replaykit.testing import replay_all
from replaykit.testing.timeskip import FakeClock

from helpers import lose_a_pg_commit
from pgserver import PgServer


class Stats:
    examples = 0
    lost = 0


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
    path = str(tmp / "journal")
    problems: list[str] = []
    wids = [f"r{k}" for k in range(len(plans))]
    sigs = {wid: sum(1 for kind, _ in plan if kind == "sig") for wid, plan in zip(wids, plans, strict=True)}
    sent = dict.fromkeys(wids, 0)
    reader = open_store(url)

    def committed_end(wid: str, value: Any, what: str) -> None:
        info = reader.info(wid)
        if info is None or info.status is not rk.Status.COMPLETED:
            problems.append(f"{what} {wid}: not committed then ({info and info.status})")
            return
        if value is not None:
            last = reader.last_event(wid)
            if last.value(reader.codec, wid) != value:
                problems.append(f"{what} {wid}: {value!r}, committed {last.value(reader.codec, wid)!r}")

    def on_event(event: Any) -> None:
        try:
            if event.kind == "run_completed":
                committed_end(event.workflow_id, None, "hook run_completed told of")
            elif event.kind == "step_completed" and event.command.startswith("activity"):
                wid = event.workflow_id
                events = list(reader.events(wid))
                if _generation(events, reader.codec, wid) == event.generation and not any(
                        e.step == event.step and e.kind == "activity" for e in events):
                    problems.append(f"hook step_completed told of {wid} step {event.step} (generation "
                                    f"{event.generation}), which is not committed")
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"hook check failed: {exc!r}")

    clock = FakeClock(1_000_000.0)
    reported: dict[str, Any] = {}
    not_started: list[str] = []
    lost: list[bool] = []
    engine = rk.Engine(url, durability=durability, clock=clock, max_cached_runs=cache1, poll_interval=0.02)
    try:
        engine.on("run_completed", on_event)
        engine.on("step_completed", on_event)
        counter = itertools.count(1)
        lost = lose_a_pg_commit(engine, url, lambda: next(counter) == lose_at, at)
        handles = {}
        for wid, plan, early in zip(wids, plans, sent_early, strict=True):
            try:
                handles[wid] = engine.start(flow, path, plan, workflow_id=wid)
            except rk.StoreError:
                not_started.append(wid)
                continue
            for _ in range(min(early, sigs[wid])):
                engine.signal(wid, "go", sent[wid])
                sent[wid] += 1
        for _ in range(moves):
            clock.advance_to(clock.now() + 20)
            time.sleep(0.01)
        if lost and rerun:  # the first engine takes up what was committed itself
            handles.update({h.workflow_id: h for h in engine.recover() if "/" not in h.workflow_id})
            for wid in list(not_started):
                try:
                    handles[wid] = engine.start(flow, path, plans[wids.index(wid)], workflow_id=wid)
                    not_started.remove(wid)
                except rk.StoreError:
                    pass
            for wid in wids:
                if sent[wid] < sigs[wid]:
                    engine.signal(wid, "go", sent[wid])
                    sent[wid] += 1
            for _ in range(moves):
                clock.advance_to(clock.now() + 20)
                time.sleep(0.01)
        for wid, handle in handles.items():
            try:
                value = handle.result(timeout=0.3)
            except (rk.StoreError, ResultTimeoutError):
                continue
            except Exception as exc:  # noqa: BLE001 - reported
                problems.append(f"first engine's handle of {wid} raised {exc!r}")
                continue
            reported[wid] = value
            committed_end(wid, value, "first engine's handle reported")
    finally:
        engine.close()
    if lost:
        Stats.lost += 1

    clock2 = FakeClock(clock.now())
    with rk.Engine(url, durability=durability, clock=clock2, max_cached_runs=cache2, poll_interval=0.02) as again:
        for wid in not_started:
            again.start(flow, path, plans[wids.index(wid)], workflow_id=wid)
        again.recover()
        for wid in wids:
            while sent[wid] < sigs[wid]:
                again.signal(wid, "go", sent[wid])
                sent[wid] += 1
        deadline = time.monotonic() + 20
        while True:
            infos = [reader.info(wid) for wid in wids]
            if all(i is not None and i.status.is_terminal for i in infos):
                break
            if time.monotonic() > deadline:
                ended = [(w, i and i.status.value) for w, i in zip(wids, infos, strict=True)]
                problems.append(f"runs did not end: {ended}")
                reader.close()
                return problems
            clock2.advance_to(clock2.now() + 100)
            time.sleep(0.01)
    histories = {info.workflow_id: list(reader.events(info.workflow_id)) for info in reader.list()}
    for wid, plan in zip(wids, plans, strict=True):
        info = reader.info(wid)
        if info.status is not rk.Status.COMPLETED:
            problems.append(f"{wid} ended {info.status.value}: {histories[wid][-1]}")
            continue
        result = reader.last_event(wid).value(reader.codec, wid)
        if shape(result) != expected(wid, plan):
            problems.append(f"{wid} returned {shape(result)}, its plan implies {expected(wid, plan)}")
        if wid in reported and reported[wid] != result:
            problems.append(f"the first engine's handle of {wid} reported {reported[wid]!r}, recorded {result!r}")
    for wid, info in ((i.workflow_id, i) for i in reader.list()):
        if "/" in wid and info.status is not rk.Status.COMPLETED:
            problems.append(f"child {wid} ended {info.status.value}")
    recorded: dict[str, str] = {}
    for wid in histories:
        for e in (e for g in reader.generations(wid) for e in reader.generation_events(wid, g.number)):
            if e.kind == "activity" and e.outcome == "ok":
                tag, uid = e.value(reader.codec).split("|")
                recorded[tag] = uid
    lines = Path(path).read_text().splitlines() if os.path.exists(path) else []
    ended_at = {(tag, uid): n for n, (what, tag, uid) in enumerate(line.split() for line in lines) if what == "end"}
    for n, (what, tag, uid) in enumerate(line.split() for line in lines):
        if what == "start" and tag in recorded and uid != recorded[tag]:
            done = ended_at.get((tag, recorded[tag]))
            if done is not None and n > done:
                problems.append(f"{tag} ran again ({uid}) after the copy recorded ({recorded[tag]}) ended")
    for report in replay_all(reader, workflows=[flow]):
        if not report.ok:
            problems.append(f"{report.workflow_id} does not replay: {report.error}")
    reader.close()
    return problems


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
        print(f"examples {Stats.examples} lost {Stats.lost}", flush=True)
    assert not problems, "\n".join(problems)


if os.environ.get("LC_SEED"):
    test_a_lost_postgres_commit_anywhere_keeps_the_promise = hypothesis.seed(int(os.environ["LC_SEED"]))(
        test_a_lost_postgres_commit_anywhere_keeps_the_promise)
