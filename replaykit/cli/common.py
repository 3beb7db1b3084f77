"""What the command's verbs share: the store argument, ``--json``, ``-m`` modules and usage errors."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import ReplayKitError
from ..history import Status

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> float | None:
    """Seconds in ``30s``, ``15m``, ``2h``, ``7d``, ``1w`` (``None``: not written so)."""
    found = _DURATION.match(text.strip())
    return None if found is None else float(found.group(1)) * _UNIT[found.group(2)]

STATUSES = [s.value for s in Status]

db_argument = click.argument("db", metavar="DB")  # an SQLite path or a postgresql:// URL; never created
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document (see docs/cli.md).")


def modules_option(f: F) -> F:
    return click.option("-m", "--module", "modules", multiple=True, metavar="MODULE",
                        help="Module that defines workflows (imported to register them); repeatable.")(f)


class UsageError(ReplayKitError):
    """A command-line argument that cannot be used (reported on one line, exit 1)."""


def import_modules(modules: tuple[str, ...] | list[str]) -> None:
    """Import the user's workflow modules (from the current directory too), so their workflows register."""
    sys.path.insert(0, "")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"-m {name}: the module cannot be imported ({exc}). Name a module that defines "
                             "your workflows, importable from the current directory or the Python path.") from exc
