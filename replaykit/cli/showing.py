"""``show``: a run's timeline as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import click

from .. import timeline
from ..control import opened
from ..timeline_html import render
from .common import db_argument, import_modules, modules_option


@click.command()
@db_argument
@click.argument("workflow_id")
@click.option("--html", "path", required=True, type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the page here (one file: no network, no CDN).")
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Levels of child runs nested under their parent's step.")
@modules_option
def show(db: str, workflow_id: str, path: Path, depth: int, modules: tuple[str, ...]) -> None:
    """Draw a run's timeline: its steps on a time axis, failures and tracebacks, children nested.

    With -m MODULE the history is replayed with the workflow's code (no activity runs) so that each
    bar starts when the workflow yielded the step, and the line the run waits at is shown."""
    import_modules(modules)
    with opened(db, reading=True) as store:
        drawn = timeline.build(store, workflow_id, replay=bool(modules), depth=depth)
    path.write_text(render(drawn), encoding="utf-8")
    click.echo(f"wrote {path} ({len(drawn.lanes)} steps)")
