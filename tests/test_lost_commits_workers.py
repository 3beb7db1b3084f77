"""A campaign that loses one commit of a worker's driver (SQLite rolls the batch back, as on a full disk or
an I/O error, just before the store's commit: as ``helpers.lose_a_commit`` does for an engine) at a random
turn of a random small scenario, then checks the promise of group commit for workers: after a lost batch
no run is stranded (this worker, or a second one, claims it again and it completes), no activity whose
result was recorded runs again, and every history replays.

A scenario: a few queued runs (``rk.Client.start``) of one workflow whose plan is a list of ops (an
activity, a short real sleep, a signal wait, a child run, ``rk.all`` of two activities); one in-process
``rk.Worker`` on an SQLite file drives them; the N-th commit of one of its drivers with a transaction open
is lost. Signals are sent some at once, the rest a little later; a second worker may join after the loss.
Checked:

* every run (and child) completes with the result its plan implies;
* no activity ran again after its result was recorded (each execution journals a unique id);
* every history replays through the code (``replay_all``);
* the work table and the registry are left clean: once every run ended, no work row is held by a worker
  and the workers hold nothing (``Worker.holds``, ``store.workers()``).

``LCW_EXAMPLES`` runs more examples (a hunt); ``LCW_SEED`` picks hypothesis's seed.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st

import replaykit as rk
from replaykit.store import open_store
from replaykit.testing import replay_all

from helpers import journal, lose_a_pg_commit
from pgserver import PgServer


@rk.activity(name="lcw_note")
def note(path: str, tag: str) -> str:
    uid = uuid.uuid4().hex[:8]
    journal(path, f"start {tag} {uid}")
    time.sleep(0.002)
    journal(path, f"end {tag} {uid}")
    return f"{tag}|{uid}"


@rk.workflow(name="lcw_flow")
def flow(ctx: rk.Context, path: str, plan: list[list[Any]]) -> Any:
    acc: list[Any] = []
    wid = ctx.workflow_id
    for i, (kind, arg) in enumerate(plan):
        tag = f"{wid}:{i}"
        if kind == "act":
            acc.append((yield note(path, tag)))
        elif kind == "sleep":
            yield rk.sleep(arg)
        elif kind == "sig":
            acc.append(["sig", (yield rk.wait_signal("go"))])
        elif kind == "child":
            acc.append(["child", (yield rk.child_workflow(flow, path, arg))])
        elif kind == "gather":
            acc.extend((yield rk.all(note(path, tag + "a"), note(path, tag + "b"))))
    acc.append((yield note(path, f"{wid}:end")))
    return acc


def expected(wid: str, plan: list[list[Any]]) -> list[Any]:
    acc: list[Any] = []
    sig = itertools.count()
    for i, (kind, _) in enumerate(plan):
        tag = f"{wid}:{i}"
        if kind == "act":
            acc.append(tag)
        elif kind == "sig":
            acc.append(["sig", next(sig)])
        elif kind == "child":
            acc.append(["child", None])
        elif kind == "gather":
            acc.extend([tag + "a", tag + "b"])
    acc.append(f"{wid}:end")
    return acc


def shape(result: Any) -> Any:
    return [item.split("|")[0] if isinstance(item, str) else
            ([item[0], None] if item[0] == "child" else list(item)) for item in result]


_LEAF_OPS = st.one_of(st.just(["act", None]), st.just(["gather", None]),
                      st.tuples(st.just("sleep"), st.sampled_from([0.01, 0.05, 0.2])).map(list))
_OPS = st.one_of(_LEAF_OPS, st.just(["sig", None]),
                 st.tuples(st.just("child"), st.lists(_LEAF_OPS, min_size=1, max_size=2)).map(list))
_PLANS = st.lists(st.lists(_OPS, min_size=1, max_size=4), min_size=1, max_size=3)


class Stats:
    examples = 0
    lost = 0


def lose_a_worker_commit(worker: rk.Worker, lose_at: int) -> list[bool]:
    """The ``lose_at``-th commit made on one of the worker's driver threads with a transaction open is rolled
    back by SQLite before it is asked to commit: none of the batch is recorded, and commit raises."""
    store = worker.store
    commit = store.commit
    counter = itertools.count(1)
    lost: list[bool] = []

    def failing() -> None:
        conn = getattr(store._local, "conn", None)  # type: ignore[attr-defined]
        on_driver = any(e._thread is threading.current_thread() for e in worker._engines)
        if not lost and on_driver and conn is not None and conn.in_transaction and next(counter) == lose_at:
            lost.append(True)
            conn.execute("ROLLBACK")
        commit()

    store.commit = failing  # type: ignore[method-assign]
    return lost


def _work_rows(db: str) -> list[tuple[Any, ...]]:
    if db.startswith("postgres"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as pg:
            return pg.execute("SELECT workflow_id, worker, ready_at FROM replaykit_work "
                              "ORDER BY workflow_id").fetchall()
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT workflow_id, worker, ready_at FROM work ORDER BY workflow_id").fetchall()
    finally:
        conn.close()


def _until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


LoseWorkerCommit = Callable[[rk.Worker, int], list[bool]]


def scenario(tmp: Path, plans: list[list[list[Any]]], lose_at: int, late: list[int], second: bool, *,
             db: str | None = None, options: dict[str, Any] | None = None,
             lose: LoseWorkerCommit = lose_a_worker_commit) -> list[str]:
    """Run one scenario on ``db`` (an SQLite file in ``tmp`` if none; ``options``: the workers', ``lose``:
    how the first worker's commit is lost); the problems found."""
    db, path, options = db or str(tmp / "w.db"), str(tmp / "journal"), options or {}
    problems: list[str] = []
    wids = [f"r{k}" for k in range(len(plans))]
    sigs = {wid: sum(1 for kind, _ in plan if kind == "sig") for wid, plan in zip(wids, plans, strict=True)}
    client = rk.Client(db)
    workers: list[rk.Worker] = []
    try:
        first = rk.Worker(db, workflows=[flow], heartbeat=0.1, poll_interval=0.05, worker_id="first", **options)
        workers.append(first)
        lost = lose(first, lose_at)
        handles = {wid: client.start(flow, path, plan, workflow_id=wid) for wid, plan in zip(wids, plans, strict=True)}
        sent = dict.fromkeys(wids, 0)
        for wid, n in zip(wids, late, strict=False):
            for _ in range(max(0, sigs[wid] - n)):
                client.signal(wid, "go", sent[wid])
                sent[wid] += 1
        time.sleep(0.2)
        if second:
            workers.append(rk.Worker(db, workflows=[flow], heartbeat=0.1, poll_interval=0.05, worker_id="second",
                                     **options))
        for wid in wids:
            while sent[wid] < sigs[wid]:
                client.signal(wid, "go", sent[wid])
                sent[wid] += 1
        for wid, handle in handles.items():
            try:
                handle.result(timeout=15)
            except Exception as exc:  # noqa: BLE001 - reported
                problems.append(f"{wid}: {exc!r} (lost: {bool(lost)})")
        Stats.lost += bool(lost)
        if problems:
            return problems
        # The registry and work table are left clean while the workers still run.
        if not _until(lambda: not any(w.holds(wid) for w in workers for wid in _ids(db)), 3):
            problems.append(f"a worker still holds an ended run: {[(w.worker_id, dict(w._held)) for w in workers]}")
        listed = {r.worker_id: r.runs for r in client.workers()}
        if any(listed.values()):
            problems.append(f"the registry lists runs held: {listed}")
        rows = _work_rows(db)
        held = [row for row in rows if row[1] is not None or row[2] is not None]
        if held:
            problems.append(f"work rows held or ready after every run ended: {held}")
    finally:
        for w in workers:
            w.stop()
        client.close()

    reader = open_store(db)
    try:
        for wid, plan in zip(wids, plans, strict=True):
            info = reader.info(wid)
            if info.status is not rk.Status.COMPLETED:
                problems.append(f"{wid} ended {info.status.value}")
                continue
            result = reader.last_event(wid).value(reader.codec, wid)
            if shape(result) != expected(wid, plan):
                problems.append(f"{wid} returned {shape(result)}, its plan implies {expected(wid, plan)}")
        for info in reader.list():
            if info.status is not rk.Status.COMPLETED:
                problems.append(f"{info.workflow_id} ended {info.status.value}")
        recorded: dict[str, str] = {}
        for info in reader.list():
            for e in reader.events(info.workflow_id):
                if e.kind == "activity" and e.outcome == "ok":
                    tag, uid = e.value(reader.codec).split("|")
                    recorded[tag] = uid
        lines = Path(path).read_text().splitlines() if os.path.exists(path) else []
        ended_at = {(tag, uid): n for n, (what, tag, uid) in enumerate(ln.split() for ln in lines) if what == "end"}
        for n, (what, tag, uid) in enumerate(line.split() for line in lines):
            if what == "start" and tag in recorded and uid != recorded[tag]:
                done = ended_at.get((tag, recorded[tag]))
                if done is not None and n > done:
                    problems.append(f"{tag} ran again ({uid}) after the copy recorded ({recorded[tag]}) ended")
        for report in replay_all(reader, workflows=[flow]):
            if not report.ok:
                problems.append(f"{report.workflow_id} does not replay: {report.error}")
    finally:
        reader.close()
    return problems


def _ids(db: str) -> list[str]:
    return [row[0] for row in _work_rows(db)]


_EXAMPLES = int(os.environ.get("LCW_EXAMPLES", "12"))


@hypothesis.settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(plans=_PLANS, lose_at=st.integers(1, 12), late=st.lists(st.integers(0, 2), min_size=3, max_size=3),
                  second=st.booleans())
def test_a_lost_worker_commit_anywhere_keeps_the_promise(tmp_path_factory: Any, plans: list[Any], lose_at: int,
                                                          late: list[int], second: bool) -> None:
    tmp = tmp_path_factory.mktemp("lcw")
    problems = scenario(tmp, plans, lose_at, late, second)
    Stats.examples += 1
    if os.environ.get("LCW_REPORT"):
        print(f"examples {Stats.examples} lost {Stats.lost}", flush=True)
    assert not problems, "\n".join(problems)


if os.environ.get("LCW_SEED"):
    test_a_lost_worker_commit_anywhere_keeps_the_promise = hypothesis.seed(int(os.environ["LCW_SEED"]))(
        test_a_lost_worker_commit_anywhere_keeps_the_promise)


def lose_a_pg_worker_commit(url: str) -> LoseWorkerCommit:
    """On PostgreSQL (a worker with one driver): the backend of the driver's batch connection is terminated
    just before its ``lose_at``-th commit with a batch transaction open (``helpers.lose_a_pg_commit``)."""
    def lose(worker: rk.Worker, lose_at: int) -> list[bool]:
        [engine] = worker._engines
        counter = itertools.count(1)
        return lose_a_pg_commit(engine, url, lambda: next(counter) == lose_at)

    return lose


_PG_EXAMPLES = int(os.environ.get("LCWP_EXAMPLES", "6"))


@hypothesis.settings(max_examples=_PG_EXAMPLES, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(plans=_PLANS, lose_at=st.integers(1, 8), late=st.lists(st.integers(0, 2), min_size=3, max_size=3),
                  second=st.booleans())
def test_a_lost_postgres_worker_commit_keeps_the_promise(pg_server: PgServer, plans: list[Any], lose_at: int,
                                                         late: list[int], second: bool) -> None:
    """The same on PostgreSQL, ``durability="power"`` (a batch transaction is open at the commit), one
    driver per worker; each example has a database of its own."""
    name = pg_server.create_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            problems = scenario(Path(tmp), plans, lose_at, late, second, db=pg_server.url(name),
                                options={"drivers": 1, "durability": "power"},
                                lose=lose_a_pg_worker_commit(pg_server.url(name)))
    finally:
        pg_server.release_database(name)
    Stats.examples += 1
    if os.environ.get("LCW_REPORT"):
        print(f"examples {Stats.examples} lost {Stats.lost}", flush=True)
    assert not problems, "\n".join(problems)
