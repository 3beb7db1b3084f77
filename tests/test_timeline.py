"""The timeline page (``replaykit show DB ID --html``), looked at as a person would: in real headless
Chromium (Debian's chromium and chromedriver, through selenium), clicking a failed step to read its
traceback; and the timeline's data, with and without replaying the code."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import replaykit as rk
from replaykit import timeline
from replaykit.cli import main
from replaykit.store import open_store

SHOTS = os.environ.get("REPLAYKIT_SCREENSHOTS")  # a folder to keep the screenshots in (docs/images)


@rk.activity
def reserve(item: str) -> str:
    return f"reserved {item}"


@rk.activity
def release(item: str) -> str:
    return f"released {item}"


@rk.activity(retry=rk.RetryPolicy(max_attempts=3, backoff=rk.Fixed(0.01)))
def charge(cents: int) -> str:
    raise RuntimeError(f"card declined for {cents} cents")


@rk.workflow(name="timeline.saga")
def saga(ctx: rk.Context, items: list[str]) -> rk.Flow[str]:
    done = []
    try:
        for item in items:
            done.append((yield reserve(item)))
        yield charge(100 * len(items))
        return "paid"
    except RuntimeError:
        for item in reversed(items):
            yield release(item)
        raise


@rk.activity
def square(i: int) -> int:
    return i * i


@rk.workflow(name="timeline.fan_out")
def fan_out(ctx: rk.Context, n: int) -> rk.Flow[int]:
    squares = yield rk.all(*[square(i) for i in range(n)])
    return sum(squares)


@rk.workflow(name="timeline.child")
def child(ctx: rk.Context, n: int) -> rk.Flow[int]:
    yield rk.sleep(0.01)
    return (yield square(n))


@rk.workflow(name="timeline.parent")
def parent(ctx: rk.Context) -> rk.Flow[int]:
    first = yield rk.child_workflow(child, 3)
    answer: int = yield rk.wait_signal("go")
    return first + answer


def _page(browser: Any, path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.as_uri())
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready") == "1")


def _shot(browser: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 5000
    if SHOTS:
        shutil.copy(path, Path(SHOTS) / name)
    return path


def test_a_failed_saga_shows_red_and_its_traceback_is_a_click_away(db: str, tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    with pytest.raises(rk.WorkflowFailed):
        rk.run(saga, ["lamp", "desk"], workflow_id="order-17", db=db)
    page = tmp_path / "saga.html"
    assert main(["show", db, "order-17", "--html", str(page)]) == 0
    _page(browser, page)
    assert "order-17" in browser.title and "failed" in browser.find_element(By.ID, "title").text
    rows = browser.find_elements(By.CSS_SELECTOR, ".lane")
    assert [r.get_attribute("data-outcome") for r in rows] == ["ok", "ok", "error", "ok", "ok"]
    failed = browser.find_element(By.CSS_SELECTOR, ".lane.failed")
    assert "charge" in failed.text
    assert len(failed.find_elements(By.CSS_SELECTOR, ".seg.retry")) == 2  # three attempts, two waits
    assert not browser.find_element(By.ID, "details").is_displayed()
    failed.click()
    details = browser.find_element(By.ID, "details")
    assert details.is_displayed() and "attempts" in details.text
    traceback = browser.find_element(By.ID, "d-traceback").text
    assert "RuntimeError: card declined for 200 cents" in traceback and "in charge" in traceback
    _shot(browser, tmp_path, "timeline-failed-saga.png")


def test_a_fan_out_of_1000_activities_draws_a_lane_each(db: str, tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    assert rk.run(fan_out, 1000, workflow_id="fan", db=db) == sum(i * i for i in range(1000))
    page = tmp_path / "fan.html"
    assert main(["show", db, "fan", "--html", str(page), "-m", __name__]) == 0
    _page(browser, page)
    assert browser.execute_script("return document.querySelectorAll('.lane').length") == 1000
    assert not browser.find_elements(By.CSS_SELECTOR, ".lane.failed")
    assert "Bars start when" not in browser.find_element(By.ID, "note").text  # replayed: exact starts
    _shot(browser, tmp_path, "timeline-fan-out-1000.png")


def test_what_the_store_holds_is_shown_as_text_never_run(db: str, tmp_path: Path, browser: Any) -> None:
    evil = ('</script><img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
            "{{data}}{{refresh}}")  # the page's own slots, filled once: never read again

    @rk.activity(name="act" + evil)
    def shout(text: str) -> str:
        return text

    @rk.workflow(name="timeline.evil")
    def evil_run(ctx: rk.Context) -> rk.Flow[str]:
        return (yield shout(evil))

    rk.run(evil_run, workflow_id="id" + evil, db=db)
    page = tmp_path / "evil.html"
    assert main(["show", db, "id" + evil, "--html", str(page)]) == 0
    _page(browser, page)
    assert browser.title == "replaykit: id" + evil  # the text itself: no script retitled it
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert browser.execute_script("return document.scripts.length") == 2  # the data and the page's own
    assert evil in browser.execute_script("return document.getElementById('title').textContent")


def test_replaying_the_code_gives_exact_starts_children_and_where_it_waits(db: str) -> None:
    with rk.Engine(db) as engine:
        engine.start(parent, workflow_id="p")
        with open_store(db, create=False) as store:
            while (info := store.info("p/1")) is None or not info.status.is_terminal:
                time.sleep(0.01)
        engine.close()
    with open_store(db, create=False) as store:
        guessed = timeline.build(store, "p")
        exact = timeline.build(store, "p", replay=True)
    assert not guessed.exact and exact.exact and exact.note is None
    assert [(lane.step, lane.kind, lane.outcome) for lane in exact.lanes] == [
        (1, "child", "ok"), (2, "signal", "waiting")]
    assert exact.waiting_at is not None and exact.waiting_at.startswith(__file__ + ":")  # file:line of the yield
    nested = exact.lanes[0].child
    assert nested is not None and nested.info.workflow_id == "p/1"
    assert [(lane.kind, lane.outcome) for lane in nested.lanes] == [("timer", "ok"), ("activity", "ok")]
    assert guessed.waiting_at is None and [lane.step for lane in guessed.lanes] == [1]  # no code: waits unknown


@rk.workflow(name="timeline.named_parent")
def named_parent(ctx: rk.Context) -> rk.Flow[int]:
    return (yield rk.child_workflow(child, 2, workflow_id="named-kid"))


def test_a_child_with_its_own_id_is_nested_when_replayed_and_unknown_code_is_said(db: str) -> None:
    assert rk.run(named_parent, workflow_id="np", db=db) == 4
    with open_store(db, create=False) as store:
        replayed = timeline.build(store, "np", replay=True)
        guessed = timeline.build(store, "np")
        store.create("ghost", "timeline.not_registered", next(iter(store.events("np"))))
        unknown = timeline.build(store, "ghost", replay=True)
    kid = replayed.lanes[0].child
    assert kid is not None and kid.info.workflow_id == "named-kid" and kid.result == "4"
    assert guessed.lanes[0].child is None  # the default id <parent>/<step> is not it
    assert not unknown.exact and unknown.note is not None and "timeline.not_registered" in unknown.note


def test_show_needs_an_existing_run_and_a_place_to_write(db: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    rk.run(fan_out, 2, workflow_id="two", db=db)
    assert main(["show", db, "nobody", "--html", str(tmp_path / "x.html")]) == 1
    assert "no workflow with id 'nobody'" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
    assert main(["show", db, "two"]) == 2  # --html is required


def test_the_timeline_benchmark_runs(browser: Any, child_env: dict[str, str]) -> None:
    import subprocess

    from conftest import PYTHON, ROOT

    done = subprocess.run([PYTHON, str(ROOT / "benchmarks" / "bench_timeline.py"), "--steps", "300", "--repeat", "1"],
                          env=child_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "300 steps" in done.stdout and done.stdout.count("x\n") == 2, done.stdout
