"""Per-workflow locks that the operating system releases when their owner dies.

Each workflow id maps to one byte of a side file (``<db>-locks``), locked with
``fcntl.lockf``. A killed process loses its locks at once, so a rerun can take
over immediately; no lease has to expire first. POSIX locks belong to the
process, not the file descriptor, so this module keeps one descriptor per
file and its own set of keys held in this process (two engines in one
process must not both drive a workflow either).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
import sys
import threading


class _LockFile:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.held: set[str] = set()
        self.mutex = threading.Lock()


_files: dict[str, _LockFile] = {}
_files_mutex = threading.Lock()


def _offset(key: str) -> int:
    # 62 bits of a hash: distinct ids collide with probability ~2**-62.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 2


class FileLocks:
    """Exclusive, non-blocking, process-owned locks keyed by string."""

    def __init__(self, db_path: str) -> None:
        path = os.path.realpath(db_path) + "-locks"
        with _files_mutex:
            if path not in _files:
                _files[path] = _LockFile(path)
            self._file = _files[path]

    def try_acquire(self, key: str) -> bool:
        f = self._file
        with f.mutex:
            if key in f.held:
                return False
            try:
                fcntl.lockf(f.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(key))
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return False
                raise
            f.held.add(key)
            return True

    def release(self, key: str) -> None:
        f = self._file
        with f.mutex:
            if key in f.held:
                fcntl.lockf(f.fd, fcntl.LOCK_UN, 1, _offset(key))
                f.held.discard(key)

    def holder(self, key: str) -> int | None:
        """The pid of the process holding ``key`` (``os.getpid()`` if this one), if the OS tells."""
        if key in self._file.held:
            return os.getpid()
        if not sys.platform.startswith("linux"):  # struct flock's layout below is Linux's
            return None
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _offset(key), 1, 0) + b"\0" * 8
        answer = fcntl.fcntl(self._file.fd, fcntl.F_GETLK, query)
        kind, _, _, _, pid = struct.unpack(_FLOCK, answer[:struct.calcsize(_FLOCK)])
        return None if kind == fcntl.F_UNLCK else int(pid)


_FLOCK = "hhqqi"  # Linux struct flock: l_type, l_whence, l_start, l_len, l_pid


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
