"""A campaign that loses one or two commits of the driver (SQLite rolls the batch back: as
``helpers.lose_a_commit`` does, at one or two random turns) while runs are controlled: paused and resumed
(by the engine, or ``rk.pause`` / ``rk.resume`` on the store), cancelled (the workflow may catch
``rk.Cancelled`` and run a compensation activity), terminated (by the engine or ``rk.terminate``), started
later (``start_delay`` / ``start_at``), bounded by a run ``timeout=``; and whose activities fail once then
succeed under a RetryPolicy (the failure decided by the journal: once across processes) or time out once.

Checked, as in ``test_lost_commits_campaign.py``: every run ends with the status and result its plan and
its control imply; no activity ran again after its result was recorded; every history replays through its
code (``replay_all``; terminated runs are not replayed); what a first engine's handle reported (a result,
or a run ended cancelled or timed out) and what its hooks told was committed when reported.

``LCC_EXAMPLES`` runs more examples (a hunt); ``LC_SEED`` picks hypothesis's seed (as in the other campaign).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st

import replaykit as rk
from replaykit.errors import IllegalTransitionError, ResultTimeoutError
from replaykit.testing import replay_all
from replaykit.testing.timeskip import FakeClock

from helpers import journal, read_journal


def _seen(path: str, line: str) -> bool:
    return line in read_journal(path)


@rk.activity(name="lcx_note")
def note(path: str, tag: str) -> str:
    uid = uuid.uuid4().hex[:8]
    journal(path, f"start {tag} {uid}")
    time.sleep(0.002)
    journal(path, f"end {tag} {uid}")
    return f"{tag}|{uid}"


@rk.activity(name="lcx_flaky", retry=rk.RetryPolicy(max_attempts=3, backoff=rk.Fixed(2)))
def flaky(path: str, tag: str) -> str:
    """Fails the first time it runs for ``tag`` (in any process), then succeeds."""
    uid = uuid.uuid4().hex[:8]
    journal(path, f"start {tag} {uid}")
    if not _seen(path, f"failed {tag}"):
        journal(path, f"failed {tag}")
        raise RuntimeError(f"{tag} fails once")
    journal(path, f"end {tag} {uid}")
    return f"{tag}|{uid}"


@rk.activity(name="lcx_slow", timeout=5, retry=rk.RetryPolicy(max_attempts=5, backoff=rk.Fixed(1)))
def slow(path: str, tag: str) -> str:
    """The first time it runs for ``tag``, it takes 0.3 s (real time), which a moving fake clock times out."""
    uid = uuid.uuid4().hex[:8]
    journal(path, f"start {tag} {uid}")
    if not _seen(path, f"slowed {tag}"):
        journal(path, f"slowed {tag}")
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline and not rk.is_cancelled():
            time.sleep(0.01)
    journal(path, f"end {tag} {uid}")
    return f"{tag}|{uid}"


@rk.workflow(name="lcx_flow")
def flow(ctx: rk.Context, path: str, plan: list[list[Any]], catch: bool, base: int = 0,
         acc: list[Any] | None = None) -> Any:
    acc = list(acc or [])
    wid = ctx.workflow_id
    try:
        for i, (kind, arg) in enumerate(plan):
            tag = f"{wid}:{base + i}"
            if kind == "act":
                acc.append((yield note(path, tag)))
            elif kind == "flaky":
                acc.append((yield flaky(path, tag)))
            elif kind == "slow":
                acc.append((yield slow(path, tag)))
            elif kind == "sleep":
                yield rk.sleep(arg)
            elif kind == "sig":
                acc.append(["sig", (yield rk.wait_signal("go"))])
            elif kind == "hold":  # a signal nobody sends: the run waits here for its control
                yield rk.wait_signal("never")
            elif kind == "child":
                acc.append(["child", (yield rk.child_workflow(flow, path, arg, False))])
            elif kind == "can":
                yield rk.continue_as_new(path, plan[i + 1:], catch, base + i + 1, acc)
            elif kind == "side":
                acc.append(["side", (yield rk.side_effect(lambda: uuid.uuid4().hex[:8]))])
            elif kind == "status":
                ctx.set_status({"op": base + i})
        acc.append((yield note(path, f"{wid}:end")))
    except rk.Cancelled:
        if not catch:
            raise
        acc.append(["comp", (yield note(path, f"{wid}:comp"))])
    return acc


def expected(wid: str, plan: list[list[Any]]) -> list[Any]:
    acc: list[Any] = []
    sig = itertools.count()
    for i, (kind, _) in enumerate(plan):
        tag = f"{wid}:{i}"
        if kind in ("act", "flaky", "slow"):
            acc.append(tag)
        elif kind == "sig":
            acc.append(["sig", next(sig)])
        elif kind in ("child", "side"):
            acc.append([kind, None])
    acc.append(f"{wid}:end")
    return acc


def shape(result: Any) -> Any:
    out: list[Any] = []
    for item in result:
        if isinstance(item, str):
            out.append(item.split("|")[0])
        elif item[0] in ("side", "child", "comp"):
            out.append([item[0], None])
        else:
            out.append(list(item))
    return out


_LEAF_OPS = st.one_of(st.just(["act", None]), st.tuples(st.just("sleep"), st.integers(1, 50)).map(list),
                      st.just(["side", None]), st.just(["status", None]), st.just(["flaky", None]))
_OPS = st.one_of(_LEAF_OPS, st.just(["sig", None]), st.just(["can", None]), st.just(["slow", None]),
                 st.tuples(st.just("child"), st.lists(_LEAF_OPS, min_size=1, max_size=2)).map(list))
# A run's control: (what, by the engine or the store, at which move, the workflow catches Cancelled)
_CONTROLS = st.tuples(st.sampled_from(["none", "pause", "cancel", "terminate", "timeout"]),
                      st.sampled_from(["engine", "store"]), st.integers(0, 5), st.booleans())
_RUNS = st.lists(st.tuples(st.lists(_OPS, min_size=1, max_size=4), _CONTROLS,
                           st.sampled_from(["now", "delay", "at"])), min_size=1, max_size=3)


class Stats:
    examples = 0
    lost = 0
    lost_twice = 0


def lose_commits(engine: rk.Engine, at: set[int]) -> list[int]:
    """The driver's commits numbered in ``at`` (counting those with something to commit) are rolled back
    by SQLite before the store is asked to commit them (as ``helpers.lose_a_commit``)."""
    commit = engine.store.commit
    counter = itertools.count(1)
    lost: list[int] = []

    def failing() -> None:
        conn = engine.store._local.conn  # type: ignore[attr-defined]
        if threading.current_thread() is engine._thread and conn.in_transaction:
            n = next(counter)
            if n in at:
                lost.append(n)
                conn.execute("ROLLBACK")
        commit()

    engine.store.commit = failing  # type: ignore[method-assign]
    return lost


def _quietly(action: Callable[[], Any]) -> None:
    """A control on a run that ended, was never started or was not paused, is refused: that is fine here."""
    try:
        action()
    except (IllegalTransitionError, rk.WorkflowNotFoundError, ResultTimeoutError):
        pass


def scenario(tmp: Path, runs: list[Any], lose_at: set[int], cache1: int | None, cache2: int | None,
             moves: int, rounds: int) -> list[str]:
    db, path = str(tmp / "s.db"), str(tmp / "journal")
    problems: list[str] = []
    wids = [f"r{k}" for k in range(len(runs))]
    plans, controls, starts = {}, {}, {}
    for wid, (plan, control, start) in zip(wids, runs, strict=True):
        what, _, _, _ = control
        plans[wid] = plan + [["hold", None]] if what in ("cancel", "terminate", "timeout") else plan
        controls[wid], starts[wid] = control, start
    sigs = {wid: sum(1 for kind, _ in plans[wid] if kind == "sig") for wid in wids}
    sent = dict.fromkeys(wids, 0)
    applied: set[str] = set()  # runs whose control was asked for
    resumed: set[str] = set()
    reader = rk.SqliteStore(db)
    clock = FakeClock(1_000_000.0)

    def start_options(wid: str, now: float) -> dict[str, Any]:
        what, _, _, _ = controls[wid]
        options: dict[str, Any] = {"workflow_id": wid}
        if what == "timeout":
            options["timeout"] = 60
        if starts[wid] == "delay":
            options["start_delay"] = 30
        elif starts[wid] == "at":
            options["start_at"] = datetime.fromtimestamp(now + 45, tz=timezone.utc)
        return options

    def committed(wid: str, statuses: tuple[rk.Status, ...], value: Any, what: str) -> None:
        info = reader.info(wid)
        if info is None or info.status not in statuses:
            problems.append(f"{what} {wid}: not committed then ({info and info.status})")
            return
        if value is not None:
            last = reader.last_event(wid).value(reader.codec, wid)
            if last != value:
                problems.append(f"{what} {wid}: {value!r}, committed {last!r}")

    def on_event(event: Any) -> None:
        try:
            wid = event.workflow_id
            if event.kind == "run_completed":
                committed(wid, (rk.Status.COMPLETED,), None, "hook run_completed told of")
            elif event.kind in ("run_cancelled", "run_timed_out"):
                committed(wid, (rk.Status.CANCELLED, rk.Status.TIMED_OUT), None, f"hook {event.kind} told of")
            elif event.kind == "step_completed" and event.command.startswith("activity"):
                events = list(reader.events(wid))
                generation = 1 if not events else events[0].value(reader.codec, wid).get("generation", 1)
                if generation == event.generation and not any(
                        e.step == event.step and e.kind == "activity" for e in events):
                    problems.append(f"hook step_completed told of {wid} step {event.step}, which is not committed")
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"hook check failed: {exc!r}")

    def control(engine: rk.Engine, wid: str, move: int, last: bool) -> None:
        what, via, at, _ = controls[wid]
        if what == "pause" and wid in applied and wid not in resumed and (move >= at + 2 or last):
            resumed.add(wid)
            _quietly(lambda: engine.resume(wid) if via == "engine" else rk.resume(db, wid, at=clock.now()))
        if wid in applied or (move < at and not last) or what in ("none", "timeout"):
            return
        applied.add(wid)
        if what == "pause":
            _quietly(lambda: engine.pause(wid) if via == "engine" else rk.pause(db, wid, at=clock.now()))
        elif what == "cancel":
            _quietly(lambda: engine.cancel(wid) if via == "engine" else rk.cancel(db, wid, at=clock.now()))
        elif what == "terminate":
            _quietly(lambda: engine.terminate(wid, wait=3) if via == "engine"
                     else rk.terminate(db, wid, at=clock.now(), wait=3))

    reported: dict[str, Any] = {}
    not_started = list(wids)
    engine = rk.Engine(db, clock=clock, max_cached_runs=cache1, poll_interval=0.02)
    try:
        for kind in ("run_completed", "run_cancelled", "run_timed_out", "step_completed"):
            engine.on(kind, on_event)
        lost = lose_commits(engine, lose_at)
        handles: dict[str, Any] = {}
        for round_ in range(rounds):
            if round_:
                if not lost:
                    break
                handles.update({h.workflow_id: h for h in engine.recover() if "/" not in h.workflow_id})
            for wid in list(not_started):
                try:
                    handles[wid] = engine.start(flow, path, plans[wid], controls[wid][3],
                                                **start_options(wid, clock.now()))
                    not_started.remove(wid)
                except rk.StoreError:
                    pass
            for move in range(moves + 1):
                for wid in wids:
                    if wid not in not_started:
                        control(engine, wid, move, last=False)
                    if wid not in not_started and sent[wid] < sigs[wid] and move % 2 == 0:
                        _quietly(lambda w=wid: engine.signal(w, "go", sent[w]))
                        sent[wid] += 1
                clock.advance_to(clock.now() + 20)
                time.sleep(0.01)
        for wid, handle in handles.items():
            try:
                value = handle.result(timeout=0.3)
            except (rk.StoreError, ResultTimeoutError):
                continue
            except (rk.WorkflowCancelled, rk.WorkflowTimedOut):
                committed(wid, (rk.Status.CANCELLED, rk.Status.TIMED_OUT), None, "first engine's handle ended")
                continue
            except Exception as exc:  # noqa: BLE001 - reported
                problems.append(f"first engine's handle of {wid} raised {exc!r}")
                continue
            reported[wid] = value
            committed(wid, (rk.Status.COMPLETED,), value, "first engine's handle reported")
    finally:
        engine.close()
    Stats.lost += bool(lost)
    Stats.lost_twice += len(lost) == 2

    clock2 = FakeClock(clock.now())
    with rk.Engine(db, clock=clock2, max_cached_runs=cache2, poll_interval=0.02) as again:
        for wid in not_started:
            again.start(flow, path, plans[wid], controls[wid][3], **start_options(wid, clock2.now()))
        again.recover()
        for wid in wids:
            control(again, wid, 99, last=True)
            while sent[wid] < sigs[wid]:
                _quietly(lambda w=wid: again.signal(w, "go", sent[w]))
                sent[wid] += 1
        deadline = time.monotonic() + 20
        for turn in itertools.count(1):
            infos = {wid: reader.info(wid) for wid in wids}
            if all(i is not None and i.status.is_terminal for i in infos.values()):
                break
            for wid, info in infos.items():  # paused after its resume was asked (or never resumed): resumed
                if info is not None and info.status is rk.Status.PAUSED:
                    _quietly(lambda w=wid: again.resume(w))
            if time.monotonic() > deadline:
                problems.append(f"runs did not end: {[(w, i and i.status.value) for w, i in infos.items()]}")
                return problems
            if turn % 10 == 0:  # a run resumed by rk.resume (nobody drove it) waits for a recover()
                again.recover()
            clock2.advance_to(clock2.now() + 100)
            time.sleep(0.01)
    # Results.
    terminated = set()
    for wid in wids:
        what, _, _, catch = controls[wid]
        info = reader.info(wid)
        events = list(reader.events(wid))
        last = events[-1].value(reader.codec, wid) if info.status is rk.Status.COMPLETED else None
        plan_result = expected(wid, [op for op in plans[wid] if op[0] != "hold"])
        never_began = len(events) == 2 and starts[wid] != "now"  # cancelled (or ended) while pending
        if what in ("none", "pause"):
            if info.status is not rk.Status.COMPLETED:
                problems.append(f"{wid} ({what}) ended {info.status.value}: {events[-1]}")
            elif shape(last) != plan_result:
                problems.append(f"{wid} returned {shape(last)}, its plan implies {plan_result}")
        elif what == "terminate":
            terminated.add(wid)
            if info.status is not rk.Status.CANCELLED:
                problems.append(f"{wid} (terminated) ended {info.status.value}")
        elif catch and not (never_began and info.status is rk.Status.CANCELLED):
            if info.status is not rk.Status.COMPLETED:
                problems.append(f"{wid} ({what}, caught) ended {info.status.value}: {events[-1]}")
            elif shape(last)[-1] != ["comp", None] or shape(last)[:-1] != plan_result[:len(last) - 1]:
                problems.append(f"{wid} ({what}, caught) returned {shape(last)}; its plan implies a prefix of "
                                f"{plan_result[:-1]} then a compensation")
        else:
            want = rk.Status.TIMED_OUT if what == "timeout" else rk.Status.CANCELLED
            if info.status is not want:
                problems.append(f"{wid} ({what}) ended {info.status.value}, not {want.value}")
        if wid in reported and reported[wid] != last:
            problems.append(f"the first engine's handle of {wid} reported {reported[wid]!r}, recorded {last!r}")
    for info in reader.list():
        parent = info.workflow_id.split("/")[0].split("#")[0]  # (a later generation's child: r0#2/3)
        if "/" in info.workflow_id and controls[parent][0] in ("none", "pause") and \
                info.status is not rk.Status.COMPLETED:
            problems.append(f"child {info.workflow_id} ended {info.status.value}")
    # Activities: none ran again after its result was recorded.
    recorded: dict[str, str] = {}
    for info in reader.list():
        wid = info.workflow_id
        for e in (e for g in reader.generations(wid) for e in reader.generation_events(wid, g.number)):
            if e.kind == "activity" and e.outcome == "ok":
                tag, uid = e.value(reader.codec).split("|")
                recorded[tag] = uid
    lines = [line.split() for line in read_journal(path)]
    ended_at = {(w[1], w[2]): n for n, w in enumerate(lines) if w[0] == "end"}
    for n, words in enumerate(lines):
        if words[0] == "start" and words[1] in recorded and words[2] != recorded[words[1]]:
            done = ended_at.get((words[1], recorded[words[1]]))
            if done is not None and n > done:
                problems.append(f"{words[1]} ran again ({words[2]}) after the copy recorded ({recorded[words[1]]}) "
                                "ended")
    for report in replay_all(db, workflows=[flow]):
        if not report.ok and report.workflow_id not in terminated:
            problems.append(f"{report.workflow_id} does not replay: {report.error}")
    reader.close()
    return problems


_EXAMPLES = int(os.environ.get("LCC_EXAMPLES", "60"))


@hypothesis.settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(runs=_RUNS, first=st.integers(1, 14), second=st.one_of(st.none(), st.integers(1, 10)),
                  cache1=st.sampled_from([0, None]), cache2=st.sampled_from([0, None]), moves=st.integers(1, 6),
                  rounds=st.integers(1, 3))
def test_lost_commits_under_controls_keep_the_promise(tmp_path_factory: Any, runs: list[Any], first: int,
                                                      second: int | None, cache1: int | None, cache2: int | None,
                                                      moves: int, rounds: int) -> None:
    tmp = tmp_path_factory.mktemp("lcx")
    Stats.examples += 1
    lose_at = {first} if second is None else {first, first + second}
    problems = scenario(tmp, runs, lose_at, cache1, cache2, moves, max(rounds, 2) if second else rounds)
    if os.environ.get("LC_REPORT"):
        print(f"examples {Stats.examples} lost {Stats.lost} twice {Stats.lost_twice}", flush=True)
    assert not problems, "\n".join(problems)


if os.environ.get("LC_SEED"):
    test_lost_commits_under_controls_keep_the_promise = hypothesis.seed(int(os.environ["LC_SEED"]))(
        test_lost_commits_under_controls_keep_the_promise)
