"""A campaign that loses one commit of the driver (SQLite rolls the batch back, as on a full disk or an I/O
error: ``helpers.lose_a_commit``) at a random turn of a random small scenario, then checks the promise of
group commit: after a lost batch nothing that was not committed is acted on, nothing is left stranded, and
a new engine's ``recover()`` goes on from what was committed.

A scenario: a few runs of one workflow whose plan is a list of ops (an activity, a sleep on a fake clock, a
signal wait, a child run, continue-as-new, ``rk.all`` of two activities, a side effect, a custom status),
on engines that keep every run in memory or none (``max_cached_runs=0``: eviction). The first engine runs
until the N-th commit that writes something is lost, and a little longer; a second engine on the same
file recovers, is sent the signals still due, and every run must end. Checked:

* every run completes with the result its plan implies;
* no activity ran again after its result was recorded (each execution has an id: the recorded one is
  known, and no copy of the step starts after the recorded one ended);
* every history replays through the code (``replay_all``);
* a result the first engine's handles reported is the final recorded one (a side effect's random value
  is in it: a result reported from a lost batch differs), and was committed when it was reported;
* what the first engine's hooks told (a run completed, an activity step completed) was committed.

``LC_EXAMPLES`` runs more examples (a hunt); ``LC_SEED`` picks hypothesis's seed.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st

import replaykit as rk
from replaykit.errors import ResultTimeoutError
from replaykit.store import open_store
from replaykit.testing import replay_all
from replaykit.testing.timeskip import FakeClock

from helpers import journal, lose_a_commit


@rk.activity(name="lcc_note")
def note(path: str, tag: str) -> str:
    uid = uuid.uuid4().hex[:8]
    journal(path, f"start {tag} {uid}")
    time.sleep(0.002)
    journal(path, f"end {tag} {uid}")
    return f"{tag}|{uid}"


@rk.workflow(name="lcc_flow")
def flow(ctx: rk.Context, path: str, plan: list[list[Any]], base: int = 0, acc: list[Any] | None = None) -> Any:
    """Each op of ``plan`` (numbered from ``base`` across generations); what it saw goes into ``acc``,
    the run's result."""
    acc = list(acc or [])
    wid = ctx.workflow_id
    for i, (kind, arg) in enumerate(plan):
        tag = f"{wid}:{base + i}"
        if kind == "act":
            acc.append((yield note(path, tag)))
        elif kind == "sleep":
            yield rk.sleep(arg)
        elif kind == "sig":
            acc.append(["sig", (yield rk.wait_signal("go"))])
        elif kind == "child":
            acc.append(["child", (yield rk.child_workflow(flow, path, arg))])
        elif kind == "can":
            yield rk.continue_as_new(path, plan[i + 1:], base + i + 1, acc)
        elif kind == "gather":
            acc.extend((yield rk.all(note(path, tag + "a"), note(path, tag + "b"))))
        elif kind == "side":
            acc.append(["side", (yield rk.side_effect(lambda: uuid.uuid4().hex[:8]))])
        elif kind == "status":
            ctx.set_status({"op": base + i})
    acc.append((yield note(path, f"{wid}:end")))
    return acc


def expected(wid: str, plan: list[list[Any]], base: int = 0) -> list[Any]:
    """The result ``plan`` implies, random parts left out (see ``shape``)."""
    acc: list[Any] = []
    sig = itertools.count()
    for i, (kind, _) in enumerate(plan):
        tag = f"{wid}:{base + i}"
        if kind == "act":
            acc.append(tag)
        elif kind == "sig":
            acc.append(["sig", next(sig)])
        elif kind == "child":
            acc.append(["child", None])  # its id is the parent's step number: its content is checked apart
        elif kind == "gather":
            acc.extend([tag + "a", tag + "b"])
        elif kind == "side":
            acc.append(["side", None])
    acc.append(f"{wid}:end")
    return acc


def shape(result: Any) -> Any:
    out: list[Any] = []
    for item in result:
        if isinstance(item, str):
            out.append(item.split("|")[0])
        elif item[0] in ("side", "child"):
            out.append([item[0], None])
        else:
            out.append(list(item))
    return out


def expected_child(child_result: Any, plan: list[list[Any]]) -> bool:
    return shape(child_result)[-1].endswith(":end") and len(child_result) == len(expected("c", plan))


_LEAF_OPS = st.one_of(st.just(["act", None]), st.tuples(st.just("sleep"), st.integers(1, 50)).map(list),
                      st.just(["side", None]), st.just(["status", None]), st.just(["gather", None]))
_CHILD_PLAN = st.lists(_LEAF_OPS, min_size=1, max_size=3)
_OPS = st.one_of(_LEAF_OPS, st.just(["sig", None]), st.just(["can", None]),
                 st.tuples(st.just("child"), _CHILD_PLAN).map(list))
_PLANS = st.lists(st.lists(_OPS, min_size=1, max_size=5), min_size=1, max_size=3)


class Stats:
    examples = 0
    lost = 0


def _generation(events: list[Any], codec: Any, wid: str) -> int:
    return 1 if not events else events[0].value(codec, wid).get("generation", 1)


Lose = Callable[[rk.Engine, Callable[[], bool]], list[bool]]


def lose_an_sqlite_commit(engine: rk.Engine, hit: Callable[[], bool]) -> list[bool]:
    """Lose the driver's commit (one with a transaction open) for which ``hit()`` holds (asked once each)."""
    def when() -> bool:
        conn = engine.store._local.conn  # type: ignore[attr-defined]
        return threading.current_thread() is engine._thread and conn.in_transaction and hit()

    return lose_a_commit(engine, when)


def scenario(tmp: Path, plans: list[list[list[Any]]], lose_at: int, cache1: int | None, cache2: int | None,
             sent_early: list[int], moves: int, rerun: bool = False, *, db: str | None = None,
             options: dict[str, Any] | None = None, lose: Lose = lose_an_sqlite_commit) -> list[str]:
    """Run one scenario on ``db`` (an SQLite file in ``tmp`` if none; ``options``: the engines', ``lose``: how
    a commit is lost); the problems found."""
    db, path, options = db or str(tmp / "s.db"), str(tmp / "journal"), options or {}
    problems: list[str] = []
    wids = [f"r{k}" for k in range(len(plans))]
    sigs = {wid: sum(1 for kind, _ in plan if kind == "sig") for wid, plan in zip(wids, plans, strict=True)}
    sent = dict.fromkeys(wids, 0)
    reader = open_store(db)
    told: list[str] = []

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
                events = list(reader.events(wid))  # one read: its generation and its events
                if _generation(events, reader.codec, wid) == event.generation and not any(
                        e.step == event.step and e.kind == "activity" for e in events):
                    problems.append(f"hook step_completed told of {wid} step {event.step} (generation "
                                    f"{event.generation}), which is not committed")
            told.append(event.kind)
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"hook check failed: {exc!r}")

    clock = FakeClock(1_000_000.0)
    reported: dict[str, Any] = {}
    not_started: list[str] = []
    lost: list[bool] = []
    engine = rk.Engine(db, clock=clock, max_cached_runs=cache1, poll_interval=0.02, **options)
    try:
        engine.on("run_completed", on_event)
        engine.on("step_completed", on_event)
        counter = itertools.count(1)
        lost = lose(engine, lambda: next(counter) == lose_at)
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
        if lost and rerun:  # the first engine takes up what was committed itself (as a rerun in the process would)
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
    with rk.Engine(db, clock=clock2, max_cached_runs=cache2, poll_interval=0.02, **options) as again:
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
    # Results.
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
    # Activities: none ran again after its result was recorded.
    recorded: dict[str, str] = {}
    for wid in histories:  # every generation's (a run that continued as new keeps the ones before)
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


_EXAMPLES = int(os.environ.get("LC_EXAMPLES", "60"))


@hypothesis.settings(max_examples=_EXAMPLES, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(plans=_PLANS, lose_at=st.integers(1, 14), cache1=st.sampled_from([0, None]),
                  cache2=st.sampled_from([0, None]), early=st.lists(st.integers(0, 3), min_size=3, max_size=3),
                  moves=st.integers(0, 6), rerun=st.booleans())
def test_a_lost_commit_anywhere_keeps_the_promise(tmp_path_factory: Any, plans: list[Any], lose_at: int,
                                                   cache1: int | None, cache2: int | None, early: list[int],
                                                   moves: int, rerun: bool) -> None:
    tmp = tmp_path_factory.mktemp("lc")
    Stats.examples += 1
    problems = scenario(tmp, plans, lose_at, cache1, cache2, early[:len(plans)], moves, rerun)
    if os.environ.get("LC_REPORT"):
        print(f"examples {Stats.examples} lost {Stats.lost}", flush=True)
    assert not problems, "\n".join(problems)


if os.environ.get("LC_SEED"):
    test_a_lost_commit_anywhere_keeps_the_promise = hypothesis.seed(int(os.environ["LC_SEED"]))(
        test_a_lost_commit_anywhere_keeps_the_promise)
