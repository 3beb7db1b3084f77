"""Workflows and activities shared by tests, importable from subprocesses too."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import replaykit as rk


def line_of(fn: Callable[..., Any], marker: str) -> int:
    """The line of ``fn``'s source that holds ``marker`` (a comment)."""
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, text in enumerate(lines) if marker in text)


def journal(path: str, line: str) -> None:
    """Append a line with one write(2): survives SIGKILL of the writer."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_journal(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def rechain(db: str | os.PathLike[str]) -> None:
    """Recompute every event's checksum in an SQLite store (and the seal of every run that ended) with
    the store's key: what a forger who holds the chain's key could do after changing a row, so that
    the test sees what stands behind the chain (the signatures of pickled values). Signals too."""
    import sqlite3

    from replaykit.history import Event
    from replaykit.store import chain
    from replaykit.store.sqlite_history import SIGNAL_SEED, signal_fields

    store = rk.SqliteStore(db)
    links = store.chain(make=True)
    store.close()
    conn = sqlite3.connect(db)
    try:
        with conn:
            for run, workflow_id, generation in conn.execute(
                    "SELECT id, workflow_id, generation FROM runs").fetchall():
                prev = chain.seed(workflow_id, generation)
                for row in conn.execute("SELECT seq, step, kind, name, at, outcome, encoding, payload FROM events "
                                        "WHERE run = ? ORDER BY seq", (run,)).fetchall():
                    prev = links.link(prev, Event._make(row))
                    conn.execute("UPDATE events SET digest = ? WHERE run = ? AND seq = ?", (prev, run, row[0]))
                conn.execute("UPDATE runs SET head = ? WHERE id = ? AND head IS NOT NULL", (prev, run))
            for signal_id, *fields in conn.execute(
                    "SELECT id, workflow_id, name, encoding, payload, sent_at FROM signals").fetchall():
                conn.execute("UPDATE signals SET digest = ? WHERE id = ?",
                             (links.link(SIGNAL_SEED, signal_fields(*fields)), signal_id))
    finally:
        conn.close()


@rk.activity
def add(a: int, b: int) -> int:
    return a + b


@rk.workflow
def adder(ctx: rk.Context, n: int):
    total = 0
    for i in range(n):
        total = yield add(total, i)
    return total


@rk.workflow
def waits_for_approval(ctx: rk.Context, timeout: float | None = None):
    answer = yield rk.wait_signal("approved", timeout=timeout)
    return {"answer": answer}
