"""How the command line prints: tables for people, one JSON document for scripts.

Everything printed from a store goes through :func:`shown` (control characters escaped, so a value
in the store cannot move the cursor or hide what is printed around it) or through :func:`json_text`;
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


def shown_lines(text: str, indent: str = "  ") -> str:
    """:func:`shown`, keeping the lines of a message written on several (a non-determinism error's
    side-by-side table): every line after the first is indented under it."""
    return f"\n{indent}".join(shown(line) for line in text.split("\n"))


def json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as JSON for a terminal: readable text kept, every character that is not printable (a
    C1 control such as the CSI, DEL, a bidi override) written as a ``\\u`` escape, which JSON reads back."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    if text.replace("\n", "").isprintable():  # newlines: only the indentation's (JSON escapes those in strings)
        return text
    return "".join(c if c.isprintable() or c == "\n" else _escaped(c) for c in text)


def _escaped(c: str) -> str:
    code = ord(c)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a surrogate pair, as JSON writes a character beyond the basic plane
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def emit_json(data: Any) -> None:
    click.echo(json_text(data, indent=2))


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
