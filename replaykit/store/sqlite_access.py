"""Whether this process may write an SQLite store, and how SQLite reads it when it may not.

A store in WAL mode needs its ``-wal`` and ``-shm`` files beside it even to be read: where the
directory is writable, SQLite makes them (``mode=ro``); where it is not and no log was left behind,
the file is read as it stands (``immutable=1``). A store whose log was left behind in a directory
nobody here may write cannot be read consistently: that is said, not guessed around.
"""

from __future__ import annotations

import os

from ..errors import StoreReadOnlyError


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK)


def read_only_query(path: str, wanted: bool = False) -> str | None:
    """``None`` if this process may write the store at ``path`` (or make it): it opens it read-write,
    even where it was ``wanted`` read-only (SQLite then keeps its log as a writer does: it folds it back
    into the file at the last close, and makes no file it leaves behind), refusing writes itself. Else
    the URI query that reads it. Raises :class:`StoreReadOnlyError` if it cannot be read consistently."""
    folder = os.path.dirname(os.path.abspath(path))
    wal, shm = path + "-wal", path + "-shm"
    if not os.path.exists(path):
        return "mode=ro" if wanted else None  # nothing to read: opening (or creating) it says what is wrong
    if _writable(path) and (_writable(folder) or (_writable(wal) and _writable(shm))):
        return None
    if _writable(folder) or os.path.exists(shm):
        return "mode=ro"
    if not os.path.exists(wal) or os.path.getsize(wal) == 0:
        return "mode=ro&immutable=1"  # nothing but the file: read as it stands
    raise StoreReadOnlyError(
        f"{path}: the store is read-only here, and its write-ahead log ({wal}) still holds writes that SQLite can "
        f"only apply with write access to {folder}. Open it once as a user who may write it (any replaykit command "
        "will do), or copy the store with its -wal file to a writable place. Nothing was changed.")


def read_only_error(path: str, what: str) -> StoreReadOnlyError:
    """``what`` needs to write the read-only store at ``path``."""
    return StoreReadOnlyError(
        f"{path}: {what}, and the store is read-only for this process (opened to read only, or the file or its "
        "directory cannot be written). Reading runs, listing, queries and results of finished runs work; to drive "
        "or change runs, open it to write, as a user who may write the file, its directory and its -wal and -shm "
        "files. Nothing was changed.")
