"""The timeline page of a 10,000-step run in headless Chromium: how long until it is drawn.

    python benchmarks/bench_timeline.py [--steps 10000] [--repeat 7]

Needs Debian's chromium and chromedriver and selenium (``pip install -e ".[test]"``). Writes the page
with ``replaykit show`` for a run of ``--steps`` sequential activities, opens it ``--repeat`` times in a
fresh tab, and prints medians of: the page's own drawing time (its script, from parsing the data to the
last lane) and the whole load (navigation start to drawn). The floor is the same page for a run of
one step, loaded the same way in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replaykit as rk  # noqa: E402
from replaykit.cli import main as cli  # noqa: E402


@rk.activity
def tick(i: int) -> int:
    return i


@rk.workflow(name="bench.timeline")
def steps(ctx: rk.Context, n: int) -> rk.Flow[int]:
    total = 0
    for i in range(n):
        total += yield tick(i)
    return total


def browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))


def load(web, page: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    web.get("about:blank")
    web.get(page.as_uri())
    WebDriverWait(web, 60).until(lambda b: b.execute_script("return document.body.dataset.ready") == "1")
    drawn = float(web.execute_script("return document.body.dataset.renderMs"))
    whole = float(web.execute_script("return performance.now()"))  # from navigation start
    return drawn, whole


def main() -> None:
    logging.getLogger("replaykit").setLevel(logging.ERROR)  # the long history warning
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "t.db")
        rk.run(steps, args.steps, workflow_id="big", db=db)
        rk.run(steps, 1, workflow_id="small", db=db)
        pages = {}
        for run in ("big", "small"):
            pages[run] = Path(tmp, f"{run}.html")
            assert cli(["show", db, run, "--html", str(pages[run])]) == 0
        web = browser()
        try:
            times: dict[str, list[tuple[float, float]]] = {"big": [], "small": []}
            for _ in range(args.repeat):
                for run in ("small", "big"):
                    times[run].append(load(web, pages[run]))
        finally:
            web.quit()
        size = pages["big"].stat().st_size
    print(f"{args.repeat} loads each, medians; load average before: {os.getloadavg()[0]:.2f}; page {size / 1e6:.1f} MB")
    for what, i in (("drawing (the page's script)", 0), ("whole load, to drawn", 1)):
        floor = statistics.median(t[i] for t in times["small"])
        big = statistics.median(t[i] for t in times["big"])
        print(f"{what:30} {args.steps:,} steps {big:8.0f} ms   1 step {floor:6.0f} ms   {big / max(floor, 1):5.1f}x")


if __name__ == "__main__":
    main()
