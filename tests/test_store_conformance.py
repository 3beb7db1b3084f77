"""The Store contract (``replaykit/store/base.py``), tested once against every store: the memory,
SQLite and PostgreSQL stores must behave the same. Two store objects on one database stand for
two processes; where it matters (locks), a real process is SIGKILLed.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from replaykit.errors import IllegalTransitionError, WorkflowLockedError, WorkflowNotFoundError
from replaykit.history import CONTINUED, OK, RESULT, START, Event, Status
from replaykit.store import Store
from replaykit.store.base import RESTARTABLE

from conftest import PYTHON, Backend

PAGE = 256  # every store reads histories in pages of this many events


def start(name: str = "w", at: float = 1.0) -> Event:
    return Event(0, 0, START, name, at, OK, "json", '{"args":[],"kwargs":{},"seed":1,"rules":2}')


def step(seq: int, payload: str | bytes | None = None, at: float = 2.0) -> Event:
    if payload is None:
        payload = str(seq)
    return Event(seq, seq, "activity", "act", at, OK, "json" if isinstance(payload, str) else "pickle", payload)


def result(seq: int, at: float = 3.0, outcome: str = OK) -> Event:
    return Event(seq, 0, RESULT, "", at, outcome, "json", '"done"')


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- runs and histories ------------------------------------------------------------------


def test_create_once_per_id(store: Store) -> None:
    assert store.create("a", "w", start()) is True
    assert store.create("a", "other", start("other", at=5.0), Status.PENDING, history=[step(1)]) is False
    info = store.info("a")
    assert info is not None
    assert (info.name, info.status, info.created_at, info.updated_at, info.custom_status) == (
        "w", Status.RUNNING, 1.0, 1.0, None)
    assert list(store.events("a")) == [start()]
    assert store.info("nope") is None


def test_create_with_history_and_status(store: Store) -> None:
    history = [step(1), step(2, b"\x00\x01pickled"), step(3, '"\\u0000 text"')]
    assert store.create("a", "w", start(), Status.PENDING, history=history)
    assert list(store.events("a")) == [start(), *history]
    assert store.info("a").status is Status.PENDING  # type: ignore[union-attr]
    assert store.last_event("a") == history[-1]


@pytest.mark.parametrize("n", [PAGE - 1, PAGE, PAGE + 1, 2 * PAGE + 3])
def test_events_in_order_across_pages(store: Store, n: int) -> None:
    history = [step(seq, at=seq + 0.1) for seq in range(1, n)]
    store.create("h", "w", start(), history=history[: n // 2])
    for event in history[n // 2:]:
        store.record("h", event)
    assert list(store.events("h")) == [start(), *history]


def test_events_of_an_unknown_id_raise_at_once(store: Store) -> None:
    with pytest.raises(WorkflowNotFoundError):
        store.events("nope")
    with pytest.raises(WorkflowNotFoundError):
        store.last_event("nope")


def test_an_abandoned_read_pins_nothing(backend: Backend, store: Store) -> None:
    other = backend.open()
    store.create("h", "w", start(), history=[step(seq) for seq in range(1, 3 * PAGE)])
    reading = store.events("h")
    assert next(reading).seq == 0 and next(reading).seq == 1  # abandoned half-way, still referenced
    assert backend.open_reads() == 0
    other.record("h", step(3 * PAGE))
    assert store.last_event("h") == step(3 * PAGE)
    assert [e.seq for e in store.events("h")] == list(range(3 * PAGE + 1))
    assert next(reading).seq == 2  # the abandoned read can still go on, in order
    assert backend.open_reads() == 0


def test_last_event_is_the_newest_runs(store: Store) -> None:
    store.create("a", "w", start(), history=[step(1), step(2)])
    assert store.last_event("a") == step(2)
    store.continue_as_new("a", Event(3, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    assert store.last_event("a") == start(at=4.0)


def test_record_with_status_signal_and_custom_status_is_atomic(store: Store) -> None:
    store.create("a", "w", start())
    for n in range(3):
        store.send_signal("a", "go", "json", str(n), 1.5)
    first = store.next_signal("a", "go")
    assert first is not None
    store.record("a", step(1), consume_signal=first.id, custom_status={"stage": 1})
    second = store.next_signal("a", "go")
    assert second is not None and second.payload == "1"
    info = store.info("a")
    assert info is not None and info.custom_status == {"stage": 1} and info.status is Status.RUNNING
    # A step recorded twice is refused whole: nothing else of that write happens either.
    with pytest.raises(WorkflowLockedError):
        store.record("a", step(1), status=Status.FAILED, consume_signal=second.id, custom_status="lost")
    assert store.info("a") == info
    assert store.next_signal("a", "go") == second
    assert list(store.events("a")) == [start(), step(1)]
    store.record("a", result(2, at=9.0), status=Status.COMPLETED, consume_signal=second.id, custom_status=[2])
    done = store.info("a")
    assert done is not None
    assert (done.status, done.updated_at, done.custom_status) == (Status.COMPLETED, 9.0, [2])
    assert store.next_signal("a", "go").payload == "2"  # type: ignore[union-attr]


@pytest.mark.parametrize("held", [True, False], ids=["held", "not-held"])
def test_a_sent_step_is_recorded_in_order_and_its_refusal_raised_once(store: Store, held: bool) -> None:
    """``send`` may return before the step is recorded (PostgreSQL); the thread's next call, or
    ``confirm``, comes after it and raises what refused it, once."""
    store.create("a", "w", start())
    if held:
        assert store.try_lock("a")
    store.send("a", step(1))
    assert list(store.events("a")) == [start(), step(1)]  # a read after it sees it
    store.send("a", step(2))
    store.confirm()
    store.confirm()  # nothing left to wait for
    with pytest.raises(WorkflowLockedError):  # seq 2 exists: by confirm() at the latest
        store.send("a", step(2, payload="9"))
        store.confirm()
    store.confirm()  # raised once, not again
    store.send("a", step(3))
    store.record("a", result(4), status=Status.COMPLETED)  # a write after it commits after it
    assert [e.seq for e in store.events("a")] == [0, 1, 2, 3, 4]
    assert list(store.events("a"))[2] == step(2)  # the refused one changed nothing


@pytest.mark.parametrize("held", [True, False], ids=["held", "not-held"])
def test_opening_reads_the_row_the_history_and_a_waiting_signal(store: Store, held: bool) -> None:
    empty = store.opening("a", "stop")
    assert (empty.info, list(empty.events), empty.signal_waits) == (None, [], False)
    history = [step(n) for n in range(1, PAGE + 3)]  # more than a page
    store.create("a", "w", start(), history=history)
    store.continue_as_new("a", Event(PAGE + 3, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    store.record("a", step(1))
    if held:
        assert store.try_lock("a")
    opened = store.opening("a")
    assert opened.info == store.info("a") and list(opened.events) == [start(at=4.0), step(1)]  # the newest run
    assert opened.signal_waits is False
    store.send_signal("a", "stop", "json", "1", 6.0)
    assert store.opening("a", "stop").signal_waits is True
    assert store.opening("a", "go").signal_waits is False
    assert store.opening("a").signal_waits is False  # not asked
    waiting = store.next_signal("a", "stop")
    assert waiting is not None
    store.consume_signal(waiting.id)
    assert store.opening("a", "stop").signal_waits is False
    store.create("b", "w", start(), history=history)
    assert list(store.opening("b").events) == [start(), *history]  # read across pages


def test_continue_as_new_starts_the_next_run(store: Store) -> None:
    store.create("a", "w", start(), history=[step(1)])
    store.set_custom_status("a", "kept")
    store.send_signal("a", "later", "json", "1", 1.5)
    store.continue_as_new("a", Event(2, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    info = store.info("a")
    assert info is not None
    assert (info.status, info.created_at, info.updated_at, info.custom_status) == (
        Status.RUNNING, 4.0, 4.0, "kept")
    assert list(store.events("a")) == [start(at=4.0)]
    assert [i.workflow_id for i in store.list()] == ["a"]
    assert store.next_signal("a", "later") is not None  # signals belong to the id, not to one run
    store.record("a", step(1, at=5.0))  # seq 1 again: in the new run
    assert list(store.events("a")) == [start(at=4.0), step(1, at=5.0)]


def test_a_run_paused_as_it_continues_as_new_stays_paused(store: Store) -> None:
    store.create("a", "w", start(), history=[step(1)])
    store.set_status("a", Status.PAUSED, 2.5)  # the pause came during the step that continues it
    store.continue_as_new("a", Event(2, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    assert [g.status for g in store.generations("a")] == [Status.CONTINUED, Status.PAUSED]
    assert store.paused() == {"a"}


@pytest.mark.parametrize("status", sorted(RESTARTABLE))
def test_restart_starts_the_next_generation(store: Store, status: Status) -> None:
    store.create("a", "w", start(), history=[step(1)])
    store.set_custom_status("a", "old")
    store.record("a", result(2, outcome="error"), status=status)
    store.restart("a", start(at=7.0), history=[step(1, at=7.5)])
    info = store.info("a")
    assert info is not None
    assert (info.name, info.status, info.created_at, info.custom_status) == ("w", Status.RUNNING, 7.0, None)
    assert list(store.events("a")) == [start(at=7.0), step(1, at=7.5)]
    assert len(store.list()) == 1


def test_every_generation_is_kept_and_read_back(store: Store) -> None:
    store.create("a", "w", start(), history=[step(1)])
    store.continue_as_new("a", Event(2, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    store.record("a", result(1, at=5.0, outcome="error"), status=Status.FAILED)
    store.restart("a", start(at=7.0), history=[step(1, at=7.5)])
    assert [(g.number, g.status, g.created_at, g.updated_at) for g in store.generations("a")] == [
        (1, Status.CONTINUED, 1.0, 3.0), (2, Status.FAILED, 4.0, 5.0), (3, Status.RUNNING, 7.0, 7.0)]
    assert list(store.generation_events("a", 1)) == [
        start(), step(1), Event(2, 0, RESULT, "", 3.0, CONTINUED, "json", "null")]
    assert list(store.generation_events("a", 2)) == [start(at=4.0), result(1, at=5.0, outcome="error")]
    assert list(store.generation_events("a", 3)) == list(store.events("a")) == [start(at=7.0), step(1, at=7.5)]
    for missing in (0, 4):
        with pytest.raises(WorkflowNotFoundError, match=f"no generation {missing}"):
            store.generation_events("a", missing)
    with pytest.raises(WorkflowNotFoundError):
        store.generations("nope")
    store.create("b", "w", start(), history=[step(1)])
    assert [g.number for g in store.generations("b")] == [1]


@pytest.mark.parametrize("status", [Status.RUNNING, Status.PAUSED, Status.PENDING, Status.COMPLETED])
def test_restart_refuses_a_run_that_did_not_fail(store: Store, status: Status) -> None:
    store.create("a", "w", start(), Status.PENDING if status is Status.PENDING else Status.RUNNING,
                 history=[step(1)])
    if status is Status.PAUSED:
        store.set_status("a", Status.PAUSED, 2.0)
    elif status is Status.COMPLETED:
        store.record("a", result(2), status=Status.COMPLETED)
    before = (store.info("a"), list(store.events("a")))
    with pytest.raises(IllegalTransitionError, match=status.value):
        store.restart("a", start(at=7.0))
    assert (store.info("a"), list(store.events("a"))) == before
    with pytest.raises(WorkflowNotFoundError):
        store.restart("nope", start())


def test_set_status_legal_and_illegal_transitions(store: Store) -> None:
    store.create("a", "w", start(), Status.PENDING)
    for new, at in ((Status.RUNNING, 2.0), (Status.PAUSED, 3.0), (Status.PAUSED, 3.5), (Status.RUNNING, 4.0)):
        old = store.info("a").status  # type: ignore[union-attr]
        assert store.set_status("a", new, at) is old
        assert (store.info("a").status, store.info("a").updated_at) == (new, at)  # type: ignore[union-attr]
    assert store.set_status("a", Status.CANCELLED, 5.0) is Status.RUNNING
    for illegal in (Status.RUNNING, Status.PAUSED, Status.PENDING, Status.COMPLETED):
        with pytest.raises(IllegalTransitionError, match="cancelled"):
            store.set_status("a", illegal, 6.0)
    assert (store.info("a").status, store.info("a").updated_at) == (Status.CANCELLED, 5.0)  # type: ignore[union-attr]
    with pytest.raises(WorkflowNotFoundError):
        store.set_status("nope", Status.RUNNING, 1.0)


# -- signals -------------------------------------------------------------------------------


def test_signals_in_order_by_name_consumed_once(store: Store) -> None:
    store.create("a", "w", start())
    store.create("b", "w", start())
    assert store.inbox() == set() and store.next_signal("a", "x") is None
    store.send_signal("a", "x", "json", '"first"', 1.0)
    store.send_signal("a", "y", "pickle", b"\x80\x04K\x07.", 1.1)
    store.send_signal("a", "x", "json", '"second"', 1.2)
    assert store.inbox() == {"a"}
    first = store.next_signal("a", "x")
    assert first is not None and (first.name, first.encoding, first.payload, first.sent_at) == (
        "x", "json", '"first"', 1.0)
    y = store.next_signal("a", "y")
    assert y is not None and y.payload == b"\x80\x04K\x07." and y.id > first.id
    store.consume_signal(first.id)
    second = store.next_signal("a", "x")
    assert second is not None and second.payload == '"second"' and second.id > y.id
    store.record("a", step(1), consume_signal=second.id)
    store.consume_signal(y.id)
    assert store.next_signal("a", "x") is None and store.inbox() == set()


def test_inbox_of_names_the_runs_with_unconsumed_signals_of_those_names(store: Store) -> None:
    for workflow_id in "abc":
        store.create(workflow_id, "w", start())
    store.send_signal("a", "x", "json", "1", 1.0)
    store.send_signal("b", "y", "json", "2", 1.1)
    store.send_signal("c", "x", "json", "3", 1.2)
    assert store.inbox_of(("x",)) == {"a", "c"} and store.inbox_of(("y", "z")) == {"b"}
    assert store.inbox_of(("x", "y")) == {"a", "b", "c"} and store.inbox_of(("z",)) == set()
    taken = store.next_signal("c", "x")
    assert taken is not None
    store.consume_signal(taken.id)
    assert store.inbox_of(("x",)) == {"a"}


def test_signals_are_refused_for_ended_and_unknown_runs(store: Store) -> None:
    store.create("a", "w", start())
    store.record("a", result(1), status=Status.COMPLETED)
    with pytest.raises(IllegalTransitionError, match="completed"):
        store.send_signal("a", "x", "json", "1", 2.0)
    assert store.next_signal("a", "x") is None and store.inbox() == set()
    with pytest.raises(WorkflowNotFoundError):
        store.send_signal("nope", "x", "json", "1", 2.0)
    store.create("p", "w", start(), Status.PENDING)
    store.set_status("p", Status.PAUSED, 2.0)
    store.send_signal("p", "x", "json", "1", 2.0)  # pending and paused runs take signals
    assert store.inbox() == {"p"}


# -- listing -------------------------------------------------------------------------------


def test_list_shows_the_newest_run_of_each_id(store: Store) -> None:
    for workflow_id in ("c", "a", "b"):
        store.create(workflow_id, "w", start())
    store.continue_as_new("a", Event(1, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    store.record("b", result(1), status=Status.FAILED)
    store.restart("b", start(at=5.0))
    store.set_status("c", Status.PAUSED, 6.0)
    assert [(i.workflow_id, i.status, i.created_at) for i in store.list()] == [
        ("c", Status.PAUSED, 1.0), ("a", Status.RUNNING, 4.0), ("b", Status.RUNNING, 5.0)]
    assert [i.workflow_id for i in store.list(Status.RUNNING)] == ["a", "b"]
    assert [i.workflow_id for i in store.list(Status.PAUSED)] == ["c"]
    assert store.list(Status.CONTINUED) == [] and store.list(Status.FAILED) == []


def _population(store: Store) -> None:
    """Runs of three workflows, in every status, some with several generations, ids sharing prefixes."""
    endings = [Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT]
    for n in range(24):
        workflow_id, name, at = f"{'ab'[n % 2]}{'xy'[n // 2 % 2]}-{n}", f"w{n % 3}", float(10 + n)
        store.create(workflow_id, name, start(name, at), Status.PENDING if n % 7 == 0 else Status.RUNNING)
        if n % 5 == 1:
            store.continue_as_new(workflow_id, Event(1, 0, RESULT, "", at + 0.5, CONTINUED, "json", "null"),
                                  start(name, at + 30))  # its newest generation was created later
        if n % 4 == 2:
            store.record(workflow_id, result(1, at + 31), status=endings[n % len(endings)])
        elif n % 6 == 3:
            store.set_status(workflow_id, Status.PAUSED, at + 31)


def test_find_filters_in_the_store_as_the_definition_does(store: Store) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    _population(store)

    @settings(max_examples=60, deadline=None, database=None)
    @given(statuses=st.lists(st.sampled_from(list(Status)), max_size=3),
           workflows=st.lists(st.sampled_from(["w0", "w1", "w2", "w9"]), max_size=2),
           prefix=st.sampled_from(["", "a", "ax", "by-", "ax-1", "z"]),
           since=st.none() | st.floats(5, 70), until=st.none() | st.floats(5, 70),
           limit=st.none() | st.integers(0, 30))
    def same(statuses: list[Status], workflows: list[str], prefix: str, since: float | None,
             until: float | None, limit: int | None) -> None:
        found = store.find(statuses=statuses, workflows=workflows, prefix=prefix, since=since, until=until,
                           limit=limit)
        expected = Store.find(store, statuses=statuses, workflows=workflows, prefix=prefix, since=since,
                              until=until, limit=limit)  # the definition: a filter of list() in Python
        assert [(i.workflow_id, i.status, i.created_at) for i in found] == [
            (i.workflow_id, i.status, i.created_at) for i in expected]

    same()
    assert [i.workflow_id for i in store.find(prefix="ax", limit=3)] == ["ax-20", "ax-16", "ax-12"]
    assert len(store.find(limit=2**70)) == len(store.list()) == 24  # more than SQL can count: no limit
    with pytest.raises(ValueError, match="a limit counts runs: 0 or more, not -1"):
        store.find(limit=-1)


def test_paused_gives_the_paused_ids_of_every_generation_kind(store: Store) -> None:
    # What an engine's poll reads (by index) instead of listing runs: the same ids as list(PAUSED).
    for workflow_id in ("a", "b", "c", "d"):
        store.create(workflow_id, "w", start())
    store.continue_as_new("a", Event(1, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    store.set_status("a", Status.PAUSED, 5.0)  # its newest generation
    store.set_status("b", Status.PAUSED, 5.0)
    store.set_status("c", Status.PAUSED, 5.0)
    store.set_status("c", Status.RUNNING, 6.0)  # resumed
    assert store.paused() == {"a", "b"} == {i.workflow_id for i in store.list(Status.PAUSED)}
    store.set_status("b", Status.CANCELLED, 7.0)
    assert store.paused() == {"a"}


# -- ownership -------------------------------------------------------------------------------


def test_a_lock_is_exclusive_between_two_stores(backend: Backend) -> None:
    backend.needs_database("two store objects")
    a, b = backend.open(), backend.open()
    assert a.lock_owner("x") is None
    assert a.try_lock("x") is True
    assert a.try_lock("x") is False  # not even its holder takes it twice
    assert b.try_lock("x") is False
    assert a.lock_owner("x") is not None and b.lock_owner("x") is not None
    assert b.try_lock("y") is True  # per id
    a.unlock("x")
    assert b.try_lock("x") is True and a.try_lock("x") is False
    b.close()  # gives back what it held
    assert a.try_lock("x") is True and a.try_lock("y") is True


def test_a_lock_within_one_store_is_exclusive(store: Store) -> None:
    assert store.try_lock("x") is True
    assert store.try_lock("x") is False
    assert store.lock_owner("x") is not None
    store.unlock("x")
    assert store.lock_owner("x") is None
    assert store.try_lock("x") is True


_HOLDER = """
import sys, time
from replaykit.store import open_store
store = open_store(sys.argv[1], create=False)
assert store.try_lock("x")
print("locked", flush=True)
time.sleep(120)
"""


def test_a_lock_is_released_when_its_holder_is_killed(backend: Backend, child_env: dict[str, str]) -> None:
    backend.needs_database("a lock held by another process")
    store = backend.open()
    holder = subprocess.Popen([PYTHON, "-c", _HOLDER, str(backend.target)], env=child_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()  # bounded by the holder's own sleep, and pytest's timeout
        assert line == "locked\n", holder.stderr.read() if holder.stderr else line
        assert store.try_lock("x") is False
        owner = store.lock_owner("x")
        assert owner is not None and f"pid {holder.pid} " in owner, owner
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        wait_for(lambda: store.try_lock("x"))  # released by the OS or the server, no lease to expire
        assert store.try_lock("x") is False  # and now it is ours
    finally:
        holder.kill()
        holder.wait(timeout=10)


# -- noticing other writers -------------------------------------------------------------------


def test_changed_reports_what_others_commit(backend: Backend, store: Store) -> None:
    other = backend.open()
    store.create("a", "w", start())
    store.changed()  # the first call may say anything
    assert store.changed() is False
    writes: list[Callable[[], object]] = [
        lambda: other.send_signal("a", "x", "json", "1", 2.0),
        lambda: other.consume_signal(store.next_signal("a", "x").id),  # type: ignore[union-attr]
        lambda: other.set_status("a", Status.PAUSED, 3.0),
        lambda: other.create("b", "w", start()),
        lambda: other.record("b", result(1), status=Status.COMPLETED),
    ]
    for write in writes:
        write()
        wait_for(store.changed, timeout=5)
        assert store.changed() is False


def test_one_store_serves_many_threads(store: Store) -> None:
    """An engine's driver, its activity threads and callers all use one store object."""
    store.create("shared", "w", start())
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            workflow_id = f"t{k}"
            store.create(workflow_id, "w", start())
            for seq in range(1, 40):
                store.record(workflow_id, step(seq))
                assert store.last_event(workflow_id) == step(seq)
                if seq % 10 == 0:
                    store.send_signal("shared", "tick", "json", str(k), 1.0)
            store.record(workflow_id, result(40), status=Status.COMPLETED)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    for k in range(6):
        assert [e.seq for e in store.events(f"t{k}")] == list(range(41))
    assert len(store.list(Status.COMPLETED)) == 6
    ticks = 0
    while (signal_ := store.next_signal("shared", "tick")) is not None:
        store.consume_signal(signal_.id)
        ticks += 1
    assert ticks == 6 * 3


# -- group commit ------------------------------------------------------------------------------


def test_a_batch_is_seen_by_others_once_committed(backend: Backend) -> None:
    """A store may commit a batch's writes sooner than :meth:`commit` (the PostgreSQL store does,
    where a commit costs no flush), never a later write before an earlier one; once ``commit()``
    returns, all of them are seen by everyone."""
    store, other = backend.open(), backend.open()
    store.create("a", "w", start())
    store.create("b", "w", start())
    store.batch()
    store.record("a", step(1))
    store.record("b", result(1), status=Status.COMPLETED, custom_status="end")
    store.record("a", step(2))
    assert store.last_event("a") == step(2)  # the batching thread reads its own writes
    store.commit()
    assert list(other.events("a")) == [start(), step(1), step(2)]
    assert (other.info("b").status, other.info("b").custom_status) == (Status.COMPLETED, "end")  # type: ignore[union-attr]
    store.record("a", step(3))  # the thread keeps batching after a commit
    store.commit()
    assert other.last_event("a") == step(3)


def test_a_refused_write_does_not_spoil_its_batch(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    store.create("a", "w", start())
    store.create("done", "w", start())
    store.record("done", result(1), status=Status.COMPLETED)
    store.batch()
    store.record("a", step(1))
    with pytest.raises(WorkflowLockedError):
        store.record("a", step(1))
    with pytest.raises(WorkflowLockedError):
        store.record("a", step(1), status=Status.FAILED)
    with pytest.raises(IllegalTransitionError):
        store.set_status("done", Status.RUNNING, 2.0)
    with pytest.raises(IllegalTransitionError):
        store.send_signal("done", "x", "json", "1", 2.0)
    with pytest.raises(IllegalTransitionError):
        store.restart("a", start())
    store.record("a", step(2))
    store.commit()
    assert list(other.events("a")) == [start(), step(1), step(2)]
    assert other.info("a").status is Status.RUNNING  # type: ignore[union-attr]


def test_delete_removes_ended_runs_whole_and_keeps_the_rest(backend: Backend, store: Store) -> None:
    store.create("done", "w", start(), history=[step(1)])
    store.send_signal("done", "late", "json", "1", 1.5)
    store.continue_as_new("done", Event(2, 0, RESULT, "", 3.0, CONTINUED, "json", "null"), start(at=4.0))
    store.record("done", result(1, at=5.0), status=Status.COMPLETED)  # two generations, both ended
    store.create("running", "w", start())
    store.create("paused", "w", start())
    store.set_status("paused", Status.PAUSED, 2.0)
    store.create("pending", "w", start(), status=Status.PENDING)
    store.create("failed", "w", start())
    store.record("failed", result(1, outcome="error"), status=Status.FAILED)
    assert store.delete(["running", "done", "paused", "pending", "nobody", "failed"]) == ["done", "failed"]
    other = backend.open()  # another process sees them gone
    for s in (store, other):
        assert s.info("done") is None and s.info("failed") is None
        assert sorted(i.workflow_id for i in s.list()) == ["paused", "pending", "running"]
        with pytest.raises(WorkflowNotFoundError):
            list(s.events("done"))
    assert store.create("done", "w", start(at=9.0))  # the id is free: a new run, nothing of the old one
    assert list(other.events("done")) == [start(at=9.0)] and other.next_signal("done", "late") is None
    store.record("done", step(1, at=9.5))
    assert list(other.events("done")) == [start(at=9.0), step(1, at=9.5)]
    assert store.delete(["done"]) == []  # running now
