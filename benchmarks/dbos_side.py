"""DBOS Transact on PostgreSQL: the DBOS half of ``bench_scaleout.py``, run by it with the Python of
DBOS's own virtualenv (``benchmarks/.venv-dbos``), so DBOS's dependencies never enter ours.

    python dbos_side.py worker URL EXECUTOR_ID     -> serve the queue until SIGTERM (prints "ready")
    python dbos_side.py client URL N               -> enqueue N one-step workflows; seconds until all
                                                      succeeded, and seconds spent enqueueing
    python dbos_side.py enqueue_hold URL LEDGER    -> enqueue one two-step workflow whose first step blocks

Every worker process uses the same application version (as one deploy would) and its own
executor id. The queue has no limits; it is polled every ``POLL`` seconds (DBOS's default is
1 s: a shorter interval only helps DBOS here).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
import scaleout_steps  # beside this file (its directory is on the path of a script)
from dbos import DBOS, DBOSClient, DBOSConfig

APP, QUEUE, POLL = "rk-bench", "bench", 0.1


@DBOS.step(name="echo")
def echo(i: int) -> int:
    return i


@DBOS.workflow(name="one_step")
def one_step(i: int) -> int:
    return echo(i)


@DBOS.step(name="block")
def block(ledger: str) -> int:
    return scaleout_steps.block(ledger)


@DBOS.step(name="mark")
def mark(ledger: str) -> int:
    return scaleout_steps.mark(ledger)


@DBOS.workflow(name="hold")
def hold(ledger: str) -> int:
    return block(ledger) + mark(ledger)


def _sqlalchemy(url: str) -> str:
    """SQLAlchemy's form of a libpq URL: the user in its place, the socket directory in ``host``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    user = query.pop("user", parts.username or "postgres")
    return f"postgresql+psycopg://{user}@{parts.hostname or ''}{parts.path}?{urlencode(query)}"


def worker(url: str, executor_id: str) -> None:
    config: DBOSConfig = {"name": APP, "system_database_url": _sqlalchemy(url), "run_admin_server": False,
                          "executor_id": executor_id, "application_version": "bench"}
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE, polling_interval_sec=POLL)
    time.sleep(1.2)  # the queue thread notices a newly registered queue within 1 s
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    DBOS.destroy()


def client(url: str, n: int) -> None:
    dbos = DBOSClient(system_database_url=_sqlalchemy(url), application_name=APP)
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        for i in range(n):
            dbos.enqueue({"queue_name": QUEUE, "workflow_name": "one_step", "workflow_id": f"w{i}"}, i)
        started = time.perf_counter() - t0
        while conn.execute("SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
                           ).fetchall()[0][0] < n:
            time.sleep(0.005)
        print("RESULT", time.perf_counter() - t0, started, flush=True)
    dbos.destroy()


def enqueue(url: str, n: int) -> None:
    """n one-step workflows into the queue, nothing serving it yet (the schema made by a worker before)."""
    dbos = DBOSClient(system_database_url=_sqlalchemy(url), application_name=APP)
    t0 = time.perf_counter()
    for i in range(n):
        dbos.enqueue({"queue_name": QUEUE, "workflow_name": "one_step", "workflow_id": f"w{i}"}, i)
    print("RESULT", time.perf_counter() - t0, flush=True)
    dbos.destroy()


def enqueue_hold(url: str, ledger: str) -> None:
    dbos = DBOSClient(system_database_url=_sqlalchemy(url), application_name=APP)
    dbos.enqueue({"queue_name": QUEUE, "workflow_name": "hold", "workflow_id": "hold-1"}, ledger)
    dbos.destroy()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "worker":
        worker(args[0], args[1])
    elif mode == "client":
        client(args[0], int(args[1]))
    elif mode == "enqueue":
        enqueue(args[0], int(args[1]))
    elif mode == "enqueue_hold":
        enqueue_hold(args[0], args[1])
    else:
        sys.exit(f"unknown mode {mode!r}")
