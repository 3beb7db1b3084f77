"""engine.terminate of a run the engine keeps evicted takes the run's lock as its keeper (clearing its mark,
committed at once: the caller's thread is not batching) and ends it under the lock. If ending it fails on
the store (a transient read or write error), the lock was given back with the mark cleared while the run
stayed in _evicted: neither locked nor marked, another process's recover() took it silently while this
live engine still kept it. Now the mark is written again before the lock goes."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

import replaykit as rk

from conftest import PYTHON
from helpers import RECOVERER, driver_turn, wait_until
from test_keepers import naps


def test_a_failed_terminate_of_a_kept_run_leaves_it_kept(any_db: str, child_env: dict[str, str]) -> None:
    with rk.Engine(any_db, max_cached_runs=0, poll_interval=0.02) as engine:
        handle = engine.start(naps, [3600.0], workflow_id="x")
        wait_until(lambda: "x" in engine._evicted, "x is evicted")
        find = engine.store.find
        failed: list[bool] = []

        def flaky(*args: Any, **kwargs: Any) -> Any:  # the children's lookup, once x is locked to end it
            if not failed:
                failed.append(True)
                raise rk.StoreError("transient: disk I/O error")
            return find(*args, **kwargs)

        engine.store.find = flaky  # type: ignore[method-assign]
        with pytest.raises(rk.StoreError, match="transient"):
            engine.terminate("x", "stop")
        engine.store.find = find  # type: ignore[method-assign]
        claims: list[bool] = []
        engine._post(lambda: claims.append("x" in engine._runs or "x" in engine._evicted))  # read on its driver
        driver_turn(engine)
        other = subprocess.run([PYTHON, "-c", RECOVERER, any_db, "test_keepers", "5"], env=child_env, text=True,
                               capture_output=True, timeout=60)
        assert other.returncode == 0, other.stderr
        elsewhere = other.stdout.strip()
        assert not (claims == [True] and elsewhere == "took"), "another process drove x, which this engine keeps"
        assert claims == [True] or elsewhere == "took", "x is driven by nobody"
        engine.terminate("x", "stop again")
        with pytest.raises(rk.WorkflowTerminated, match="stop again"):
            handle.result(timeout=20)
