"""Verbs that change runs: ``signal``, ``cancel``, ``terminate``, ``pause``, ``resume``, ``restart``, ``fork``,
``migrate``, ``delete`` and ``prune``.

Each acts on a run that exists, in a store that exists, from any process: the engine or worker
driving the run notices within its poll interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import control, views
from ..control import opened
from ..errors import UnknownQueryError
from ..restarting import fork as fork_run
from ..restarting import restart as restart_run
from ..retention import ENDED, kept_for_family
from ..retention import prune as prune_runs
from ..store import open_store
from ..store.urls import without_password
from ..terminating import terminate as terminate_run
from . import output
from .common import UsageError, db_argument, duration, import_modules, json_option, modules_option


def _json_value(text: str) -> Any:
    """A JSON value given on the command line (arguments, payloads)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{text!r} is not JSON ({exc}): write 42, true, '\"text\"' or '{{\"k\": 1}}'") \
            from None


@click.command()
@db_argument
@click.argument("workflow_id")
@click.argument("name")
@click.argument("payload", default="null", callback=lambda c, p, v: _json_value(v))
def signal(db: str, workflow_id: str, name: str, payload: Any) -> None:
    """Send signal NAME to a run; PAYLOAD is a JSON value (default: null)."""
    control.send_signal(db, workflow_id, name, payload)


@click.command()
@db_argument
@click.argument("workflow_id")
@click.option("--reason", default="cancelled", help="Recorded as the message of the rk.Cancelled raised.")
def cancel(db: str, workflow_id: str, reason: str) -> None:
    """Cancel a run: rk.Cancelled is raised at its current yield.

    Its except and finally blocks and compensations run; a pending run ends cancelled at once."""
    control.cancel(db, workflow_id, reason)


@click.command()
@db_argument
@click.argument("workflow_id")
@click.option("--reason", default="terminated", help="Recorded as the message of the rk.Terminated error.")
@click.option("--wait", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="How long a process that holds the run may take to end it.")
def terminate(db: str, workflow_id: str, reason: str, wait: float) -> None:
    """End a run now, cancelled, without running more of its steps.

    No activity or compensation runs (see cancel for those); its unfinished children are cancelled.
    A run nobody holds is ended at once, even if its code is gone; one a process holds is ended by
    that process at its next poll. Returns once the run has ended."""
    terminate_run(db, workflow_id, reason, wait=wait)


@click.command()
@db_argument
@click.argument("workflow_id")
def pause(db: str, workflow_id: str) -> None:
    """Pause a run at its next yield, until resume (across restarts too)."""
    control.pause(db, workflow_id)


@click.command()
@db_argument
@click.argument("workflow_id")
def resume(db: str, workflow_id: str) -> None:
    """Resume a paused run."""
    control.resume(db, workflow_id)


def _step(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"{value} is not a step: steps count from 1 (see replaykit history)")
    return value


@click.command()
@db_argument
@click.argument("workflow_id")
@click.option("--from-step", type=int, default=None, callback=_step,
              help="Reuse the recorded steps before this one (default: start from the beginning).")
@modules_option
def restart(db: str, workflow_id: str, from_step: int | None, modules: tuple[str, ...]) -> None:
    """Run a failed, cancelled or timed-out run again (same id and arguments)."""
    import_modules(modules)
    restart_run(db, workflow_id, from_step=from_step)
    click.echo(output.shown(f"restarted {workflow_id}: an engine that recovers (or rk.run with the same id) "
                            "drives it"))


@click.command()
@db_argument
@click.argument("workflow_id")
@click.argument("new_id")
@click.option("--step", type=int, required=True, callback=_step, help="The first step the new run runs live.")
@modules_option
def fork(db: str, workflow_id: str, new_id: str, step: int, modules: tuple[str, ...]) -> None:
    """Copy a run into NEW_ID, reusing its recorded steps before --step."""
    import_modules(modules)
    fork_run(db, workflow_id, new_id, step=step)
    click.echo(output.shown(f"forked {workflow_id} into {new_id} from step {step}"))


@click.command()
@db_argument
def migrate(db: str) -> None:
    """Checksum the histories of a store from before checksums.

    This vouches for them as they stand, with the secret the store will use."""
    with open_store(db, create=False, migrate=True):
        click.echo(f"{without_password(db)}: its histories are checksummed (store schema is current)")


@click.command()
@db_argument
@click.argument("workflow_ids", nargs=-1, required=True, metavar="ID...")
@json_option
def delete(db: str, workflow_ids: tuple[str, ...], as_json: bool) -> None:
    """Delete runs that ended: every generation, events, signals (exit 1 if one could not be).

    A run its family still needs is kept, as a prune keeps it: one whose parent has not ended (the parent
    would run it again), or one with a child that has not."""
    with opened(db) as store:
        family = kept_for_family(store, workflow_ids)
        deleted = store.delete([w for w in workflow_ids if w not in family])
    kept = [w for w in workflow_ids if w not in deleted]
    if as_json:
        output.emit_json({"deleted": deleted, "kept": kept})
    else:
        for workflow_id in deleted:
            click.echo(output.shown(f"deleted {workflow_id}"))
    if kept:
        why = "; ".join(f"{w!r}: {family.get(w, 'no such run, or it has not ended')}" for w in kept)
        raise UsageError(f"not deleted: {why} (only runs that completed, failed, were cancelled or timed out "
                         "are deleted, and a family is kept whole: see docs/retention.md)")


def _older_than(ctx: click.Context, param: click.Parameter, value: str) -> float:
    seconds = duration(value)
    if seconds is None:
        raise click.BadParameter(f"{value!r}: write a duration such as 30d, 12h, 90m or 1w")
    return seconds


@click.command()
@db_argument
@click.option("--older-than", required=True, callback=_older_than, metavar="DURATION",
              help="Runs that ended longer ago than this: 30d, 12h, 90m, 1w.")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in ENDED]),
              help="Only runs that ended so; repeatable (default: every ending).")
@click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
              help="Runs deleted per transaction.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@json_option
def prune(db: str, older_than: float, statuses: tuple[str, ...], batch: int, dry_run: bool, as_json: bool) -> None:
    """Delete runs that ended long enough ago (never running, paused or pending ones; families kept whole).

    Space is reused by new runs; to give it back to the file system, run VACUUM (see docs/retention.md)."""
    ids = prune_runs(db, older_than, statuses=statuses or ENDED, batch=batch, dry_run=dry_run)
    if as_json:
        output.emit_json({"deleted" if not dry_run else "would_delete": ids})
        return
    for workflow_id in ids:
        click.echo(output.shown(f"{'would delete' if dry_run else 'deleted'} {workflow_id}"))
    click.echo(f"{len(ids)} run{'s' * (len(ids) != 1)} {'would be ' if dry_run else ''}deleted")


@click.command("import")
@db_argument
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_(db: str, path: Path) -> None:
    """Record an exported history as a run of DB, under its id.

    A run that had ended is recorded ended; one that had not is recorded running, and an engine or
    worker on DB resumes it. Pickled values read back only with the secret of the store they came from."""
    from ..testing.replayer import History, import_history

    try:
        history = History.from_json(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc}); nothing was imported") from None
    except RecursionError:
        raise UsageError(f"{path}: not a history export (JSON nested too deep to read); nothing was imported") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: a damaged history export (missing or wrong {exc}); nothing was imported") from None
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}; nothing was imported") from None
    with opened(db) as store:
        status = import_history(store, history)
    click.echo(output.shown(f"imported {history.workflow_id} ({history.workflow}, {len(history.events)} events): "
                            f"{status.value}"))


def _json_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Any]:
    return [_json_value(text) for text in values]


@click.command()
@db_argument
@click.argument("workflow")
@click.argument("args", nargs=-1, callback=_json_values)
@click.option("--id", "workflow_id", required=True, help="The new run's workflow id.")
@click.option("--queue", default="default", show_default=True, help="The queue workers claim it from.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs are claimed first.")
@click.option("--key", default=None, help="The partition key a queue's per-key limit counts.")
@click.option("--delay", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Pending until then (default: ready at once).")
@modules_option
def start(db: str, workflow: str, args: list[Any], workflow_id: str, queue: str, priority: int, key: str | None,
          delay: float | None, modules: tuple[str, ...]) -> None:
    """Start a run of WORKFLOW (its registered name) with JSON ARGS, queued for workers.

    `replaykit worker DB -m MODULE` (or an rk.Worker) drives it. Starting the same id again with the
    same workflow and arguments is the same run; with others, an error."""
    from ..client import Client
    from ..errors import UnknownWorkflowError
    from ..workflow import lookup

    import_modules(modules)
    try:
        wf = lookup(workflow)
    except UnknownWorkflowError:
        raise UsageError(f"no workflow named {workflow!r} is registered: name the module that defines it with "
                         "-m MODULE (its @rk.workflow name, or the function's name)") from None
    with opened(db) as store:
        Client(store).start(wf, *args, workflow_id=workflow_id, queue=queue, priority=priority, key=key,
                            start_delay=delay)
    click.echo(output.shown(f"started {workflow_id} ({wf.name}) in queue {queue}"))


@click.command()
@db_argument
@click.argument("workflow_id")
@click.argument("name")
@click.argument("args", nargs=-1, callback=_json_values)
@modules_option
def query(db: str, workflow_id: str, name: str, args: list[Any], modules: tuple[str, ...]) -> None:
    """Ask a run's query handler NAME (with JSON ARGS); prints its answer as JSON.

    The history is replayed with the code of the -m modules, without running any activity or
    changing the run."""
    import_modules(modules)
    try:
        answer = control.query(db, workflow_id, name, *args)
    except UnknownQueryError as exc:
        raise UsageError(str(exc)) from None
    click.echo(output.json_text(views.jsonable(answer)))
