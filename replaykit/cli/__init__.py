"""``replaykit``: look at a store's runs, act on them, and serve them, from a shell.

    replaykit list orders.db --status failed --since 1d        # a table; --json for scripts
    replaykit describe orders.db order-o-42                    # arguments, status, result or error
    replaykit history orders.db order-o-42
    replaykit export orders.db order-o-42 -o order-o-42.json   # import it elsewhere: replaykit import DB FILE
    replaykit show orders.db order-o-42 --html run.html -m myapp.workflows   # the run's timeline, one file
    replaykit result orders.db order-o-42 --wait 30            # exit 0 completed, 3 failed, 4 not ended
    replaykit start orders.db order 42 --id order-o-42 -m myapp.workflows   # queued for workers; args are JSON
    replaykit query orders.db order-o-42 progress -m myapp.workflows
    replaykit signal orders.db order-o-42 approved true        # payload is JSON
    replaykit cancel orders.db order-o-42                      # also: terminate, pause, resume
    replaykit check orders.db -m myapp.workflows               # replay every history against current code
    replaykit restart orders.db order-o-42 --from-step 3 -m myapp.workflows
    replaykit fork orders.db order-o-42 order-o-42-b --step 3 -m myapp.workflows
    replaykit worker postgresql://app@db/orders -m myapp.workflows -q orders --limit orders=10
    replaykit workers postgresql://app@db/orders
    replaykit migrate orders.db
    replaykit ui orders.db                                     # run list, timelines, JSON API on localhost:8000
    replaykit prune orders.db --older-than 30d --status completed   # delete old histories

None of them creates a store: a path with none is an error. Exit codes: 0 done, 1 an error
(reported on one line: ``replaykit: ...``), 2 a usage error, and for ``result`` 3 (the run did
not complete) and 4 (it has not ended). See ``docs/cli.md``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import NoReturn

import click

from .. import __version__
from ..errors import ReplayKitError
from . import acting, reading, serving, showing
from .output import shown_lines


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="replaykit", message="%(prog)s %(version)s")
def cli() -> None:
    """Look at replaykit stores, act on their runs, and serve them as a worker.

    DB is an SQLite file or a postgresql:// URL; it must exist.
    """


for command in (reading.list_runs, reading.describe, reading.history, reading.result, acting.signal, acting.cancel,
                acting.terminate, acting.pause, acting.resume, serving.check, acting.restart, acting.fork,
                serving.worker,
                reading.workers, acting.migrate, acting.delete, acting.prune, showing.show, reading.export,
                acting.import_, acting.start, acting.query, serving.ui):
    cli.add_command(command)


def run() -> NoReturn:
    """The ``replaykit`` program: :func:`main`, then the process ends. Activities a stopped worker
    abandoned (their runs run them again where they go on) may still be running: the process exits
    without waiting for them, where Python would wait at its exit (a caller of :func:`main` does)."""
    code = main()
    running = [t for t in threading.enumerate() if t.name.startswith("replaykit-activity") and t.is_alive()]
    if running:
        click.echo(f"replaykit: exiting without waiting for {len(running)} abandoned "
                   f"activit{'y' if len(running) == 1 else 'ies'}", err=True)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    try:
        code = cli.main(args=argv, prog_name="replaykit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("replaykit: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (ReplayKitError, ValueError, OSError) as exc:  # ValueError: an argument the API refused
        click.echo(shown_lines(f"replaykit: {exc}"), err=True)
        return 1
    return code if isinstance(code, int) else 0
