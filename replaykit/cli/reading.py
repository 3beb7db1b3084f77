"""Verbs that read a store: ``list``, ``describe``, ``history``, ``result``, ``workers``."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from .. import views
from ..control import opened
from ..errors import WorkflowNotFoundError
from ..handle import ended_with
from ..history import Event
from ..store.urls import without_password
from . import output
from .common import STATUSES, db_argument, duration, import_modules, json_option, modules_option

# Exit codes of ``result`` beyond 0 (completed), 1 (an error) and 2 (a usage error)
NOT_COMPLETED = 3  # the run ended without a result: failed, cancelled or timed out
NOT_ENDED = 4  # the run has not ended (yet)

def moment(text: str) -> float:
    """``--since``/``--until``: ISO 8601 (``2026-12-01``, ``2026-12-01T10:00:00+01:00``; UTC if no zone)
    or a time ago (``30s``, ``15m``, ``2h``, ``7d``, ``1w``)."""
    ago = duration(text)
    if ago is not None:
        return time.time() - ago
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a time (2026-12-01 or 2026-12-01T10:00:00Z) nor a time "
                                 "ago (30s, 15m, 2h, 7d, 1w)") from None
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


@click.command("list")
@db_argument
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only runs with this status; repeatable.")
@click.option("--workflow", "workflows", multiple=True, metavar="NAME", help="Only runs of this workflow; repeatable.")
@click.option("--prefix", default="", help="Only ids that start with this.")
@click.option("--since", default=None, callback=lambda c, p, v: None if v is None else moment(v), metavar="TIME",
              help="Only runs created at or after TIME: 2026-12-01, 2026-12-01T10:00Z, or ago: 30m, 2h, 7d.")
@click.option("--until", default=None, callback=lambda c, p, v: None if v is None else moment(v), metavar="TIME",
              help="Only runs created before TIME (as --since).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many (the newest).")
@json_option
def list_runs(db: str, statuses: tuple[str, ...], workflows: tuple[str, ...], prefix: str, since: float | None,
              until: float | None, limit: int | None, as_json: bool) -> None:
    """List runs, newest first (the newest generation of each id)."""
    with opened(db, reading=True) as store:
        runs = views.listed(store, statuses=statuses, workflows=workflows, prefix=prefix, since=since, until=until,
                            limit=limit)
    if as_json:
        output.emit_json([views.info_json(info) for info in runs])
        return
    output.table(["ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "CUSTOM STATUS", "PROBLEM"],
                 [[i.workflow_id, i.name, i.status.value, views.when(i.created_at), views.when(i.updated_at),
                   "" if i.custom_status is None else output.compact(i.custom_status), i.problem or ""]
                  for i in runs])


@click.command()
@db_argument
@click.argument("workflow_id")
@modules_option
@json_option
def describe(db: str, workflow_id: str, modules: tuple[str, ...], as_json: bool) -> None:
    """Show one run: arguments, status, where it stands, how it ended.

    With -m MODULE (the module that defines its workflow) the history is replayed with the code,
    without running any activity, to say what the run waits on and at which line."""
    import_modules(modules)
    with opened(db, reading=True) as store:
        info = store.info(workflow_id)
        if info is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {without_password(db)}")
        d = views.described(store, info, replay=bool(modules))
    if as_json:
        output.emit_json(d)
        return
    last = d["last_event"]
    rows = [("id", d["workflow_id"]), ("workflow", d["name"]), ("status", d["status"]),
            ("generation", d["generation"]), ("created", d["created_at"]), ("updated", d["updated_at"]),
            ("args", output.compact(d["args"], 200)), ("kwargs", output.compact(d["kwargs"], 200)),
            ("custom status", None if d["custom_status"] is None else output.compact(d["custom_status"], 200)),
            ("queue", d["queue"]), ("problem", d["problem"]),
            ("parent", None if d["parent"] is None else f"{d['parent']['workflow_id']} (step {d['parent']['step']})"),
            ("children", ", ".join(f"{c['workflow_id']} ({c['status']})" for c in d["children"]) or None),
            ("timeout", None if d["timeout"] is None else f"{d['timeout']}s"), ("start at", d["start_at"]),
            ("driven by", d["driven_by"]), ("events", d["events"]),
            ("last event", None if last is None else
             " ".join(str(p) for p in (f"#{last['seq']}", f"step {last['step']}", last["kind"], last["name"],
                                       last["outcome"], f"at {last['at']}") if p)),
            ("waiting on", None if not d["waiting_on"] else
             ", ".join(f"step {w['step']} {w['kind']} {w['name'] or ''}".rstrip() + f" since {w['since']}"
                       for w in d["waiting_on"])),
            ("waiting at", d["waiting_at"]), ("note", d["note"]),
            ("result", output.compact(d["result"], 200) if "result" in d else None)]
    for key, value in rows:
        if value is not None:
            click.echo(f"{key + ':':15}{output.shown_lines(str(value), ' ' * 15)}")
    if "error" in d:
        error = d["error"]
        click.echo(f"{'error:':15}{output.shown(error['type'])}: {output.shown(error['message'])}")
        for line in error["traceback"].rstrip("\n").splitlines():
            click.echo(output.shown(line))


@click.command()
@db_argument
@click.argument("workflow_id")
@click.option("--all", "every", is_flag=True,
              help="Every generation (continued as new, or restarted), oldest first; not only the newest.")
@json_option
def history(db: str, workflow_id: str, every: bool, as_json: bool) -> None:
    """Print a run's recorded events (its newest generation, or --all), checked."""
    with opened(db, reading=True) as store:
        if not every:
            _print_events(list(store.events(workflow_id)), as_json)
            return
        generations = [(g, list(store.generation_events(workflow_id, g.number)))
                       for g in store.generations(workflow_id)]
    if as_json:
        output.emit_json([{"generation": g.number, "status": g.status.value, "created_at": views.when(g.created_at),
                           "updated_at": views.when(g.updated_at), "events": [views.event_json(e) for e in events]}
                          for g, events in generations])
        return
    for g, events in generations:
        click.echo(f"generation {g.number}: {g.status.value}, from {views.when(g.created_at)} "
                   f"to {views.when(g.updated_at)}")
        _print_events(events, False)


def _print_events(events: list[Event], as_json: bool) -> None:
    if as_json:
        output.emit_json([views.event_json(e) for e in events])
        return
    output.table(["SEQ", "STEP", "AT", "EVENT", "OUTCOME", "VALUE"],
                 [[e.seq, e.step, views.when(e.at), e.describe(), e.outcome,
                   output.compact(views.value_of(e.encoding, e.payload), 100)] for e in events])


@click.command()
@db_argument
@click.argument("workflow_id")
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="Wait up to this long for the run to end.")
def result(db: str, workflow_id: str, wait: float) -> None:
    """Print a run's result as JSON (exit 0).

    A run that failed, was cancelled or timed out prints its error on stderr (exit 3); a run that
    has not ended says so (exit 4)."""
    deadline = time.monotonic() + wait
    with opened(db, reading=True) as store:
        while True:
            info = store.info(workflow_id)
            if info is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} in {without_password(db)}")
            last = ended_with(store, workflow_id) if info.status.is_terminal else None
            if last is not None or time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    if last is None:
        click.echo(f"replaykit: workflow {workflow_id!r} has not ended: it is {info.status.value}", err=True)
        raise click.exceptions.Exit(NOT_ENDED)
    ended = views.outcome_json(last)
    if "error" in ended:
        error = ended["error"]
        click.echo(output.shown(f"replaykit: workflow {workflow_id!r} {info.status.value}: {error['type']}: "
                                f"{error['message']}"), err=True)
        raise click.exceptions.Exit(NOT_COMPLETED)
    output.emit_json(ended["result"])


@click.command()
@db_argument
@json_option
def workers(db: str, as_json: bool) -> None:
    """List the registered workers and the runs each holds."""
    with opened(db, reading=True) as store:
        records = store.workers()
    now = time.time()
    if as_json:
        output.emit_json([{"worker_id": w.worker_id, "host": w.host, "pid": w.pid, "queues": list(w.queues),
                           "workflows": list(w.workflows), "version": w.version,
                           "started_at": views.when(w.started_at), "heartbeat_at": views.when(w.heartbeat_at),
                           "stopping": w.stopping, "runs": list(w.runs)} for w in records])
        return
    output.table(["WORKER", "HOST", "PID", "QUEUES", "VERSION", "HEARTBEAT", "STATE", "RUNS"],
                 [[w.worker_id, w.host, w.pid, ",".join(w.queues), w.version,
                   f"{max(0.0, now - w.heartbeat_at):.1f}s ago", "stopping" if w.stopping else "running",
                   " ".join(w.runs) or "-"] for w in records])


@click.command()
@db_argument
@click.argument("workflow_id")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write it here (default: stdout).")
def export(db: str, workflow_id: str, path: Path | None) -> None:
    """Write a run's history (its newest generation) as JSON: for import, or a replay test."""
    from ..testing.replayer import export_history

    with opened(db, reading=True) as store:
        history = export_history(store, workflow_id)
    text = json.dumps(history.to_json(), indent=1) + "\n"
    if path is None:
        click.echo(text, nl=False)
    else:
        path.write_text(text, encoding="utf-8")
