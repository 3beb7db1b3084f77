"""Versioning with ctx.patched, continue-as-new, delayed starts and cron schedules."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import replaykit as rk
from replaykit.store import open_store
from replaykit.store.open import is_postgres_url
from replaykit.testing import TestEnv, export_history, replay

sent: list[str] = []


@rk.activity
def send(channel: str, to: str) -> str:
    sent.append(f"{channel}:{to}")
    return channel


@rk.activity
def send_sms(to: str) -> str:
    sent.append(f"sms:{to}")
    return "sms"


@pytest.fixture(autouse=True)
def _clear() -> None:
    sent.clear()


@rk.workflow(name="notify")
def notify_v1(ctx: rk.Context, to: str):
    first = yield send("email", to)
    second = yield send("email", to)
    yield rk.wait_signal("next")
    return [first, second]


@rk.workflow(name="notify")
def notify_v2(ctx: rk.Context, to: str):
    first = yield send("email", to)
    if ctx.patched("sms-instead-of-email"):
        second = yield send_sms(to)
    else:
        second = yield send("email", to)
    yield rk.wait_signal("next")
    return [first, second]


@rk.workflow(name="notify")
def notify_v3(ctx: rk.Context, to: str):
    first = yield send("email", to)
    ctx.deprecate_patch("sms-instead-of-email")
    second = yield send_sms(to)
    yield rk.wait_signal("next")
    return [first, second]


def test_runs_from_before_a_patch_keep_the_old_path_new_ones_take_the_new(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(notify_v1, "ann", workflow_id="old")  # past the changed point when the code changes
        wait_for(lambda: recorded_activities(engine, "old") == 2)  # recorded, not only run
    rk.send_signal(any_db, "old", "next")
    assert rk.run(notify_v2, "ann", workflow_id="old", db=any_db) == ["email", "email"]
    with rk.Engine(any_db) as engine:
        handle = engine.start(notify_v2, "bo", workflow_id="new")
        engine.signal("new", "next")
        assert handle.result(timeout=10) == ["email", "sms"]
    with open_store(any_db) as store:
        markers = [(e.kind, e.name) for e in store.events("new") if e.kind == "patch"]
        assert markers == [("patch", "sms-instead-of-email")]
        assert not [e for e in store.events("old") if e.kind == "patch"]
    # Both histories replay under v2. Under v3 (patch deprecated) the histories with the marker replay;
    # the old one does not, which is why a patch stays until no run without its marker is left.
    assert replay(notify_v2, export_history(any_db, "old")).ok and replay(notify_v2, export_history(any_db, "new")).ok
    assert replay(notify_v3, export_history(any_db, "new")).ok
    with pytest.raises(rk.NonDeterminismError):
        replay(notify_v3, export_history(any_db, "old"))
    # Finding runs still on old code: unfinished runs without the marker.
    assert rk.runs_without_patch(any_db, "sms-instead-of-email") == []


def test_finding_runs_still_on_old_code(any_db: str) -> None:
    with rk.Engine(any_db) as engine:
        engine.start(notify_v1, "cy", workflow_id="still-old")
        engine.start(notify_v2, "di", workflow_id="already-new")
        wait_for(lambda: recorded_activities(engine, "still-old") == recorded_activities(engine, "already-new") == 2)
    assert rk.runs_without_patch(any_db, "sms-instead-of-email") == ["still-old"]


def generations(db: str, workflow_id: str) -> list[tuple[int, str]]:
    """(generation, status) of each run of the id, oldest first: no public API lists the older generations."""
    if is_postgres_url(db):
        import psycopg

        with psycopg.connect(db) as conn:
            rows = conn.execute("SELECT generation, status FROM replaykit_runs WHERE workflow_id = %s "
                                "ORDER BY generation", (workflow_id,)).fetchall()
    else:
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT generation, status FROM runs WHERE workflow_id = ? ORDER BY generation",
                                (workflow_id,)).fetchall()
        finally:
            conn.close()
    return [(int(g), str(s)) for g, s in rows]


def recorded_activities(engine: rk.Engine, workflow_id: str) -> int:
    return [e.kind for e in engine.store.events(workflow_id)].count("activity")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@rk.workflow(name="monitor")
def monitor(ctx: rk.Context, checks_done: int, history_limit: int):
    for _ in range(history_limit):
        if checks_done == 25:
            return f"stopped after {checks_done} checks"
        yield rk.sleep(timedelta(minutes=5))
        checks_done += 1
    yield rk.continue_as_new(checks_done, history_limit)


def test_continue_as_new_keeps_the_id_and_starts_a_fresh_history(any_db: str) -> None:
    with TestEnv(db=any_db) as env:
        assert env.run(monitor, 0, 10, workflow_id="mon") == "stopped after 25 checks"
        history = env.history("mon")
    assert history[0].value()["args"] == [20, 10] and len(history) == 2 + 5
    assert generations(any_db, "mon") == [(1, "continued"), (2, "continued"), (3, "completed")]
    assert rk.run(monitor, 0, 10, workflow_id="mon", db=any_db) == "stopped after 25 checks"  # rerun: recorded result


@rk.activity
def tick(n: int) -> int:
    return n


@rk.workflow(name="loops.many_generations")
def many_generations(ctx: rk.Context, n: int, last: int) -> rk.Flow[int]:
    yield tick(n)  # answered at once (inline): the next generation follows in the same driver turn
    if n < last:
        yield rk.continue_as_new(n + 1, last)
    return n


def test_thousands_of_generations_do_not_overflow_the_stack() -> None:
    with rk.Engine(rk.MemoryStore(), activity_threads=0) as engine:  # inline activities, as rk.run runs them
        assert engine.start(many_generations, 1, 3000, workflow_id="many").result(timeout=120) == 3000
        assert len(engine.store.generations("many")) == 3000


closing: list[rk.Engine] = []


@rk.workflow(name="loops.closes_its_engine")
def closes_its_engine(ctx: rk.Context, n: int) -> rk.Flow[int]:
    if n == 0 and not ctx.is_replaying:
        closing[0].close()  # from the driver: the engine stops once this turn ends, the next generation unopened
    if n < 1:
        yield rk.continue_as_new(n + 1)
    yield rk.sleep(0)
    return n


def test_an_engine_closed_before_the_next_generation_opens_leaves_it_to_the_next_engine() -> None:
    store = rk.MemoryStore()
    first = rk.Engine(store)
    closing.append(first)
    first.start(closes_its_engine, 0, workflow_id="gap")
    first._thread.join(10)
    assert not first._thread.is_alive() and store.lock_owner("gap") is None  # its lock was given up
    with rk.Engine(store, workflows=[closes_its_engine]) as second:
        (resumed,) = second.recover()
        assert resumed.result(timeout=10) == 1


@rk.activity
def pauses_itself() -> None:
    info = rk.activity_info()
    rk.pause(pausing_store[0], info.workflow_id)  # a pause that arrives during the run's last step


pausing_store: list[rk.Store] = []


@rk.workflow(name="loops.paused_while_continuing")
def paused_while_continuing(ctx: rk.Context, n: int) -> rk.Flow[int]:
    if n == 0:
        yield pauses_itself()
        yield rk.continue_as_new(n + 1)
    yield rk.sleep(0)
    return n


def test_a_pause_during_the_step_before_continue_as_new_holds_the_next_generation() -> None:
    store = rk.MemoryStore()
    pausing_store.append(store)
    with rk.Engine(store) as engine:
        handle = engine.start(paused_while_continuing, 0, workflow_id="held")
        wait_for(lambda: len(store.generations("held")) >= 2)
        time.sleep(0.2)  # time enough to run the next generation, were it not paused
        assert [g.status for g in store.generations("held")] == [rk.Status.CONTINUED, rk.Status.PAUSED]
        assert [e.kind for e in store.events("held")] == ["start"]
        engine.resume("held")
        assert handle.result(timeout=10) == 1


@rk.workflow(name="loops.continues_wrongly")
def continues_wrongly(ctx: rk.Context, n: int) -> rk.Flow[int]:
    yield tick(n)
    yield rk.continue_as_new(n, "one too many")
    return n


def test_continuing_with_arguments_the_workflow_cannot_take_fails_the_run() -> None:
    with rk.Engine(rk.MemoryStore()) as engine:
        with pytest.raises(rk.WorkflowFailed, match="cannot be started with these arguments"):
            engine.start(continues_wrongly, 1, workflow_id="wrong").result(timeout=10)
        assert [g.status for g in engine.store.generations("wrong")] == [rk.Status.FAILED]  # nothing recorded beyond


def test_continue_as_new_survives_a_crash_anywhere_in_its_last_run() -> None:
    from replaykit.testing.crashes import assert_survives_crashes

    assert assert_survives_crashes(monitor, 0, 10).value == "stopped after 25 checks"


def test_a_growing_history_is_warned_about(any_db: str, caplog: pytest.LogCaptureFixture) -> None:
    @rk.workflow(name="chatty")
    def chatty(ctx: rk.Context):
        for _ in range(30):
            yield rk.sleep(1)

    with TestEnv(db=any_db) as env:
        env.engine._history_warning = 20
        with caplog.at_level(logging.WARNING, logger="replaykit"):
            env.run(chatty, workflow_id="chatty")
    warnings = [r.getMessage() for r in caplog.records if "continue_as_new" in r.getMessage()]
    assert len(warnings) == 1 and "'chatty' has 21 events" in warnings[0]


def test_delayed_start_is_durable_across_restarts(any_db: str) -> None:
    @rk.workflow(name="delayed")
    def delayed(ctx: rk.Context):
        return ctx.now().timestamp()
        yield  # pragma: no cover

    from replaykit.testing.timeskip import FakeClock

    # Fake clocks: time moves only when the test says so, or while somebody waits for a result. The
    # first engine cannot reach the due time however long it takes to close (on a real clock, a slow
    # close let it start the run itself), and the second one is shown the run pending before it is due.
    created = time.time()
    with rk.Engine(any_db, clock=FakeClock(created)) as engine:
        handle = engine.start(delayed, workflow_id="d", start_delay=0.5)
        assert handle.status() is rk.Status.PENDING
    restarted = FakeClock(created + 0.1)  # a restart before the start is due
    with rk.Engine(any_db, workflows=[delayed], clock=restarted) as engine:
        [handle] = engine.recover()
        assert handle.status() is rk.Status.PENDING and restarted.now() == created + 0.1  # not started early
        started_at = handle.result(timeout=10)  # waiting lets the clock skip to the next due time
    # Exactly when due (the store keeps times to the microsecond), and not later: the clock skipped there.
    assert started_at == pytest.approx(created + 0.5, abs=1e-5) == restarted.now()
    assert handle.status() is rk.Status.COMPLETED


@rk.workflow(name="report")
def report(ctx: rk.Context, kind: str):
    fire = datetime.fromisoformat(ctx.workflow_id.split("@")[1])  # the schedule names runs by fire time
    yield send("report", f"{kind}@{fire:%Y-%m-%d %H:%M}")


def test_cron_schedule_starts_each_fire_once_in_order(any_db: str) -> None:
    with TestEnv(db=any_db, start=datetime(2030, 1, 1, tzinfo=timezone.utc)) as env:
        env.engine.schedule("nightly", report, "0 3 * * *", "sales")
        env.sleep(timedelta(days=3, hours=4))
        assert sent == ["report:sales@2030-01-01 03:00", "report:sales@2030-01-02 03:00",
                        "report:sales@2030-01-03 03:00", "report:sales@2030-01-04 03:00"]
        runs = sorted(i.workflow_id for i in env.store.list() if i.workflow_id.startswith("schedule:nightly@"))
        assert runs[0] == "schedule:nightly@2030-01-01T03:00:00+00:00" and len(runs) == 4
    with pytest.raises(ValueError, match="invalid cron expression"):
        TestEnv().engine.schedule("bad", report, "every tuesday")


def test_a_crashed_schedule_catches_up_without_doubling(any_db: str) -> None:
    with TestEnv(db=any_db, start=datetime(2030, 1, 1, tzinfo=timezone.utc)) as env:
        env.engine.schedule("hourly", report, "0 * * * *", "ops")
        env.sleep(timedelta(hours=2, minutes=30))
    assert len(sent) == 2
    # The process was down for three hours; on restart the missed fires run, once each.
    with TestEnv(db=any_db, start=datetime(2030, 1, 1, 5, 30, tzinfo=timezone.utc)) as env:
        env.engine.recover()
        env.sleep(timedelta(minutes=1))
    assert sent == [f"report:ops@2030-01-01 0{h}:00" for h in (1, 2, 3, 4, 5)]


SCHEDULE_CHILD = """
import sys, replaykit as rk

@rk.workflow(name="later-report")
def later_report(ctx):
    return "sent"
    yield

with rk.Engine(sys.argv[1], workflows=[later_report]) as engine:
    if sys.argv[2] == "start":
        engine.schedule("yearly", later_report, "0 0 1 1 *")
    else:
        assert "replaykit.schedule" not in sys.modules  # a fresh process that never asked for schedules
        handles = engine.recover()
        print([h.workflow_id for h in handles], handles[0].status().value)
"""


def test_a_stored_schedule_resumes_in_a_process_that_never_imported_schedules(
        db: str, child_env: dict[str, str]) -> None:
    # The schedule workflow registers itself when a stored run names it, not with import replaykit.
    def child(what: str) -> str:
        done = subprocess.run([sys.executable, "-c", SCHEDULE_CHILD, db, what], env=child_env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    child("start")
    assert child("recover") == "['schedule:yearly'] running"


class Lifecycle(RuleBasedStateMachine):
    """Statuses change only along legal transitions; terminal statuses are absorbing."""

    def __init__(self) -> None:
        super().__init__()
        self.store = rk.MemoryStore()
        self.store.create("w", "x", rk.Event(0, 0, "start", "x", 0.0, "ok", "json", "{}"))
        self.status = rk.Status.RUNNING
        self.history = [self.status]

    @rule(to=st.sampled_from(list(rk.Status)))
    def move(self, to: rk.Status) -> None:
        legal = self.status is to or self.status.can_become(to)
        try:
            self.store.set_status("w", to, 1.0)
        except rk.IllegalTransitionError:
            assert not legal
        else:
            assert legal
            self.status = to
            self.history.append(to)

    @precondition(lambda self: self.status.is_terminal)
    @rule()
    def terminal_is_absorbing(self) -> None:
        for other in rk.Status:
            if other is not self.status:
                with pytest.raises(rk.IllegalTransitionError):
                    self.store.set_status("w", other, 2.0)

    @invariant()
    def store_agrees(self) -> None:
        assert self.store.info("w").status is self.status  # type: ignore[union-attr]


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=60, stateful_step_count=15, deadline=None)



@rk.workflow(name="controllable")
def controllable(ctx: rk.Context):
    while True:
        order = yield rk.wait_signal("order")
        if order == "finish":
            return "finished"
        if order == "fail":
            raise RuntimeError("told to fail")
        yield send("work", order)


class EngineLifecycle(RuleBasedStateMachine):
    """Pause, resume, cancel, finish and fail a real run in any order: only legal transitions
    happen, illegal operations are refused, and a terminal run stays terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.env = TestEnv(warn_nondeterminism=False, freeze_time=False).__enter__()
        self.handle = self.env.start(controllable, workflow_id="c")
        self.seen = [rk.Status.RUNNING]

    def teardown(self) -> None:
        self.env.close()

    def status(self) -> rk.Status:
        deadline = time.monotonic() + 5
        while True:  # let the driver apply what was asked
            self.env.sleep(0)
            status = self.handle.status()
            if status.is_terminal or not self.expect_end:
                return status
            assert time.monotonic() < deadline, f"the run should have ended but is {status.value}"
            time.sleep(0.005)

    expect_end = False
    ordered_while_paused = False

    @rule(op=st.sampled_from(["pause", "resume", "cancel"]))
    def operate(self, op: str) -> None:
        before = self.handle.status()
        try:
            getattr(self.env.engine, op)("c")
        except rk.IllegalTransitionError:
            assert before.is_terminal or (op == "resume" and before is not rk.Status.PAUSED)
            return
        assert not before.is_terminal
        self.expect_end = op == "cancel"  # a cancelled run ends (it does not catch Cancelled)
        self.record(self.status())
        if op == "cancel":  # it ends: cancelled, unless an order signalled earlier (while paused) came first
            assert self.seen[-1] is rk.Status.CANCELLED or (self.ordered_while_paused and self.seen[-1].is_terminal)

    @rule(order=st.sampled_from(["finish", "fail", "more"]))
    def order(self, order: str) -> None:
        before = self.handle.status()
        if before.is_terminal:
            return
        self.env.signal("c", "order", order)
        self.ordered_while_paused |= before is rk.Status.PAUSED and order != "more"
        self.expect_end = order in ("finish", "fail") and before is not rk.Status.PAUSED
        self.record(self.status())

    def record(self, status: rk.Status) -> None:
        last = self.seen[-1]
        assert status is last or last.can_become(status), f"{last.value} -> {status.value}"
        self.seen.append(status)

    @invariant()
    def terminal_is_absorbing(self) -> None:
        ends = [i for i, s in enumerate(self.seen) if s.is_terminal]
        if ends:
            assert all(s is self.seen[ends[0]] for s in self.seen[ends[0]:])


TestEngineLifecycle = EngineLifecycle.TestCase
TestEngineLifecycle.settings = settings(max_examples=25, stateful_step_count=10, deadline=None)
