"""Verbs that run the user's code: ``worker`` (serve queued runs) and ``check`` (replay every history)."""

from __future__ import annotations

import signal
import socket
import sys
from typing import Any

import click

from ..store import open_store
from ..store.work import Queue
from . import output
from .common import UsageError, db_argument, import_modules, json_option, modules_option


def _limits(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, int]]:
    """``QUEUE=N`` options."""
    parsed = []
    for text in values:
        queue, _, n = text.partition("=")
        if not queue or not n.isdigit() or int(n) < 1:
            raise click.BadParameter(f"{text!r}: write QUEUE=N, N a whole number of at least 1 (e.g. orders=10)")
        parsed.append((queue, int(n)))
    return parsed


def _rates(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, tuple[int, float]]]:
    """``QUEUE=K/SECONDS`` options."""
    parsed = []
    for text in values:
        queue, _, spec = text.partition("=")
        starts, _, seconds = spec.partition("/")
        try:
            rate = (int(starts), float(seconds))
        except ValueError:
            rate = (0, 0.0)
        if not queue or rate[0] < 1 or not rate[1] > 0:
            raise click.BadParameter(f"{text!r}: write QUEUE=K/SECONDS, K starts of at least 1 per a positive "
                                     "number of seconds (e.g. orders=100/60)")
        parsed.append((queue, rate))
    return parsed


@click.command()
@db_argument
@modules_option
@click.option("-q", "--queue", "queues", multiple=True, help="Queue to serve (default: default); repeatable.")
@click.option("--limit", multiple=True, callback=_limits, metavar="QUEUE=N",
              help="At most N runs of QUEUE held at once across all workers (stored for all); repeatable.")
@click.option("--worker-limit", multiple=True, callback=_limits, metavar="QUEUE=N",
              help="At most N runs of QUEUE held at once by this worker; repeatable.")
@click.option("--per-key", multiple=True, callback=_limits, metavar="QUEUE=N",
              help="At most N runs of QUEUE held at once per partition key (stored for all); repeatable.")
@click.option("--rate", multiple=True, callback=_rates, metavar="QUEUE=K/SECONDS",
              help="At most K runs of QUEUE started per SECONDS, fleet-wide (stored for all); repeatable.")
@click.option("--concurrency", type=int, default=100, show_default=True, help="Runs held at once by this worker.")
@click.option("--activity-threads", type=int, default=16, show_default=True)
@click.option("--drivers", type=int, default=None, help="Threads driving runs (default: 1).")
@click.option("--durability", type=click.Choice(["crash", "power"]), default="crash", show_default=True)
@click.option("--grace", type=float, default=30.0, show_default=True,
              help="Seconds running activities get to finish on SIGTERM.")
@click.option("--lease", type=float, default=30.0, show_default=True,
              help="Seconds without a heartbeat before the others take this worker's runs.")
@click.option("--heartbeat", type=float, default=0.5, show_default=True, help="Seconds between heartbeats.")
@click.option("--worker-id", default=None, help="This worker's id in the registry (default: host-pid-random).")
@click.option("--code-version", default=None,
              help="This worker's code version (default: a digest of its workflows' code and the activities "
                   "they name).")
def worker(db: str, modules: tuple[str, ...], queues: tuple[str, ...], limit: list[tuple[str, int]],
           worker_limit: list[tuple[str, int]], per_key: list[tuple[str, int]],
           rate: list[tuple[str, tuple[int, float]]], **options: Any) -> None:
    """Serve queued runs of the -m modules' workflows until SIGTERM or Ctrl-C."""
    from ..worker import Worker
    from ..workflow import Workflow

    if not modules:
        raise UsageError("a worker needs the workflows it may drive: name their module with -m MODULE")
    names = list(queues) or ["default"]
    limits: dict[str, dict[str, Any]] = {}
    for option, field, values in (("limit", "concurrency", limit), ("worker-limit", "worker_concurrency", worker_limit),
                                  ("per-key", "per_key", per_key), ("rate", "rate", rate)):
        for queue, value in values:
            if queue not in names:
                raise UsageError(f"--{option} {queue}: not a queue this worker serves (name it with -q too)")
            limits.setdefault(queue, {})[field] = value
    served: list[str | Queue] = [Queue(q, **limits[q]) if q in limits else q for q in names]
    import_modules(modules)
    workflows = {id(v): v for name in modules for v in vars(sys.modules[name]).values() if isinstance(v, Workflow)}
    if not workflows:
        raise UsageError(f"no workflow found in {', '.join(modules)}: decorate them with @rk.workflow")
    made: list[Worker] = []
    # A SIGTERM while the worker starts (it claims from its first moment) stops it gracefully too.
    early = signal.signal(signal.SIGTERM, lambda *_: made[0].request_stop() if made else sys.exit(143))
    store = open_store(db, create=False)  # a mistyped path is an error, never a new store
    try:
        w = Worker(store, workflows=list(workflows.values()), queues=served, concurrency=options["concurrency"],
                   activity_threads=options["activity_threads"], grace=options["grace"], drivers=options["drivers"],
                   durability=options["durability"], lease=options["lease"], heartbeat=options["heartbeat"],
                   worker_id=options["worker_id"], version=options["code_version"])
    except BaseException:
        store.close()
        raise
    made.append(w)
    click.echo(f"worker {w.worker_id} serving {', '.join(names)} (code version {w.version}); "
               "SIGTERM or Ctrl-C stops it")
    try:
        w.run()
    finally:
        signal.signal(signal.SIGTERM, early)
        store.close()
    click.echo(f"worker {w.worker_id} stopped")


@click.command()
@db_argument
@modules_option
@json_option
def check(db: str, modules: tuple[str, ...], as_json: bool) -> None:
    """Replay every history against the current code (exit 1: one diverges)."""
    from ..testing.replayer import replay_all  # the checker lives with the testing tools

    import_modules(modules)
    reports = replay_all(db)
    failed = sum(not r.ok for r in reports)
    if as_json:
        output.emit_json([{"workflow_id": r.workflow_id, "workflow": r.workflow, "ok": r.ok, "steps": r.steps,
                           "error": None if r.ok else str(r.error)} for r in reports])
    else:
        for r in reports:
            if r.ok:
                click.echo(output.shown(f"ok    {r.workflow_id} ({r.workflow}, {r.steps} steps)"))
            else:
                click.echo(output.shown_lines(f"FAIL  {r.workflow_id} ({r.workflow}): {r.error}", "      "))
        click.echo(f"{len(reports) - failed} passed, {failed} failed")
    if failed:
        raise click.exceptions.Exit(1)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@db_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on; 0 lets the system choose a free one (the address is printed).")
@click.option("--token", envvar="REPLAYKIT_UI_TOKEN", default=None,
              help="What writes (start, signal, cancel, terminate, pause, resume) must present as "
                   "'Authorization: Bearer TOKEN'; "
                   "required when --host is not this machine (also REPLAYKIT_UI_TOKEN).")
@click.option("--refresh", type=click.IntRange(min=1), default=5, show_default=True,
              help="Seconds between reloads of the pages.")
@modules_option
def ui(db: str, host: str, port: int, token: str | None, refresh: int, modules: tuple[str, ...]) -> None:
    """Serve the store's runs: a run list, run timelines, a JSON API (/openapi.json) and the store's
    Prometheus metrics (/metrics).

    Starting runs and answering queries over the API needs the workflows' code: -m MODULE.
    Needs the ui extra: pip install "replaykit[ui]". Until Ctrl-C or SIGTERM."""
    try:
        import uvicorn

        from ..ui.app import create_app
    except ImportError as exc:
        raise UsageError(f'replaykit ui needs the ui extra ({exc}): pip install "replaykit[ui]"') from None
    if token is None and not _loopback(host):
        raise UsageError(f"listening on {host} lets other machines in: give a --token (or REPLAYKIT_UI_TOKEN) "
                         "for writes to need, or listen on 127.0.0.1")
    import_modules(modules)
    with open_store(db, create=False):  # a mistyped path is said here, not in the server's log
        pass
    listening = _listen(host, port)
    port = listening.getsockname()[1]  # the one the system chose for --port 0
    where = f"[{host}]" if ":" in host else host
    click.echo(f"replaykit ui: http://{where}:{port}/ (API: /api/runs, /openapi.json); Ctrl-C stops it", err=True)
    app = create_app(db, token=token, refresh=refresh, local_only=_loopback(host))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, bound before the address is printed: what is printed is what
    answers, also for ``--port 0``."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): give another --port "
                         "(0 lets the system choose one) or --host") from None
