"""``replaykit`` command line: inspect a store and send signals from a shell.

    replaykit list orders.db
    replaykit history orders.db order-o-42
    replaykit signal orders.db order-o-42 approved true     # payload is JSON
    replaykit cancel orders.db order-o-42                   # also: pause, resume
    replaykit check orders.db -m myapp.workflows            # replay every history against current code
    replaykit restart orders.db order-o-42 --from-step 3 -m myapp.workflows   # a failed/cancelled run again
    replaykit fork orders.db order-o-42 order-o-42-b --step 3 -m myapp.workflows
    replaykit worker postgresql://app@db/orders -m myapp.workflows -q orders --limit orders=10   # serve runs
    replaykit workers postgresql://app@db/orders                              # the registered workers
    replaykit migrate orders.db            # checksum a store from before checksums (vouching for its rows)

None of them creates a store: a path with none is an error (exit 1), as is a signal
to a run that has ended.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Any

from . import control
from .errors import ReplayKitError
from .history import Status
from .payloads import pickled_type
from .restarting import fork, restart
from .store import open_store
from .store.work import Queue, WorkerRecord


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="replaykit",
                                     description="Inspect replaykit stores, control runs, and serve them as a worker.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list workflow runs")
    p.add_argument("db")
    p.add_argument("--status", choices=[s.value for s in Status])
    p = sub.add_parser("history", help="print a run's recorded events")
    p.add_argument("db")
    p.add_argument("workflow_id")
    p = sub.add_parser("signal", help="send a signal to a run (picked up by the engine driving it)")
    p.add_argument("db")
    p.add_argument("workflow_id")
    p.add_argument("name")
    p.add_argument("payload", nargs="?", default="null", help="JSON value (default: null)")
    for verb, text in (("cancel", "cancel a run (raises rk.Cancelled at its current yield)"),
                       ("pause", "pause a run at its next yield"), ("resume", "resume a paused run")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("db")
        p.add_argument("workflow_id")
    p = sub.add_parser("check", help="replay every history against the current code (exit 1 on divergence)")
    p.add_argument("db")
    p = sub.add_parser("restart", help="start a failed, cancelled or timed-out run again, same id and arguments")
    p.add_argument("db")
    p.add_argument("workflow_id")
    p.add_argument("--from-step", type=_step, default=None,
                   help="reuse the recorded steps before this one (default: start from the beginning)")
    p = sub.add_parser("fork", help="copy a run into a new id, reusing its steps before --step")
    p.add_argument("db")
    p.add_argument("workflow_id")
    p.add_argument("new_id")
    p.add_argument("--step", type=_step, required=True, help="the first step the new run runs live")
    p = sub.add_parser("worker", help="serve queued runs of the workflows in -m modules until SIGTERM/Ctrl-C")
    p.add_argument("db")
    p.add_argument("-q", "--queue", action="append", default=[], help="queue to serve (default: default); repeatable")
    p.add_argument("--limit", action="append", default=[], type=_limit, metavar="QUEUE=N",
                   help="at most N runs of QUEUE held at once across all workers (stored for all); repeatable")
    p.add_argument("--worker-limit", action="append", default=[], type=_limit, metavar="QUEUE=N",
                   help="at most N runs of QUEUE held at once by this worker; repeatable")
    p.add_argument("--per-key", action="append", default=[], type=_limit, metavar="QUEUE=N",
                   help="at most N runs of QUEUE held at once per partition key (stored for all); repeatable")
    p.add_argument("--rate", action="append", default=[], type=_rate, metavar="QUEUE=K/SECONDS",
                   help="at most K runs of QUEUE started per SECONDS, fleet-wide (stored for all); repeatable")
    p.add_argument("--concurrency", type=int, default=100, help="runs held at once by this worker")
    p.add_argument("--activity-threads", type=int, default=16)
    p.add_argument("--drivers", type=int, default=None, help="threads driving runs (default: 1)")
    p.add_argument("--durability", choices=["crash", "power"], default="crash")
    p.add_argument("--grace", type=float, default=30.0, help="seconds running activities get to finish on SIGTERM")
    p.add_argument("--lease", type=float, default=30.0,
                   help="seconds without a heartbeat before the others take this worker's runs")
    p.add_argument("--heartbeat", type=float, default=0.5, help="seconds between heartbeats")
    p.add_argument("--worker-id", default=None, help="this worker's id in the registry (default: host-pid-random)")
    p.add_argument("--code-version", default=None,
                   help="this worker's code version (default: a digest of its workflows' code)")
    p = sub.add_parser("workers", help="list the registered workers and the runs each holds")
    p.add_argument("db")
    p = sub.add_parser("migrate", help="checksum the histories of a store from before checksums, vouching for them "
                                       "as they stand (with the secret the store will use)")
    p.add_argument("db")
    for verb in ("check", "restart", "fork", "worker"):  # they replay histories: the workflows' code must be imported
        sub.choices[verb].add_argument("-m", "--module", action="append", default=[],
                                       help="module that defines workflows (imported to register them); repeatable")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return _check(args.db, args.module)
        if args.command == "worker":
            return _worker(args)
        if args.command == "restart":
            _import(args.module)
            restart(args.db, args.workflow_id, from_step=args.from_step)
            print(f"restarted {args.workflow_id}: an engine that recovers (or rk.run with the same id) drives it")
            return 0
        if args.command == "fork":
            _import(args.module)
            fork(args.db, args.workflow_id, args.new_id, step=args.step)
            print(f"forked {args.workflow_id} into {args.new_id} from step {args.step}")
            return 0
        if args.command == "migrate":
            with open_store(args.db, create=False, migrate=True):
                print(f"{args.db}: its histories are checksummed (store schema is current)")
            return 0
        if args.command in ("cancel", "pause", "resume"):
            getattr(control, args.command)(args.db, args.workflow_id)
            return 0
        if args.command == "signal":
            try:
                payload = json.loads(args.payload)
            except json.JSONDecodeError as exc:
                parser.error(f"payload must be JSON (e.g. true, 42, '\"text\"', '{{\"k\": 1}}'): {exc}")
            control.send_signal(args.db, args.workflow_id, args.name, payload)
            return 0
        with control.opened(args.db) as store:  # an existing store only: reading creates nothing
            if args.command == "workers":
                _workers(store.workers())
            elif args.command == "list":
                for info in store.list(Status(args.status) if args.status else None):
                    custom = "" if info.custom_status is None else json.dumps(info.custom_status)
                    problem = "" if info.problem is None else f"\tproblem: {info.problem}"
                    print(_shown(f"{info.workflow_id}\t{info.name}\t{info.status.value}\t{_time(info.updated_at)}\t"
                                 f"{custom}{problem}"))
            else:
                for e in store.events(args.workflow_id):
                    # Never unpickle to show a value: looking at a run must not run code from the store.
                    value = _opaque(e.payload) if isinstance(e.payload, bytes) else e.payload
                    print(_shown(f"{e.seq}\tstep {e.step}\t{_time(e.at)}\t{e.describe()}\t{e.outcome}\t{value}"))
        return 0
    except (ReplayKitError, ValueError) as exc:  # ValueError: an argument the API refused, said in its words
        print(_shown(f"replaykit: {exc}"), file=sys.stderr)
        return 1


def _opaque(pickled: bytes) -> str:
    """A pickled value as shown: its type (read from its opcodes, not unpickled) and size."""
    name = pickled_type(pickled)
    return f"<pickle{'' if name is None else ' ' + name}, {len(pickled)} bytes>"


def _shown(line: str) -> str:
    """A line of store data as printed: its control characters (but tabs) escaped, so a value in the
    store cannot move the cursor, retitle the terminal or hide what is printed around it."""
    if line.replace("\t", "").isprintable():
        return line
    return "".join(c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode() for c in line)


def _import(modules: list[str]) -> None:
    """Import the user's workflow modules (from the current directory too), so their workflows register."""
    sys.path.insert(0, "")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise _UsageError(f"-m {name}: the module cannot be imported ({exc}). Name a module that defines "
                              "your workflows, importable from the current directory or the Python path.") from exc


class _UsageError(ReplayKitError):
    """A command-line argument that cannot be used (reported on one line, exit 1)."""


def _step(text: str) -> int:
    """A step number for --step / --from-step: steps count from 1, in the workflow's own yield order."""
    try:
        step = int(text)
    except ValueError:
        step = 0
    if step < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step: steps count from 1 (see replaykit history)")
    return step


def _worker(args: argparse.Namespace) -> int:
    from .worker import Worker
    from .workflow import Workflow

    if not args.module:
        raise _UsageError("a worker needs the workflows it may drive: name their module with -m MODULE")
    names = args.queue or ["default"]
    limits: dict[str, dict[str, Any]] = {}
    for option, field in (("limit", "concurrency"), ("worker_limit", "worker_concurrency"), ("per_key", "per_key"),
                          ("rate", "rate")):
        for queue, value in getattr(args, option):
            if queue not in names:
                raise _UsageError(f"--{option.replace('_', '-')} {queue}: not a queue this worker serves "
                                  "(name it with -q too)")
            limits.setdefault(queue, {})[field] = value
    queues: list[str | Queue] = [Queue(q, **limits[q]) if q in limits else q for q in names]
    _import(args.module)
    workflows = {id(v): v for name in args.module for v in vars(sys.modules[name]).values() if isinstance(v, Workflow)}
    if not workflows:
        raise _UsageError(f"no workflow found in {', '.join(args.module)}: decorate them with @rk.workflow")
    made: list[Worker] = []
    # A SIGTERM while the worker starts (it claims from its first moment) stops it gracefully too.
    early = signal.signal(signal.SIGTERM, lambda *_: made[0].request_stop() if made else sys.exit(143))
    store = open_store(args.db, create=False)  # a mistyped path is an error, never a new store
    try:
        worker = Worker(store, workflows=list(workflows.values()), queues=queues, concurrency=args.concurrency,
                        activity_threads=args.activity_threads, grace=args.grace, drivers=args.drivers,
                        durability=args.durability, lease=args.lease, heartbeat=args.heartbeat,
                        worker_id=args.worker_id, version=args.code_version)
    except BaseException:
        store.close()
        raise
    made.append(worker)
    print(f"worker {worker.worker_id} serving {', '.join(names)} "
          f"(code version {worker.version}); SIGTERM or Ctrl-C stops it", flush=True)
    try:
        worker.run()
    finally:
        signal.signal(signal.SIGTERM, early)
        store.close()
    print(f"worker {worker.worker_id} stopped", flush=True)
    return 0


def _limit(text: str) -> tuple[str, int]:
    """``QUEUE=N`` for --limit."""
    queue, _, n = text.partition("=")
    if not queue or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write QUEUE=N, N a whole number of at least 1 (e.g. orders=10)")
    return queue, int(n)


def _rate(text: str) -> tuple[str, tuple[int, float]]:
    """``QUEUE=K/SECONDS`` for --rate."""
    queue, _, spec = text.partition("=")
    starts, _, seconds = spec.partition("/")
    try:
        rate = (int(starts), float(seconds))
    except ValueError:
        rate = (0, 0.0)
    if not queue or rate[0] < 1 or not rate[1] > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: write QUEUE=K/SECONDS, K starts of at least 1 per a positive "
                                         "number of seconds (e.g. orders=100/60)")
    return queue, rate


def _workers(records: list[WorkerRecord]) -> None:
    now = time.time()
    print("WORKER\tHOST\tPID\tQUEUES\tVERSION\tHEARTBEAT\tSTATE\tRUNS")
    for w in records:
        state = "stopping" if w.stopping else "running"
        print(_shown(f"{w.worker_id}\t{w.host}\t{w.pid}\t{','.join(w.queues)}\t{w.version}\t"
                     f"{max(0.0, now - w.heartbeat_at):.1f}s ago\t{state}\t{' '.join(w.runs) or '-'}"))


def _check(db: str, modules: list[str]) -> int:
    from .testing.replayer import replay_all  # the checker lives with the testing tools

    _import(modules)
    reports = replay_all(db)
    for r in reports:
        if r.ok:
            print(_shown(f"ok    {r.workflow_id} ({r.workflow}, {r.steps} steps)"))
        else:
            print(_shown(f"FAIL  {r.workflow_id} ({r.workflow}): {r.error}"))
    failed = sum(not r.ok for r in reports)
    print(f"{len(reports) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
