"""Where the runtime reads time. Workflow code never does: it asks ``ctx.now()``."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """The runtime's source of time, in seconds since the epoch (UTC)."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()
