"""Per-workflow locks that the operating system releases when their owner dies.

Each workflow id maps to one byte of one of sixteen side files (``<db>-locks.d/0`` to ``f``),
locked with ``fcntl.lockf``. A killed process loses its locks at once, so a rerun can take
over immediately; no lease has to expire first. The kernel keeps one list of byte-range locks
per file and walks it on every lock and unlock (470 µs a pair with 10,000 locks held on one
file, 1.2 µs with none): sixteen files spare an engine with thousands of runs parked in memory
most of that. POSIX locks belong to the process, not the file descriptor, and closing *any*
descriptor of a file drops them all; so this module keeps one descriptor per file, shared by
every store of that path in the process, with its own set of keys held (two engines in one
process must not both drive a workflow either). A descriptor is opened with the first lock in
its file and closed when the last store of the path has closed and no lock is held: a
long-running process keeps none for stores it no longer uses.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import struct
import sys
import threading

from ..errors import StoreError

SHARDS = 16  # lock files per store: every process of a store must use the same number


class _LockFile:
    """The process's descriptors on a store's lock files (one per shard), and the keys it holds."""

    def __init__(self, path: str) -> None:
        self.path = path  # the directory of the shards
        self.fds: dict[int, int] = {}  # shard -> descriptor: all of them, opened with the first lock
        self.held: dict[str, int] = {}  # key -> its offset (hashed once, when it is locked)
        self.users = 0  # FileLocks objects not yet closed
        self.mutex = threading.Lock()

    def descriptor(self, offset: int) -> int:
        """The shard's descriptor (under ``mutex``). The first call opens (makes) all sixteen files,
        so that a file another user cannot write fails every id alike, as a clear :class:`StoreError`."""
        if not self.fds:
            try:
                os.makedirs(self.path, mode=0o755, exist_ok=True)
                _refuse_if_others_control(self.path)
                for shard in range(SHARDS):
                    with _inodes_mutex:  # checked, opened and noted at once (see _ask_unopened)
                        fd = _open_shard(self.path, shard, os.O_RDWR | os.O_CREAT)
                        _open_inodes.add(_inode(os.fstat(fd)))
                    self.fds[shard] = fd
            except StoreError:
                self.close_all()
                raise
            except OSError as exc:
                self.close_all()  # none holds a lock yet: closing them drops nothing
                raise _unusable(self.path, exc.strerror or str(exc)) from exc
        return self.fds[offset % SHARDS]

    def close_all(self) -> None:
        with _inodes_mutex:
            for fd in self.fds.values():
                _open_inodes.discard(_inode(os.fstat(fd)))
                os.close(fd)
        self.fds.clear()


# Every lock file this process has open, by (device, inode). Closing any descriptor of a file drops every
# lock this process holds on it, so a lock file is checked before it is opened: a regular file with one
# name (a hard link could be another store's lock file, or a database file SQLite holds locks on) that
# this process does not already have open. A file swapped in between the check and the open is left
# open rather than closed.
_open_inodes: set[tuple[int, int]] = set()
_inodes_mutex = threading.Lock()


def _inode(found: os.stat_result) -> tuple[int, int]:
    return found.st_dev, found.st_ino


def _open_shard(folder: str, shard: int, flags: int) -> int:
    """A descriptor of shard ``shard`` of the lock directory ``folder``, opened with ``flags`` (and never
    through a link, never waiting on a FIFO), once it is checked to be a lock file of this store alone."""
    path = os.path.join(folder, f"{shard:x}")
    try:
        before: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        before = None  # made by the open (O_CREAT), or reported by it
    if before is not None:
        _refuse_unless_its_own(folder, before)
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    found = os.fstat(fd)
    try:
        if before is not None and _inode(found) != _inode(before):
            raise _unusable(folder, "a lock file was replaced while it was opened", _NOT_ITS_OWN)
        _refuse_unless_its_own(folder, found)
    except StoreError:  # fd left open: it may be a file this process holds locks on, and closing drops them
        raise
    return fd


def _refuse_unless_its_own(folder: str, found: os.stat_result) -> None:
    if not stat.S_ISREG(found.st_mode):
        raise _unusable(folder, "a lock file is not a regular file", _NOT_ITS_OWN)
    if found.st_nlink != 1:
        raise _unusable(folder, "a lock file has another name too (a hard link)", _NOT_ITS_OWN)
    if _inode(found) in _open_inodes:
        raise _unusable(folder, "a lock file is the lock file of another store this process uses", _NOT_ITS_OWN)


def _unusable(folder: str, why: str, advice: str = "") -> StoreError:
    return StoreError(
        f"{folder[:-len('-locks.d')]}: cannot open its lock files in {folder} ({why}): every process that drives "
        "its runs needs to read and write them, and one that reads it to read them. " + (advice or (
            "Give this user access to that directory and its files (or run as the user that made them)")) +
        "; nothing was changed.")


_NOT_ITS_OWN = ("Remove that file's other name, or remove the directory while no process uses the store "
                "(replaykit makes it again)")


def _refuse_if_others_control(folder: str) -> None:
    """The lock directory must be this user's own, or the store file's owner's: whoever else may change its
    files can take a lock from under a running engine (two processes then drive one run)."""
    found = os.lstat(folder)
    try:  # the store's own user may have made it (an operator under sudo then uses it too)
        owners = {os.geteuid(), os.stat(folder[:-len("-locks.d")]).st_uid}
    except OSError:
        owners = {os.geteuid()}
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        problem = "is not a directory (a symbolic link, or a file)"
    elif found.st_uid not in owners:
        problem = (f"belongs to user id {found.st_uid}, neither this process's user ({os.geteuid()}) nor the "
                   "store file's")
    elif found.st_mode & 0o022:
        problem = f"may be written by its group or other users (mode {oct(found.st_mode & 0o777)})"
    else:
        return
    raise StoreError(
        f"{folder[:-len('-locks.d')]}: its lock directory {folder} {problem}: whoever controls it can break the "
        "locks that keep two processes from driving one run. Run every process of the store as the user that "
        "owns it, and remove that directory (replaykit makes it again) or make it that user's (chmod 755). "
        "Nothing was changed.")


_files: dict[str, _LockFile] = {}
_files_mutex = threading.Lock()  # taken before a _LockFile's own mutex, never after


def _offset(key: str) -> int:
    # 62 bits of a hash: distinct ids collide with probability ~2**-62.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 2


def stores_open(db_path: str) -> int:
    """How many stores of the database at ``db_path`` this process has open."""
    with _files_mutex:
        f = _files.get(os.path.realpath(db_path) + "-locks.d")
        return 0 if f is None else f.users


def _drop_if_unused(f: _LockFile) -> None:
    """Close the descriptor once nothing needs it: no store uses it and no lock hangs on it."""
    with _files_mutex, f.mutex:
        if f.users == 0 and not f.held:
            f.close_all()
            if _files.get(f.path) is f:
                del _files[f.path]


class FileLocks:
    """Exclusive, non-blocking, process-owned locks keyed by string. :meth:`close` when done."""

    def __init__(self, db_path: str) -> None:
        path = os.path.realpath(db_path) + "-locks.d"
        with _files_mutex:
            f = _files.get(path)
            if f is None:
                f = _files[path] = _LockFile(path)
            f.users += 1
        self._file = f
        self._mine: set[str] = set()  # keys taken through this object: given back by close()
        self._closed = False

    def check(self) -> None:
        """Raise the :class:`StoreError` a first lock would (a lock directory this process may not use),
        taking no lock: before recording a run that then could not be driven."""
        with self._file.mutex:
            self._file.descriptor(0)

    def try_acquire(self, key: str) -> bool:
        f = self._file
        with f.mutex:
            if self._closed:
                store = self._file.path[:-len("-locks.d")]
                raise StoreError(f"{store}: the store is closed; open it again to lock workflows")
            if key in f.held:
                return False
            offset = _offset(key)
            fd = f.descriptor(offset)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return False
                raise
            f.held[key] = offset
            self._mine.add(key)
            return True

    def release(self, key: str) -> None:
        f = self._file
        with f.mutex:
            self._release(key)
        if self._closed:
            _drop_if_unused(f)

    def _release(self, key: str) -> None:  # under the file's mutex
        f = self._file
        if key in self._mine and key in f.held:  # only what was taken through here
            offset = f.held[key]
            fcntl.lockf(f.fds[offset % SHARDS], fcntl.LOCK_UN, 1, offset)
            del f.held[key]
        self._mine.discard(key)

    def holds(self, key: str) -> bool:
        """Was ``key`` taken through this object, and not given back?"""
        return key in self._mine

    def holder(self, key: str) -> int | None:
        """The pid of the process holding ``key`` (``os.getpid()`` if this one), if the OS tells."""
        f = self._file
        if key in f.held:
            return os.getpid()
        if not sys.platform.startswith("linux"):  # struct flock's layout below is Linux's
            return None
        offset = _offset(key)
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0) + b"\0" * 8
        with f.mutex:
            if self._closed:
                return None
            # asked, not locking: a process with no descriptor yet makes none, and a reader may ask too
            answer = (fcntl.fcntl(f.descriptor(offset), fcntl.F_GETLK, query) if f.fds
                      else _ask_unopened(f.path, offset, query))
        if answer is None:  # no lock file: nobody ever locked
            return None
        kind, _, _, _, pid = struct.unpack(_FLOCK, answer[:struct.calcsize(_FLOCK)])
        return None if kind == fcntl.F_UNLCK else int(pid)

    def close(self) -> None:
        """Give back the locks taken here; the descriptor goes with the last user of the file."""
        f = self._file
        with f.mutex:  # closed first: a lock taken meanwhile by another thread is refused, not kept
            if self._closed:
                return
            self._closed = True
            for key in list(self._mine):
                self._release(key)
        with _files_mutex, f.mutex:
            f.users -= 1
        _drop_if_unused(f)


_FLOCK = "hhqqi"  # Linux struct flock: l_type, l_whence, l_start, l_len, l_pid


def _ask_unopened(folder: str, offset: int, query: bytes) -> bytes | None:
    """F_GETLK on a lock file this process has not opened (``None``: there is none, or it may not be read
    or trusted: not known). Opened read-only once checked (:func:`_open_shard`), and closed at once:
    this process holds no lock on it."""
    with _inodes_mutex:  # no other thread opens the same file as its lock file before this closes it
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):  # a link planted in its place: not trusted
                return None
            fd = _open_shard(folder, offset % SHARDS, os.O_RDONLY)
        except StoreError:
            return None  # not this store's own lock file: nothing to tell from it
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES, errno.ELOOP):
                return None
            raise _unusable(folder, exc.strerror or str(exc)) from exc
        try:
            return fcntl.fcntl(fd, fcntl.F_GETLK, query)
        finally:
            os.close(fd)


class ThreadLocks:
    """The same interface for stores that live inside one process."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._mutex = threading.Lock()

    def try_acquire(self, key: str) -> bool:
        with self._mutex:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def release(self, key: str) -> None:
        with self._mutex:
            self._held.discard(key)

    def holder(self, key: str) -> int | None:
        return os.getpid() if key in self._held else None
