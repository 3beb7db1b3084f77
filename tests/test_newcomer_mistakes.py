"""What a newcomer meets: documented behaviour that must hold as written, and mistakes that must get
a clear error (found by a newcomer's review; each test failed before its fix)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import replaykit as rk

from conftest import ROOT


@rk.activity
def make_lock() -> object:
    return threading.Lock()  # neither JSON nor picklable: cannot be recorded


@rk.workflow(name="review.holds_lock")
def holds_lock(ctx: rk.Context) -> rk.Flow[str]:
    yield make_lock()
    return "unreachable"


def test_an_engine_handle_gets_the_serialization_error_of_an_activity_result(db: str) -> None:
    # rk.run raises rk.SerializationError for this at once. An Engine with its (default) thread
    # pool only logs "replaykit driver job failed" and the run stays `running`: result() never
    # returns, so a caller without a timeout waits forever. concepts.md: SerializationError is
    # a problem with the code, not recorded; "fix the cause and rerun".
    with rk.Engine(db) as engine:
        handle = engine.start(holds_lock, workflow_id="lock-1")
        with pytest.raises(rk.SerializationError, match="make_lock"):
            handle.result(timeout=5)


@rk.workflow(name="review.side_effect")
def draws_lock(ctx: rk.Context, broken: bool) -> rk.Flow[str]:
    value = yield rk.side_effect(threading.Lock if broken else (lambda: 42))
    return str(value)


def test_an_unrecordable_side_effect_value_is_not_recorded(db: str) -> None:
    # The error's own message says "Nothing was recorded", and concepts.md says a
    # SerializationError is not recorded ("fix the cause and rerun"). Instead the side effect
    # is recorded as an error and the run as `failed`, so the fixed code can never continue it.
    with pytest.raises(rk.SerializationError, match="Nothing was recorded"):
        rk.run(draws_lock, True, workflow_id="se-1", db=db)
    with rk.SqliteStore(db) as store:
        assert [e.kind for e in store.events("se-1")] == ["start"]
        info = store.info("se-1")
        assert info is not None and info.status is rk.Status.RUNNING


def test_rk_store_is_reachable_after_import_replaykit() -> None:
    # docs/postgres.md: `store = rk.store.open_store(url)`. Type checkers accept `rk.store`, but at
    # run time it exists only once something else has imported replaykit.store.
    code = "import replaykit as rk; print(rk.store.open_store.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "open_store"


def test_a_mistyped_durability_names_the_choices(db: str) -> None:
    # `pickle="of"` says "pickle= must be one of 'signed', 'off'"; `durability="powr"` only says
    # "'powr' is not a valid Durability", which names neither the parameter nor the choices.
    with pytest.raises(ValueError, match=r"durability.*'crash'.*'power'"):
        rk.run(holds_lock, workflow_id="d-1", db=db, durability="powr")


def test_a_duration_given_as_text_says_what_a_duration_is() -> None:
    # rk.sleep("1h") raises "could not convert string to float: '1h'" from inside attrs;
    # rk.sleep(-1) says "a duration must be a non-negative timedelta or number of seconds".
    with pytest.raises((TypeError, ValueError), match="timedelta"):
        rk.sleep("1h")  # type: ignore[arg-type]
    # rk.wait_signal("x", timeout="5") took the text as 5 seconds; every duration reads the same way now.
    for made in (lambda: rk.wait_signal("x", timeout="5"),  # type: ignore[arg-type]
                 lambda: rk.activity(timeout="5")(lambda: 1),  # type: ignore[call-overload]
                 lambda: rk.Fixed("5"),  # type: ignore[arg-type]
                 lambda: rk.sleep(True)):
        with pytest.raises(TypeError, match="timedelta"):
            made()


def test_the_files_the_quickstart_leaves_in_a_checkout_are_ignored() -> None:
    # After the README's first command, `git status` in the checkout shows `quickstart.db.key`
    # (the store's HMAC secret, which security.md says must stay private) and
    # `quickstart.db-locks.d/`: .gitignore lists `*.db-locks` (a file) but neither of these,
    # so a `git add .` commits the key.
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["examples/quickstart.db.key", "examples/quickstart.db-locks.d/0", "quickstart.db.key",
             "quickstart.db-locks.d/0"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert sorted(out.stdout.split()) == sorted(paths), out.stdout


@rk.activity
def charge(order_id: str, cents: int) -> str:
    return f"receipt-{order_id}"


def test_running_an_activity_as_a_workflow_says_it_is_an_activity(db: str) -> None:
    # rk.run(charge, ...) says "<activity charge> is a plain function; a workflow must be a generator
    # function": false (it is an @rk.activity, not a plain function) and no hint of what to do
    # (yield it from a workflow). rk.child_workflow(charge, ...) says the same.
    for attempt in (lambda: rk.run(charge, "o-1", 5, workflow_id="a-1", db=db),  # type: ignore[arg-type]
                    lambda: rk.child_workflow(charge, "o-1", 5)):  # type: ignore[arg-type]
        with pytest.raises(rk.NotAWorkflowError) as err:
            attempt()
        assert "plain function" not in str(err.value)
        assert "@rk.activity" in str(err.value)


@pytest.mark.parametrize("options", [{"max_attempts": 0}, {"max_attempts": -1}, {"max_attempts": 2.5},
                                     {"jitter": 1.5}, {"jitter": -0.1}])
def test_a_retry_policy_that_cannot_mean_anything_is_refused(options: dict[str, object]) -> None:
    # RetryPolicy(max_attempts=0) was taken silently and behaved as 1 (no retry); a jitter above 1
    # made some waits negative (then 0).
    with pytest.raises(ValueError, match="RetryPolicy"):
        rk.RetryPolicy(**options)  # type: ignore[arg-type]
