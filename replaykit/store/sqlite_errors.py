"""What SQLite reports, said as replaykit errors that name the store and what to do.

SQLite judges the file; this module only explains its verdict. Python 3.11+
gives SQLite's (extended) result code; 3.10 only the message, which is used then.
"""

from __future__ import annotations

import os
import re
import resource
import sqlite3
from types import TracebackType

from ..errors import (
    CorruptStoreError,
    NotAStoreError,
    StoreError,
    StoreFullError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from ..text import unencodable

BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
_WRITES = {IOERR, IOERR | 3 << 8, IOERR | 6 << 8, IOERR | 19 << 8}  # plain, WRITE, TRUNCATE, SHMSIZE
_MESSAGES = {
    "database is locked": BUSY, "database table is locked": LOCKED,
    "attempt to write a readonly database": READONLY, "disk I/O error": IOERR,
    "database disk image is malformed": CORRUPT, "database or disk is full": FULL,
    "unable to open database file": CANTOPEN, "file is not a database": NOTADB,
}
_SQLITE_MAGIC = b"SQLite format 3\x00"
# A store of ours whose schema is damaged: a table, column or index gone, or a table of other columns.
_SCHEMA_GONE = re.compile(r"no such (column|table|index)|table \S+ has (no column named|\d+ columns but \d+ values)")


def code(exc: sqlite3.Error) -> int:
    """SQLite's extended result code for ``exc`` (or the primary one, from the message, on 3.10)."""
    found: int | None = getattr(exc, "sqlite_errorcode", None)
    if found is not None:
        return found
    return _MESSAGES.get(str(exc).split(":")[0], 0)


def translate(path: str, exc: sqlite3.Error) -> Exception:
    """The replaykit error for what SQLite said about the store at ``path`` (``exc`` itself if none fits)."""
    full = code(exc)
    primary = full & 0xFF
    why = _no_room(path) if primary == FULL or full in _WRITES else ""
    if primary == FULL or why:
        why = why or "its disk is full"
        return StoreFullError(
            f"{path}: no room to record more: {why} (SQLite: {exc}). What was recorded before is intact; "
            "free some space (or raise the limit) and run again: runs continue from their last recorded step."
        )
    if primary == READONLY:
        return StoreReadOnlyError(
            f"{path}: the store cannot be written: it is read-only for this process (SQLite: {exc}). Reading "
            "runs, listing, queries and results of finished runs work; to record, the user running replaykit "
            "must be able to "
            "write the file, its -wal and -shm files and its directory; fix the permissions, or work on a "
            "writable copy. Nothing was changed."
        )
    if primary in (BUSY, LOCKED):
        return StoreError(
            f"{path}: the store stayed locked by another connection for longer than the busy timeout "
            f"(SQLite: {exc}). Another process holds a long write transaction (an open sqlite3 shell in a "
            "transaction, say); let it finish, then try again. Nothing was changed."
        )
    if primary == IOERR:
        return StoreError(
            f"{path}: SQLite reported an I/O error ({exc}): the disk or file system failed, or the store's files "
            "were removed or replaced while in use. What was committed before is intact; check the disk and "
            "run again."
        )
    if str(exc).startswith("Could not decode to UTF-8"):  # said by Python's sqlite3 module, not by SQLite
        return CorruptStoreError(
            f"{path}: a text value in the store is not valid UTF-8 ({exc}): the file is damaged, or was written "
            "by something else. Restore it from a backup; replaykit will not overwrite it, and used nothing of it."
        )
    if isinstance(exc, sqlite3.OperationalError) and _SCHEMA_GONE.match(str(exc)):
        return CorruptStoreError(
            f"{path}: the store's schema is damaged: {exc}, though the file says it is a replaykit store of this "
            "version. Restore it from a backup; replaykit will not overwrite it.")
    if primary in (CORRUPT, NOTADB) or type(exc) is sqlite3.DatabaseError:
        return CorruptStoreError(
            f"{path}: SQLite cannot read the database: {exc}. Restore it from a backup; "
            "replaykit will not overwrite it."
        )
    return exc


class translated:  # noqa: N801 - used as a function: ``with translated(path):``
    """Raise what SQLite raises in the block as the replaykit error that fits. A class, not a
    ``@contextmanager``: it wraps every statement of a step, and a generator costs 1.5 µs more a use."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            error = translated_error(self.path, exc)
            if error is not exc:
                raise error from exc


def translated_error(path: str, exc: BaseException) -> BaseException:
    """What :class:`translated` raises instead of ``exc`` (``exc`` itself when nothing fits)."""
    if isinstance(exc, sqlite3.Error):
        return translate(path, exc)
    if isinstance(exc, UnicodeDecodeError):  # SQLite's message quotes a damaged schema: Python cannot decode it
        return undecodable(path, exc)
    if isinstance(exc, UnicodeEncodeError):  # text given to the store (an id looked up, say): checked where made
        return unencodable(f"{path}: text given to the store", exc)
    return exc


def undecodable(path: str, exc: UnicodeDecodeError) -> CorruptStoreError:
    return CorruptStoreError(
        f"{path}: SQLite cannot read the database: its schema is damaged (SQLite's message about it is not even "
        f"valid UTF-8: {exc}). Restore it from a backup; replaykit will not overwrite it.")


def cannot_open(path: str, exc: sqlite3.Error, create: bool) -> Exception:
    """Why SQLite could not open ``path`` at all, said with the path and what to do."""
    folder = os.path.dirname(os.path.abspath(path))
    if code(exc) & 0xFF != CANTOPEN:
        return translate(path, exc)
    if not os.path.isdir(folder):
        if create:
            return StoreNotFoundError(
                f"{path}: the directory {folder} does not exist, so no store can be created there. "
                f"Create it first (mkdir -p {folder}) or pass another path."
            )
        return StoreNotFoundError(
            f"no replaykit store at {path}: the directory {folder} does not exist. Check the path; "
            "reading a store never creates one, and nothing was created."
        )
    if os.path.isdir(path):
        return StoreNotFoundError(
            f"{path} is a directory, not a replaykit store. Pass the path of the store's file "
            "(for example orders.db); nothing was changed."
        )
    if not os.path.exists(path):
        if create:
            return StoreReadOnlyError(
                f"{path}: the store cannot be created: the directory {folder} is not writable (SQLite: {exc}). "
                "Fix its permissions or pass another path."
            )
        return StoreNotFoundError(
            f"no replaykit store at {path}: the file does not exist. Check the path; reading a store never "
            "creates one, and nothing was created."
        )
    return StoreReadOnlyError(
        f"{path}: the store cannot be opened (SQLite: {exc}). The user running replaykit must be able to read "
        "and write the file and its directory; fix the permissions, or work on a copy."
    )


def refused(path: str, exc: sqlite3.Error, in_use: bool) -> Exception:
    """Why SQLite would not read the file at ``path`` as a database at all.

    Only once SQLite has refused the file (and only if no store of this process has
    it open) is its header read here, to tell a foreign file from a damaged store.
    """
    if code(exc) & 0xFF != NOTADB or in_use:
        return translate(path, exc)
    with open(path, "rb") as f:  # not a live database: SQLite itself holds nothing on it
        header = f.read(len(_SQLITE_MAGIC))
    if header.startswith(_SQLITE_MAGIC) or (header and _SQLITE_MAGIC.startswith(header)):
        return CorruptStoreError(
            f"{path}: SQLite cannot read the database: {exc} (the file is truncated or damaged, "
            f"{os.path.getsize(path)} bytes). Restore it from a backup; replaykit will not overwrite it."
        )
    return NotAStoreError(
        f"{path} is not an SQLite database, so it cannot be a replaykit store. "
        "Pass the path of a replaykit store, or a path that does not exist yet. The file was not changed."
    )


def _no_room(path: str) -> str:
    """Why a write may have failed for want of space (EFBIG reaches us only as an I/O error), or ''."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return f"this process may not write files beyond {soft} bytes (ulimit -f)"
    try:
        disk = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return ""
    free = disk.f_bavail * disk.f_frsize
    return f"its disk has {free} bytes free" if free < 1 << 20 else ""
