"""How the command line prints: tables for people, one JSON document for scripts.

Everything printed from a store goes through :func:`shown` (control characters escaped, so a value
in the store cannot move the cursor or hide what is printed around it) or through ``json.dumps``;
a pickled value is never unpickled to be shown (``replaykit/views.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def shown(text: str) -> str:
    """Store data as printed: control characters escaped (tabs kept)."""
    if text.replace("\t", "").isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode() for c in text)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; cells are escaped (:func:`shown`) and tabs made spaces."""
    cells = [[shown("" if c is None else str(c)).replace("\t", " ") for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in (list(headers), *cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def compact(value: Any, limit: int = 60) -> str:
    """A value on one line for a table cell, cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"
