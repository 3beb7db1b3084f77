"""``env.sleep()`` returns only once what happened on the way is committed to the store."""

from __future__ import annotations

from pathlib import Path

import replaykit as rk
from replaykit.testing import TestEnv

from helpers import add


@rk.workflow
def wakes_and_works(ctx: rk.Context):
    yield rk.sleep(60)
    total = yield add(1, 2)
    yield rk.sleep(3600)
    return total


def test_history_after_env_sleep_holds_every_step_taken_on_the_way(tmp_path: Path) -> None:
    trials, missing = 150, []
    with TestEnv(db=str(tmp_path / "env.db")) as env:
        for i in range(trials):
            env.start(wakes_and_works, workflow_id=f"t{i}")
            env.sleep(120)
            kinds = [event.kind for event in env.history(f"t{i}")]
            if kinds != ["start", "timer", "activity"]:
                missing.append((i, kinds))
    assert not missing, f"{len(missing)} of {trials} histories read right after env.sleep() lacked steps: {missing[:3]}"
