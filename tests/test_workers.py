"""Clients and workers sharing one store (an SQLite file, a PostgreSQL database): runs are claimed,
handed back when they park, controlled from the client, taken over when a worker dies, and
released when one stops. Worker processes are real (tests/worker_app.py), killed with SIGKILL.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_app import WORKFLOWS, order, parent, quick, sleeper

import replaykit as rk

from conftest import PYTHON, ROOT


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store several processes share: an SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "shared.db")


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("RK_LEDGER", str(path))
    return path


@pytest.fixture
def client(shared: str) -> Iterator[rk.Client]:
    with rk.Client(shared) as c:
        yield c


def lines(ledger: Path) -> list[list[str]]:
    return [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() else []


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def worker(shared: str, **options: object) -> rk.Worker:
    return rk.Worker(shared, workflows=WORKFLOWS, heartbeat=0.1, **options)  # type: ignore[arg-type]


class Processes:
    """Worker processes of one test, killed at its end."""

    def __init__(self, shared: str, env: dict[str, str]) -> None:
        self.shared, self.env = shared, env
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen([PYTHON, str(ROOT / "tests" / "worker_app.py"), self.shared, *args],
                                env={**self.env, **(env or {})}, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def processes(shared: str, child_env: dict[str, str], ledger: Path) -> Iterator[Processes]:
    p = Processes(shared, dict(child_env, RK_LEDGER=str(ledger)))
    yield p
    p.close()


def test_a_client_and_two_worker_processes_drive_every_run_once(client: rk.Client, processes: Processes,
                                                                ledger: Path) -> None:
    a, b = processes.start("default", "--concurrency", "2"), processes.start("default", "--concurrency", "2")
    assert sorted(w.pid for w in client.workers()) == sorted([a.pid, b.pid])
    handles = [client.start(order, n, 0.05, workflow_id=f"o-{n}") for n in range(30)]
    for n in range(30):
        client.signal(f"o-{n}", "approved", True)
    assert [h.result(timeout=60) for h in handles] == [2 * n for n in range(30)]
    steps = Counter((name, n) for name, n, *_ in lines(ledger))
    assert set(steps) == {(name, str(n)) for name in ("charge", "ship") for n in range(30)}
    assert max(steps.values()) == 1  # no activity ran twice
    # Six runs of 0.3 s each, two at a time per worker: one worker alone would keep four waiting.
    slow_ones = [client.start(quick, n, 0.3, workflow_id=f"s-{n}") for n in range(6)]
    assert [h.result(timeout=60) for h in slow_ones] == [n + 1 for n in range(6)]
    by_worker = {pid for name, _, pid, *_ in lines(ledger) if name == "quick"}
    assert by_worker == {str(a.pid), str(b.pid)}  # both took work


def test_a_parked_run_is_handed_back_and_any_worker_finishes_it(shared: str, client: rk.Client,
                                                                ledger: Path) -> None:
    first = worker(shared)
    handle = client.start(sleeper, 7, 0.5, workflow_id="s")
    wait_for(lambda: lines(ledger))  # "before" ran: the run now sleeps
    wait_for(lambda: not first.holds("s"))
    assert [w.runs for w in client.workers()] == [()]  # not pinned to the worker that opened it
    first.stop()
    with worker(shared) as second:
        assert handle.result(timeout=20) == 7
        wait_for(lambda: not second.holds("s"))  # the result commits before the worker lets the run go
    assert [line[0] for line in lines(ledger)] == ["before", "after"]


def test_children_are_queued_and_wake_their_parent(shared: str, client: rk.Client) -> None:
    with worker(shared):
        assert client.start(parent, 4, workflow_id="p").result(timeout=20) == 50
    assert client.handle("p/1").result(timeout=1) == 5


def test_client_controls_reach_runs_nobody_holds(shared: str, client: rk.Client) -> None:
    with worker(shared) as w:
        cancelled = client.start(order, 1, 0.0, workflow_id="cancel-me")
        paused = client.start(order, 2, 0.0, workflow_id="pause-me")
        wait_for(lambda: not w.holds("cancel-me") and not w.holds("pause-me")
                 and len(list(client.store.events("pause-me"))) >= 3)  # both wait for their signal
        client.cancel("cancel-me", "no longer wanted")
        with pytest.raises(rk.WorkflowCancelled, match="no longer wanted"):
            cancelled.result(timeout=20)
        client.pause("pause-me")
        client.signal("pause-me", "approved", True)
        time.sleep(0.5)  # a paused run is not taken, however it is woken
        assert client.handle("pause-me").status() is rk.Status.PAUSED
        client.resume("pause-me")
        assert paused.result(timeout=20) == 4


def test_a_run_a_worker_holds_is_terminated_by_that_worker(shared: str, client: rk.Client, ledger: Path) -> None:
    with worker(shared) as w:
        handle = client.start(quick, 3, 1.0, workflow_id="slow")
        wait_for(lambda: w.holds("slow"))  # its activity runs (one second)
        client.terminate("slow", "too slow")  # the worker holds its lock: it is asked to end it
        with pytest.raises(rk.WorkflowTerminated, match="too slow"):
            handle.result(timeout=20)
        wait_for(lambda: lines(ledger))  # the activity finished after the end: its answer is not recorded
        time.sleep(0.2)
        assert not w.holds("slow")
    assert [e.kind for e in client.store.events("slow")] == ["start", "result"]


def test_a_cancellation_made_before_any_worker_is_applied_when_one_opens_the_run(
        shared: str, client: rk.Client) -> None:
    """A cancellation requested while no worker runs is applied by the first worker that opens the run
    (test_client_controls_reach_runs_nobody_holds is the one where a worker's poll saw it first)."""
    waiting = client.start(order, 1, 0.0, workflow_id="cancelled-early")
    client.cancel("cancelled-early", "before any worker")
    with worker(shared):
        with pytest.raises(rk.WorkflowCancelled, match="before any worker"):
            waiting.result(timeout=20)


_BLOCKED_ONCE: list[str] = []


@rk.activity(name="stall_the_next_insert")
def _stall_the_next_insert(url: str, workflow_id: str) -> int:
    """The first time: lock the run's row, so that the insert recording this activity's result waits
    on the server; then end that insert's session (the write fails) and let go of the row."""
    if _BLOCKED_ONCE:
        return 2
    _BLOCKED_ONCE.append(workflow_id)
    import psycopg

    locker = psycopg.connect(url)
    locker.execute("SELECT 1 FROM replaykit_runs WHERE workflow_id = %s FOR UPDATE", (workflow_id,))

    def end_the_waiting_insert() -> None:
        with psycopg.connect(url, autocommit=True) as watcher:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                waiting = watcher.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND datname = current_database()").fetchall()
                if waiting:
                    watcher.execute("SELECT pg_terminate_backend(%s, 10000)", (waiting[0][0],))
                    break
                time.sleep(0.01)
        locker.rollback()
        locker.close()

    threading.Thread(target=end_the_waiting_insert, daemon=True).start()
    return 1


@rk.workflow(name="parks_after_a_failed_step")
def _parks_after_a_failed_step(ctx: rk.Context, url: str):  # type: ignore[no-untyped-def]
    first = yield _stall_the_next_insert(url, ctx.workflow_id)
    yield rk.sleep(0.2)
    return first


def test_a_step_lost_as_its_run_parks_runs_again_and_the_run_completes(pg_url: str) -> None:
    """Inline activities: a step's insert is sent and confirmed later, here as the run parks right
    after it. The insert fails on the server (its session ended while it waited for a row lock):
    the run is given back and its step runs again, wherever the run goes on."""
    _BLOCKED_ONCE.clear()
    with rk.Client(pg_url) as c, rk.Worker(pg_url, workflows=[_parks_after_a_failed_step], heartbeat=0.1,
                                           activity_threads=0):
        handle = c.start(_parks_after_a_failed_step, pg_url, workflow_id="parks")
        assert handle.result(timeout=30) == 2  # the step was lost, and ran again
    assert _BLOCKED_ONCE == ["parks"]


def test_a_worker_takes_only_runs_of_its_queues_and_workflows(shared: str, client: rk.Client) -> None:
    @rk.workflow(name="nobody-serves-this")
    def unknown(ctx: rk.Context):
        yield rk.sleep(0)
        return 1

    other_queue = client.start(quick, 1, workflow_id="elsewhere", queue="other")
    not_ours = client.start(unknown, workflow_id="unknown")
    with worker(shared) as w:
        done = client.start(quick, 2, workflow_id="ours")
        assert done.result(timeout=20) == 3
        assert not w.holds("elsewhere") and not w.holds("unknown")
    assert (other_queue.status(), not_ours.status()) == (rk.Status.RUNNING, rk.Status.RUNNING)
    assert len(list(client.store.events("elsewhere"))) == 1  # untouched


started = threading.Event()


@rk.activity
def slow_step(n: int) -> int:
    started.set()
    time.sleep(1.0)
    return n + 1


@rk.workflow
def slow(ctx: rk.Context, n: int):
    return (yield slow_step(n))


def test_stop_lets_running_activities_finish_and_refuses_new_starts(shared: str, client: rk.Client) -> None:
    started.clear()
    w = rk.Worker(shared, workflows=[slow], heartbeat=0.1, grace=20.0)
    handle = client.start(slow, 5, workflow_id="slow")
    assert started.wait(timeout=20)
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    wait_for(lambda: w.stopping)
    with pytest.raises(rk.WorkerStoppingError, match="stopping"):
        w.start(slow, 6, workflow_id="too-late")
    stopper.join(timeout=30)
    assert handle.result(timeout=1) == 6  # its activity finished within the grace period, and was recorded
    assert client.workers() == []


def test_stop_after_the_grace_period_hands_the_run_to_the_next_worker(shared: str, client: rk.Client,
                                                                      ledger: Path) -> None:
    w = worker(shared)
    handle = client.start(quick, 5, 2.0, workflow_id="slow")
    wait_for(lambda: w.holds("slow"))
    w.stop(grace=0.1)
    assert handle.status() is rk.Status.RUNNING and client.workers() == []
    with worker(shared):
        assert handle.result(timeout=20) == 6


def test_a_killed_worker_loses_its_run_to_another(client: rk.Client, processes: Processes, ledger: Path) -> None:
    doomed = processes.start("default", env={"RK_HANG": "quick"})  # its activity runs until it is killed
    handle = client.start(quick, 9, workflow_id="k")
    wait_for(lambda: [w.runs for w in client.workers()] == [("k",)])  # it holds the run
    survivor = processes.start("default")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    assert handle.result(timeout=30) == 10
    assert [line[2] for line in lines(ledger)] == [str(survivor.pid)]  # the killed one never finished it
    assert [w.pid for w in client.workers()] == [survivor.pid]  # the dead one was reaped


def test_sigterm_stops_a_worker_process_gracefully(client: rk.Client, processes: Processes) -> None:
    proc = processes.start("default")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out.strip()) == (0, "stopped")
    assert client.workers() == []


def test_code_that_cannot_replay_is_reported_once_and_left_to_the_next_version(
        shared: str, client: rk.Client, caplog: pytest.LogCaptureFixture) -> None:
    replays: Counter[str] = Counter()

    def deploy(version: str, first: str) -> rk.Workflow[[], str]:
        @rk.workflow(name="deployed")
        def body(ctx: rk.Context):
            replays[version] += 1
            yield rk.sleep(0.01) if first == "sleep" else rk.wait_signal("other")
            yield rk.wait_signal("go")
            return version

        return body

    v1, broken, fixed = deploy("v1", "sleep"), deploy("broken", "signal"), deploy("fixed", "sleep")
    with rk.Worker(shared, workflows=[v1], version="1", heartbeat=0.1) as w:
        handle = client.start(v1, workflow_id="d")
        wait_for(lambda: len(list(client.store.events("d"))) == 2 and not w.holds("d"))  # slept; waits for "go"
    client.signal("d", "go")
    with caplog.at_level(logging.ERROR, logger="replaykit"), \
            rk.Worker(shared, workflows=[broken], version="2", heartbeat=0.1, poll_interval=0.05):
        wait_for(lambda: "NonDeterminismError" in caplog.text)
        time.sleep(0.5)
    assert replays["broken"] == 2  # one attempt (its replay, then the side-by-side explanation), never looped
    assert "'d'" in caplog.text and "code version 2" in caplog.text
    problem = client.store.info("d").problem  # type: ignore[union-attr]
    assert problem is not None and problem.startswith("code version 2: NonDeterminismError")  # seen by a client
    listed = subprocess.run([PYTHON, "-m", "replaykit", "list", shared], capture_output=True, text=True, timeout=60)
    assert "code version 2: NonDeterminismError" in listed.stdout, listed.stderr
    with rk.Worker(shared, workflows=[fixed], version="3", heartbeat=0.1):
        assert handle.result(timeout=20) == "fixed"
    assert client.store.info("d").problem is None  # type: ignore[union-attr]


def test_workers_list_from_the_command_line(shared: str, client: rk.Client, processes: Processes) -> None:
    proc = processes.start("default,other")
    out = subprocess.run([PYTHON, "-m", "replaykit", "workers", shared], capture_output=True, text=True,
                         timeout=60, env=processes.env)
    assert out.returncode == 0, out.stderr
    assert str(proc.pid) in out.stdout and "default,other" in out.stdout



def test_an_engine_recovering_runs_leaves_queued_runs_to_workers(shared: str, client: rk.Client) -> None:
    queued = client.start(quick, 1, workflow_id="queued")
    with rk.Engine(shared, workflows=WORKFLOWS) as engine:
        plain = engine.start(quick, 2, workflow_id="plain")
        assert plain.result(timeout=20) == 3
        assert [h.workflow_id for h in engine.recover()] == []
        engine.cancel("queued")  # a control from an engine reaches it, and the engine still does not drive it
        time.sleep(0.3)
    assert len(list(client.store.events("queued"))) == 1 and queued.status() is rk.Status.RUNNING
    assert (client.store.info("queued").queue, client.store.info("plain").queue) == ("default", None)  # type: ignore[union-attr]
    with worker(shared):
        with pytest.raises(rk.WorkflowCancelled):
            queued.result(timeout=20)


def test_a_delayed_start_is_taken_when_due(shared: str, client: rk.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: list[tuple[float, list[tuple[str, str]]]] = []  # each claim of the worker: its time, what it got
    claim = type(client.store).claim

    def recorded(store: Any, worker_id: str, queue: str, workflows: Any, capacity: int, now: float,
                 version: str) -> list[tuple[str, str]]:
        got = claim(store, worker_id, queue, workflows, capacity, now, version)
        rounds.append((now, got))
        return got

    monkeypatch.setattr(type(client.store), "claim", recorded)
    handle = client.start(quick, 3, workflow_id="later", start_delay=2.0)
    assert handle.status() is rk.Status.PENDING
    due = client.store.next_ready(["default"])  # when it is due, as the store holds it
    assert due is not None
    with worker(shared):
        wait_for(lambda: rounds)  # a claim round, before the start is due
        early = [got for now, got in rounds if now < due]
        assert early and not any(got for got in early)  # it looked, and took nothing
        assert handle.result(timeout=20) == 4
    assert [now >= due for now, got in rounds if got] == [True]  # taken once, when due


def test_an_engine_starting_a_queued_run_follows_it_without_driving_it(shared: str,
                                                                     client: rk.Client) -> None:
    handle = client.start(quick, 1, workflow_id="q")
    with rk.Engine(shared) as engine:
        followed = engine.start(quick, 1, workflow_id="q")
        with pytest.raises(rk.WorkflowConflictError, match="same arguments"):
            engine.start(quick, 2, workflow_id="q")
        time.sleep(0.3)
        assert len(list(client.store.events("q"))) == 1  # not driven by the engine
        with worker(shared):
            assert followed.result(timeout=20) == handle.result(timeout=20) == 2


def test_the_worker_command_serves_a_module_and_stops_on_sigterm(shared: str, client: rk.Client,
                                                                 child_env: dict[str, str], ledger: Path) -> None:
    proc = subprocess.Popen([PYTHON, "-m", "replaykit", "worker", shared, "-m", "worker_app", "-q", "default",
                             "--limit", "default=1"],
                            env=dict(child_env, RK_LEDGER=str(ledger)), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "serving default" in proc.stdout.readline()
        handles = [client.start(quick, n, 0.2, workflow_id=f"cli-{n}") for n in range(3)]
        assert [h.result(timeout=20) for h in handles] == [1, 2, 3]
        spans = sorted((float(start), float(end)) for _, _, _, start, end in lines(ledger))
        pairs = zip(spans, spans[1:], strict=False)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairs)  # one at a time
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert client.workers() == []
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_worker_command_sets_every_limit_and_identity(shared: str, client: rk.Client,
                                                         child_env: dict[str, str], ledger: Path) -> None:
    proc = subprocess.Popen([PYTHON, "-m", "replaykit", "worker", shared, "-m", "worker_app", "--per-key", "default=1",
                             "--rate", "default=2/600", "--worker-limit", "default=3", "--worker-id", "cli-w",
                             "--code-version", "v9", "--drivers", "2", "--durability", "power"],
                            env=dict(child_env, RK_LEDGER=str(ledger)), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "serving default" in proc.stdout.readline()
        assert [(w.worker_id, w.version) for w in client.workers()] == [("cli-w", "v9")]
        handles = [client.start(quick, n, 0.2, workflow_id=f"k-{n}", key="tenant") for n in range(3)]
        wait_for(lambda: [h.status() for h in handles].count(rk.Status.COMPLETED) == 2)
        spans = sorted((float(start), float(end)) for _, _, _, start, end in lines(ledger))
        assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # one at a time per key
        time.sleep(0.5)
        assert [h.status() for h in handles].count(rk.Status.RUNNING) == 1 and len(lines(ledger)) == 2  # 2 per 600 s
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_fork_of_a_queued_run_is_queued_for_the_workers(shared: str, client: rk.Client, ledger: Path) -> None:
    handle = client.start(order, 7, 0.0, workflow_id="forked-from")
    client.signal("forked-from", "approved", True)
    with worker(shared):
        assert handle.result(timeout=20) == 14
    rk.fork(shared, "forked-from", "forked", step=4, workflows=[order])  # steps 1-3 reused, "ship" runs again
    assert client.store.info("forked").queue == "default"  # type: ignore[union-attr]
    with worker(shared):
        assert client.handle("forked").result(timeout=20) == 14
    assert [line[:2] for line in lines(ledger)] == [["charge", "7"], ["ship", "7"], ["ship", "7"]]


def test_a_full_worker_with_a_backlog_waits_instead_of_spinning(shared: str, client: rk.Client) -> None:
    started.clear()
    asked = Counter[str]()
    with rk.Worker(shared, workflows=[slow, quick], concurrency=1, heartbeat=0.1) as w:
        real = w.store.next_ready

        def counted(queues: Any) -> float | None:
            asked["next_ready"] += 1
            return real(queues)

        w.store.next_ready = counted  # type: ignore[method-assign]
        client.start(slow, 1, workflow_id="busy")
        assert started.wait(timeout=20)  # the worker is full (concurrency 1) for a second
        for n in range(5):
            client.start(quick, n, workflow_id=f"backlog-{n}")  # ready, and nobody has room
        asked.clear()
        time.sleep(0.5)
        # It waits for room (or its poll), asking the store at most a few times; a spinning loop asked thousands.
        assert asked["next_ready"] <= 10
        assert client.handle("backlog-4").result(timeout=20) == 5


@rk.workflow
def slow_then_more(ctx: rk.Context, n: int, then: str):
    got = yield slow_step(n)
    if then == "side":
        got = yield rk.side_effect(lambda: got * 10)
    elif then == "signal":
        got = yield rk.wait_signal("go")
    else:
        got = yield rk.child_workflow(quick, got)
    return got


@pytest.mark.parametrize("then", ["side", "signal", "child"])
def test_a_run_handed_back_by_a_stopping_worker_is_ready_at_once(shared: str, client: rk.Client, then: str) -> None:
    started.clear()
    first = rk.Worker(shared, workflows=[slow_then_more, quick], heartbeat=0.1, grace=20.0)
    handle = client.start(slow_then_more, 1, then, workflow_id="next-step")
    if then == "signal":
        client.signal("next-step", "go", 7)  # already in the inbox when the run reaches its wait
    assert started.wait(timeout=20)
    first.stop()  # the activity finishes within the grace period; the next step is not started here
    with rk.Worker(shared, workflows=[slow_then_more, quick], heartbeat=0.1):
        assert handle.result(timeout=20) == {"side": 20, "signal": 7, "child": 3}[then]


def test_runs_claimed_but_not_opened_when_a_worker_stops_are_released(tmp_path: Path) -> None:
    with rk.SqliteStore(str(tmp_path / "shared.db")) as store:  # one store object, as an application shares it
        client = rk.Client(store)
        handles = [client.start(quick, n, workflow_id=f"r-{n}") for n in range(200)]
        rk.Worker(store, workflows=[quick], concurrency=200, heartbeat=0.1).stop()  # at once
        with rk.Worker(store, workflows=[quick], heartbeat=0.1):
            assert [h.result(timeout=30) for h in handles] == [n + 1 for n in range(200)]


def test_the_worker_command_refuses_a_store_that_does_not_exist(tmp_path: Path, child_env: dict[str, str]) -> None:
    missing = tmp_path / "typo.db"
    out = subprocess.run([PYTHON, "-m", "replaykit", "worker", str(missing), "-m", "worker_app"], env=child_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no replaykit store" in out.stderr
    assert not missing.exists()
    out = subprocess.run([PYTHON, "-m", "replaykit", "worker", str(missing), "-m", "worker_app", "--limit", "x=2"],
                         env=child_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--limit x: not a queue this worker serves" in out.stderr
    out = subprocess.run([PYTHON, "-m", "replaykit", "worker", str(missing), "-m", "worker_app", "--limit", "x"],
                         env=child_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "write QUEUE=N" in out.stderr


def test_worker_settings_are_checked_before_it_registers(shared: str, client: rk.Client) -> None:
    for bad in ({"drivers": 0}, {"heartbeat": 0}, {"poll_interval": -1}, {"grace": -1}, {"concurrency": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            rk.Worker(shared, workflows=[quick], **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        rk.Queue("")
    with pytest.raises(ValueError, match="non-empty"):
        client.start(quick, 1, workflow_id="no-queue", queue="")
    assert client.store.info("no-queue") is None  # nothing recorded
    assert client.workers() == []
    with rk.Worker(shared, workflows=[quick], queues="solo") as w:  # one queue named by a string
        assert [r.queues for r in client.workers()] == [("solo",)]
        assert w.start(quick, 1, workflow_id="solo-1", queue="solo").result(timeout=20) == 2


_gate = threading.Event()
_ran: list[str] = []


@rk.activity(name="gated-once")
def gated_once(label: str) -> str:
    _ran.append(label)
    _gate.wait(10)
    return label


@rk.workflow(name="engine-only")
def engine_only(ctx: rk.Context) -> Any:
    return (yield gated_once(ctx.workflow_id))


def test_a_work_row_planted_for_an_engines_run_never_makes_a_worker_run_it_again(tmp_path: Path) -> None:
    """A run an engine started has no work row, so its end clears none. A row written for it by someone
    else while it runs stays ready after its end: no worker may take the ended run up again."""
    import sqlite3

    db = str(tmp_path / "s.db")
    _gate.clear()
    _ran.clear()
    with rk.Engine(db) as engine:
        handle = engine.start(engine_only, workflow_id="mine")
        deadline = time.monotonic() + 10
        while not _ran:
            assert time.monotonic() < deadline, "the activity never started"
            time.sleep(0.01)
        with sqlite3.connect(db) as raw:  # the planted row, ready since the epoch
            raw.execute("INSERT INTO work (workflow_id, name, queue, ready_at) VALUES ('mine', 'engine-only', "
                        "'default', 0)")
        _gate.set()
        assert handle.result(timeout=10) == "mine"
    with rk.Worker(db, workflows=[engine_only]) as worker:
        time.sleep(1.0)  # many claim rounds
        assert worker.store.info("mine").status is rk.Status.COMPLETED
    assert _ran == ["mine"]
