"""The version of the code a worker runs, as the store keeps it beside a run it could not drive: a
worker of another version (a fixed activity, a newer replaykit) takes such a run up again."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .activity import Activity

if TYPE_CHECKING:
    from .workflow import Workflow


def code_version(workflows: Iterable[Workflow[Any]]) -> str:
    """A short digest of replaykit's own code, the workflows' names and code, and the activities they
    name (a module global used in their code): workers running the same code agree on it; a fixed
    activity, or another release of replaykit, makes a new version."""
    digest = hashlib.blake2b(app_digest(workflows), digest_size=6)
    digest.update(_replaykit_build())
    return digest.hexdigest()


def app_digest(workflows: Iterable[Workflow[Any]]) -> bytes:
    """The digest of the workflows' and their activities' code alone."""
    digest = hashlib.blake2b(digest_size=6)
    for wf in sorted(workflows, key=lambda w: w.name):
        digest.update(wf.name.encode())
        code = getattr(wf.fn, "__code__", None)
        if code is not None:
            names: set[str] = set()
            _digest_code(digest, code, names)
            scope = getattr(wf.fn, "__globals__", {})
            for name in sorted(names):
                named = scope.get(name)
                activity_code = getattr(getattr(named, "fn", None), "__code__", None)
                if isinstance(named, Activity) and activity_code is not None:
                    digest.update(named.name.encode())
                    _digest_code(digest, activity_code, set())
    return digest.digest()


@functools.cache
def _replaykit_build() -> bytes:
    """A digest of replaykit's own source files (read once per process): two releases with one
    version number still differ."""
    digest = hashlib.blake2b(digest_size=8)
    root = os.path.dirname(os.path.abspath(__file__))
    for folder, dirs, files in os.walk(root):  # in name order: the same digest wherever it is installed
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(f for f in files if f.endswith(".py") and not f.startswith(".")):
            path = os.path.join(folder, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):  # an editor's lock link beside a file being edited
                continue
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.digest()


def _digest_code(digest: Any, code: types.CodeType, names: set[str]) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    names.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _digest_code(digest, const, names)
        else:
            digest.update(_stable_repr(const).encode())


def _stable_repr(const: object) -> str:
    """A constant as the same text in every process: a set literal (a frozenset constant) lists its
    members in an order that depends on the process's string hash seed."""
    if isinstance(const, frozenset):
        return f"frozenset({sorted(_stable_repr(c) for c in const)})"
    if isinstance(const, tuple):
        return f"({', '.join(_stable_repr(c) for c in const)},)"
    return repr(const)
