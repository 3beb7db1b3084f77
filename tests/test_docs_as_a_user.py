"""What a Temporal or DBOS user finds trying replaykit from its docs (versioning, children, retention,
testing, values, retries, api): documented behaviour holds as written, and their habits from the other
SDKs get a clear error when they are made, not a failure at the first retry."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import replaykit as rk
from replaykit.cli import main
from replaykit.testing import TestEnv

# --- retries.md: a RetryPolicy that cannot work is accepted, and fails the run's first retry ---------


def test_exception_names_in_non_retryable_are_refused_when_the_policy_is_made() -> None:
    # Temporal's RetryPolicy takes non_retryable_error_types=["PermissionError"] (names). Here the names
    # are accepted; the first failure of the activity then makes rk.run / handle.result() raise a bare
    # "TypeError: isinstance() arg 2 must be a type, a tuple of types, or a union", which names neither
    # RetryPolicy, non_retryable nor the activity, and the run stays `running` for ever.
    # RetryPolicy(jitter=2) and RetryPolicy(max_attempts=0) are refused when made, with what to write.
    with pytest.raises((TypeError, ValueError), match="non_retryable"):
        rk.RetryPolicy(non_retryable=("PermissionError",))  # type: ignore[arg-type]


def test_a_number_given_as_backoff_or_as_retry_is_refused_when_made() -> None:
    # RetryPolicy(backoff=5) and @rk.activity(retry=3) are accepted; the first failure raises
    # "AttributeError: 'int' object has no attribute 'wait'" ('next_wait' for retry=3) from the engine.
    with pytest.raises((TypeError, ValueError), match="backoff"):
        rk.RetryPolicy(backoff=5)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match="retry"):
        rk.activity(retry=3)(lambda: 1)  # type: ignore[arg-type]


# --- testing.md / values.md: datetimes recorded in TestEnv are pickles of freezegun's FakeDatetime ---


@rk.activity
def stamp() -> datetime:
    return datetime.now(timezone.utc)  # testing.md: "activities see the fake time (freezegun)"


@rk.workflow(name="review_docs.stamped")
def stamped(ctx: rk.Context) -> rk.Flow[str]:
    at: datetime = yield stamp()
    yield rk.sleep(60)
    return at.isoformat()


@rk.workflow(name="review_docs.clock")
def clock(ctx: rk.Context) -> rk.Flow[datetime]:
    yield rk.sleep(1)
    return ctx.now()


def test_a_datetime_recorded_in_the_test_env_is_typed_json(tmp_path: Path) -> None:
    # values.md: a datetime is stored as `typed` JSON. Under TestEnv's default freeze_time=True the
    # activity's datetime.now() (and ctx.now() itself) is a freezegun FakeDatetime, recorded as a signed
    # pickle of freezegun.api.FakeDatetime (`replaykit result` shows "<pickle freezegun.api.FakeDatetime>").
    with TestEnv() as env:
        env.run(stamped, workflow_id="s-1")
        assert [e.encoding for e in env.history("s-1") if e.kind == "activity"] == ["typed"]


def test_a_test_env_on_a_store_without_pickles_records_ctx_now(tmp_path: Path) -> None:
    # The same with pickle="off": returning ctx.now() fails with
    # "SerializationError: ... the value (FakeDatetime) cannot be recorded as JSON exactly".
    with TestEnv(db=rk.SqliteStore(str(tmp_path / "off.db"), pickle="off")) as env:
        assert env.run(clock, workflow_id="c-1") == datetime(2030, 1, 1, 0, 0, 1, tzinfo=timezone.utc)


def test_a_history_exported_from_the_test_env_replays_in_another_process(tmp_path: Path) -> None:
    # testing.md: histories exported with History.save are kept as test fixtures and replayed with
    # replay(). One exported from a default TestEnv carries the activity's datetime as a pickle signed
    # with the in-memory store's key of that process: replaying the file in any other process (a user
    # sets no REPLAYKIT_SECRET for unit tests) raises PayloadAuthenticationError ("this process has no
    # key to check it with").
    here = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k not in ("REPLAYKIT_SECRET", "REPLAYKIT_OLD_SECRETS")}
    prelude = "import sys; sys.path[:0] = sys.argv[1:3]\nimport test_docs_as_a_user as m\n"
    make = prelude + ("from replaykit.testing import TestEnv, export_history\n"
                      "with TestEnv() as env:\n"
                      "    env.run(m.stamped, workflow_id='s-2')\n"
                      "    export_history(env.store, 's-2').save(sys.argv[3])\n")
    check = prelude + "from replaykit.testing import replay\nprint(replay(m.stamped, sys.argv[3]).ok)\n"
    fixture = str(tmp_path / "s-2.json")
    for code in (make, check):
        out = subprocess.run([sys.executable, "-c", code, str(here.parent), str(here), fixture],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.strip() == "True"


# --- versioning.md: runs_without_patch never empties while a run of another workflow goes on -------


@rk.activity
def send_email(to: str) -> str:
    return f"emailed {to}"


@rk.activity
def send_sms(to: str) -> str:
    return f"texted {to}"


@rk.workflow(name="review_docs.welcome")
def welcome(ctx: rk.Context, user: str) -> rk.Flow[str]:
    if ctx.patched("sms-welcome"):
        sms: str = yield send_sms(user)
        return sms
    email: str = yield send_email(user)
    return email


@rk.workflow(name="review_docs.nightly")
def nightly(ctx: rk.Context) -> rk.Flow[None]:
    yield rk.sleep(0)


def test_runs_without_patch_is_empty_once_every_run_of_the_patched_code_has_ended(tmp_path: Path) -> None:
    # versioning.md step 2: the list of unfinished runs without the marker, of the patched workflow, is
    # empty once its old runs have ended; a schedule's run (which never ends) does not keep it from emptying.
    with TestEnv(db=str(tmp_path / "v.db")) as env:
        env.engine.schedule("nightly", nightly, "0 3 * * *")
        assert env.run(welcome, "ann", workflow_id="welcome-ann") == "texted ann"
        env.sleep(timedelta(days=1))
        assert rk.runs_without_patch(env.store, "sms-welcome") == ["schedule:nightly"]  # every workflow's
        assert rk.runs_without_patch(env.store, "sms-welcome", workflow=welcome) == []
        assert rk.runs_without_patch(env.store, "sms-welcome", workflow=welcome.name) == []


# --- a handle on an id that has no run ------------------------------------------------------------


def test_a_handle_on_an_id_with_no_run_says_there_is_none(db: str) -> None:
    # engine.handle(typo).result() waits for ever; with a timeout it raises ResultTimeoutError
    # "workflow 'nope' has not finished after 1s; it goes on running" - no run exists at all.
    # handle.status() on the same handle raises WorkflowNotFoundError.
    with rk.Engine(db) as engine:
        handle = engine.handle("nope")
        with pytest.raises(rk.WorkflowNotFoundError):
            handle.status()
        with pytest.raises(rk.WorkflowNotFoundError):
            handle.result(timeout=1)


# --- retention.md: "Families stay whole" does not hold for `replaykit delete` ---------------------

invoices: list[str] = []


@rk.activity
def send_invoice(order_id: str) -> str:
    invoices.append(order_id)
    return f"invoice for {order_id}"


@rk.workflow(name="review_docs.kid")
def kid(ctx: rk.Context, order_id: str) -> rk.Flow[str]:
    yield rk.sleep(0.3)
    sent: str = yield send_invoice(order_id)
    return sent


@rk.workflow(name="review_docs.parent")
def parent(ctx: rk.Context) -> rk.Flow[str]:
    sent: str = yield rk.child_workflow(kid, "o-9")
    return sent


def test_delete_keeps_a_child_whose_parent_has_not_ended(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    # retention.md: "Families stay whole. A run that ended is kept while its parent has not ended: a
    # parent replaying after a crash reads its children's results from the store, and a deleted child
    # would run again." `replaykit delete DB P/1` deletes the child of a running parent, and the parent,
    # resumed, starts the child again: the invoice is sent twice.
    invoices.clear()
    with rk.Engine(db) as engine:
        engine.start(parent, workflow_id="P")
        time.sleep(0.1)  # the child is recorded and sleeps; the engine closes with both running
    assert rk.run(kid, "o-9", workflow_id="P/1", db=db) == "invoice for o-9"  # another process ends the child
    main(["delete", db, "P/1"])
    capsys.readouterr()
    with rk.Engine(db) as engine:
        engine.recover()
        assert engine.handle("P").result(timeout=10) == "invoice for o-9"
    assert invoices == ["o-9"]


# --- retention.md: statuses= given one status --------------------------------------------------------


@rk.workflow(name="review_docs.quick")
def quick(ctx: rk.Context) -> rk.Flow[int]:
    yield rk.sleep(0)
    return 1


def test_prune_given_one_status_as_text_says_what_statuses_is(db: str) -> None:
    # rk.prune(db, older_than=0, statuses="completed") raises "ValueError: 'c' is not a valid Status":
    # the text is iterated letter by letter. The CLI takes `--status completed`; the call should take it
    # too, or say that statuses= is a list of statuses.
    rk.run(quick, workflow_id="q-1", db=db)
    try:
        deleted = rk.prune(db, older_than=0, statuses="completed", dry_run=True)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        assert "statuses" in str(error), str(error)
    else:
        assert deleted == ["q-1"]


# --- api.md (Context.set_status): "visible from outside as handle.custom_status()" ------------------


@rk.workflow(name="review_docs.importer")
def importer(ctx: rk.Context) -> rk.Flow[None]:
    ctx.set_status({"rows": 3})
    yield rk.wait_signal("go")


def test_set_status_is_visible_as_handle_custom_status(db: str) -> None:
    # The generated API reference says ctx.set_status is "visible from outside as
    # handle.custom_status()"; WorkflowHandle has no custom_status (AttributeError; mypy: attr-defined).
    with rk.Engine(db) as engine:
        handle = engine.start(importer, workflow_id="imp-1")
        deadline = time.monotonic() + 5
        while engine.store.info("imp-1").custom_status is None and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.02)
        assert handle.custom_status() == {"rows": 3}  # type: ignore[attr-defined]


# --- newcomer mistakes: unclear errors --------------------------------------------------------------


def test_a_naive_start_at_is_refused_as_sleep_until_refuses_it(db: str) -> None:
    # rk.sleep_until(datetime(2030, 1, 1)) says "sleep_until needs a timezone-aware datetime"; but
    # engine.start(..., start_at=datetime(2030, 1, 2, 12)) is taken silently as the machine's local time
    # (12:00 in New York starts it at 17:00 UTC), while schedules and ctx.now() are UTC.
    with rk.Engine(db) as engine:
        with pytest.raises(ValueError, match="timezone"):
            engine.start(quick, workflow_id="n-1", start_at=datetime(2030, 1, 2, 12, 0))
        with pytest.raises(ValueError, match="timezone"):  # a schedule's first fire, likewise
            engine.schedule("n-daily", quick, "0 3 * * *", start_after=datetime(2030, 1, 2))


def test_a_workflow_id_that_is_not_text_is_named(db: str) -> None:
    # rk.run(wf, workflow_id=123, db=...) raises "AttributeError: 'int' object has no attribute 'encode'".
    with pytest.raises(TypeError, match="workflow_id"):
        rk.run(quick, workflow_id=123, db=db)  # type: ignore[arg-type]


@dataclasses.dataclass
class Loose:
    anything: object


@dataclasses.dataclass
class Invoice:
    lines: list[object]


@rk.activity
def make_invoice() -> Invoice:
    return Invoice([1, 2, Loose(3)])


@rk.workflow(name="review_docs.invoice")
def invoice(ctx: rk.Context) -> rk.Flow[int]:
    made: Invoice = yield make_invoice()
    return len(made.lines)


@rk.activity
def make_invoice_lines() -> dict[str, list[object]]:
    return {"lines": [1, 2, Loose(3)]}


@rk.workflow(name="review_docs.invoice_lines")
def invoice_lines(ctx: rk.Context) -> rk.Flow[object]:
    return (yield make_invoice_lines())


def test_a_refused_value_names_the_part_as_values_md_says(tmp_path: Path) -> None:
    # values.md: with pickle="off", a value that would not read back exactly is refused naming its place in
    # plain containers (`['lines'][2] (Loose)`), or the class whose fields do not read back (`Invoice`).
    with rk.Engine(rk.SqliteStore(str(tmp_path / "off.db"), pickle="off")) as engine:
        with pytest.raises(rk.SerializationError, match=r"\['lines'\]\[2\] \(Loose\)"):
            engine.start(invoice_lines, workflow_id="inv-0").result(timeout=10)
        with pytest.raises(rk.SerializationError, match=r"the value \(Invoice\)"):
            engine.start(invoice, workflow_id="inv-1").result(timeout=10)


# --- testing.md: an async def activity that awaits asyncio.sleep never ends under TestEnv ----------


@rk.activity
async def fetch_rate(currency: str) -> float:
    await asyncio.sleep(0.01)  # any awaited timer: a client's timeout, a back-off, a poll interval
    return 1.0


@rk.workflow(name="review_docs.rates")
def async_rates(ctx: rk.Context) -> rk.Flow[float]:
    rate: float = yield fetch_rate("EUR")
    return rate


def test_an_async_activity_that_awaits_a_timer_finishes_in_the_test_env() -> None:
    # testing.md: TestEnv runs workflows "in milliseconds"; concepts.md: activities may be ordinary async
    # def functions. Under TestEnv's default freeze_time=True the activities' event loop reads freezegun's
    # frozen time.monotonic, so `await asyncio.sleep(0.01)` in an activity never returns: env.run() hangs
    # for ever (faulthandler: the loop thread sits in selectors.select). rk.run, an Engine and
    # TestEnv(freeze_time=False) finish it at once.
    with TestEnv() as env:
        assert env.start(async_rates, workflow_id="rates-1").result(timeout=10) == 1.0
