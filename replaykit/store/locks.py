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
