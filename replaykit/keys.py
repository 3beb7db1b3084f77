"""The keys that sign pickled values, so that nothing read back from a store is unpickled
unless this application wrote it (docs/security.md).

A store's keys come from, in order: the ``secret=`` its opener was given (one secret, or a
list whose first signs and all verify: key rotation), the ``REPLAYKIT_SECRET`` environment
variable (with ``REPLAYKIT_OLD_SECRETS``, comma-separated, still accepted), or, for an
SQLite store, the key file beside it (``orders.db.key``), made owner-only when a store that
holds no runs records its first one (or signs its first value, or is migrated), and refused
unless it is this user's private regular file of the shape made. A PostgreSQL store has no
file beside it: its clients and workers share a secret, or record no pickles.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Sequence

from .errors import PayloadAuthenticationError, SerializationError

Secret = str | bytes
SECRET_ENV = "REPLAYKIT_SECRET"
OLD_SECRETS_ENV = "REPLAYKIT_OLD_SECRETS"
_MIN_SECRET = 16
_PREFIX = b"rksig1:"  # then the 32-byte HMAC-SHA256 tag, then the pickle
_DOMAIN = b"replaykit pickle\x00"  # the tag is over this and the pickle: it signs nothing else


def _as_key(secret: Secret, where: str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or len(key) < _MIN_SECRET:
        raise ValueError(f"{where}: a secret needs at least {_MIN_SECRET} bytes; make one with "
                         "python -c 'import secrets; print(secrets.token_hex(32))'")
    return key


class Keyring:
    """Signs with the first key, accepts any. Keys that live in a file are read on first use (made only
    for a write to a store that holds no history: ``may_make``)."""

    def __init__(self, keys: Sequence[bytes] = (), *, key_file: str | None = None, missing: str = "",
                 may_make: Callable[[], bool] | None = None) -> None:
        self._keys = tuple(keys)
        self._may_make = may_make  # asked before a write makes a missing key file: does the store hold no history?
        self._primed = [_primed(k) for k in self._keys]  # keyed once: a tag is then a copy, an update, a digest
        self.key_file = key_file
        self._missing = missing  # why there is no key, and what to do, when there is none
        self._mutex = threading.Lock()

    @classmethod
    def configured(cls, secret: Secret | Sequence[Secret] | None, *, key_file: str | None = None,
                   missing: str = "", may_make: Callable[[], bool] | None = None) -> Keyring:
        """The keys from ``secret``, else from the environment, else from ``key_file`` (see module doc)."""
        if secret is not None:
            given = [secret] if isinstance(secret, (str, bytes)) else list(secret)
            if not given:
                raise ValueError("secret=: give at least one secret (the first signs, all verify)")
            return cls([_as_key(s, "secret=") for s in given])
        env = os.environ.get(SECRET_ENV)
        if env:
            old = [s for s in os.environ.get(OLD_SECRETS_ENV, "").split(",") if s]
            return cls([_as_key(env, SECRET_ENV), *(_as_key(s, OLD_SECRETS_ENV) for s in old)])
        return cls(key_file=key_file, missing=missing, may_make=may_make)

    @classmethod
    def ephemeral(cls) -> Keyring:
        """A random key of one process (the memory store's: nobody else reads it)."""
        return cls([secrets.token_bytes(32)])

    @property
    def usable(self) -> bool:
        """Has it a key, or a key file to read one from (or make it in)?"""
        return bool(self._keys) or self.key_file is not None

    def _loaded(self, make: bool = False) -> list[hmac.HMAC]:
        """The keys; from the key file if there is one. A missing one is made only for a write (``make``) to
        a store that holds no history yet (``may_make``): one that does was recorded under a key a new one
        cannot check, and a read never writes a file."""
        if self._primed or self.key_file is None:
            return self._primed
        with self._mutex:
            if not self._keys:
                if os.path.lexists(self.key_file):
                    self._use(_read(self.key_file))
                elif make and self._may_make is not None and self._may_make():
                    self._use(_read_or_make(self.key_file))
        return self._primed

    def load_to_write(self) -> None:
        """Before a write that may record a store's first history: the key, made if it may be."""
        self._loaded(make=True)

    def make_key_file(self) -> None:
        """Make the key file if it is missing (another process making it at once: theirs is the key): for a
        migration, whose owner vouches for the store's rows."""
        if self.key_file is None or self._keys:
            return
        with self._mutex:
            if not self._keys:
                self._use(_read_or_make(self.key_file))

    def _use(self, key: bytes) -> None:
        self._keys = (key,)
        self._primed = [_primed(key)]

    def derived(self, purpose: bytes) -> tuple[bytes, ...]:
        """One key per key, for a use other than signing pickles (``purpose``: e.g. the hash chain), so
        that no tag of one use serves the other. None while a key file is missing."""
        self._loaded()
        return tuple(hmac.new(key, b"replaykit key\x00" + purpose, hashlib.sha256).digest() for key in self._keys)

    def missing(self) -> str:
        """Why this process has no key, and what to do."""
        if self.key_file is not None:
            return (f"its key file {self.key_file} is missing: put the store's key file back beside it, or give the "
                    f"secret it was recorded with ({SECRET_ENV} or secret=)")
        return self._missing or f"give the store's secret ({SECRET_ENV} or secret=)"

    def sign(self, data: bytes, what: str) -> bytes:
        keys = self._loaded(make=True)
        if not keys:
            raise SerializationError(f"cannot record the {what}: it needs pickle, and pickled values are signed "
                                     f"with a secret; {self.missing()}")
        return _PREFIX + _tag(keys[0], data) + data

    def verify(self, blob: bytes, what: str) -> bytes:
        """The pickle inside ``blob`` if one of the keys signed it; else :class:`PayloadAuthenticationError`."""
        if not blob.startswith(_PREFIX) or len(blob) < len(_PREFIX) + 32:
            raise PayloadAuthenticationError(
                f"the {what} is a pickled value without a replaykit signature: it was not recorded by replaykit "
                "(the store was written by someone else, or damaged). It was not unpickled: nothing ran. Restore "
                "the store from a backup, or restart the run (rk.restart) to record it again.")
        tag, data = blob[len(_PREFIX):len(_PREFIX) + 32], blob[len(_PREFIX) + 32:]
        keys = self._loaded()
        if not keys:
            raise PayloadAuthenticationError(f"the {what} is a signed pickled value, and this process has no key to "
                                             f"check it with; it was not unpickled: {self.missing()}")
        for key in keys:
            if hmac.compare_digest(tag, _tag(key, data)):
                return data
        source = f"the key file {self.key_file}" if self.key_file is not None and self._keys else "the secret given"
        raise PayloadAuthenticationError(
            f"the {what} is a pickled value whose signature does not match {source}: either it was written by "
            f"someone without the key (tampered), or the process that wrote it used another secret (give every "
            f"process of this store the same {SECRET_ENV}, or keep old ones in {OLD_SECRETS_ENV} while rotating). "
            "It was not unpickled: nothing ran.")


def signed_body(blob: bytes) -> bytes:
    """The pickle inside a signed ``blob``, unchecked (for showing its type, never for loading it)."""
    return blob[len(_PREFIX) + 32:] if blob.startswith(_PREFIX) else blob


def _primed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, _DOMAIN, hashlib.sha256)


def _tag(primed: hmac.HMAC, data: bytes) -> bytes:
    mac = primed.copy()
    mac.update(data)
    return mac.digest()


def _read_or_make(path: str) -> bytes:
    """The key in ``path``, made first (owner-only, written whole before anyone can see it) if absent."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # fails if another process made it first: theirs is the key
    except FileExistsError:
        pass
    finally:
        os.unlink(temp)
    _sync_folder(folder or ".")  # the name, before any history recorded under it: a power cut keeps both
    return _read(path)


def _sync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_KEY_SHAPE = re.compile(rb"[0-9a-fA-F]{64}")  # what _read_or_make writes (then a newline)


def _read(path: str) -> bytes:
    """The key in the key file ``path`` (``FileNotFoundError`` if there is none). Refuses one this process's user
    does not own alone: a symlink, anything but a regular file, another user's, or one others may read or write."""
    try:  # not following a link, and not waiting on a pipe
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        what = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise _refused(path, what) from exc
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise _refused(path, "is not a regular file")
        if found.st_uid != os.geteuid():
            raise PayloadAuthenticationError(
                f"the key file {path} belongs to user id {found.st_uid}, not to this process's user ({os.geteuid()}): "
                "whoever owns it can forge values this process would unpickle, so it is not used. Run this process "
                f"as the user the store belongs to (sudo -u, or that service's account), or give the store's secret "
                f"instead ({SECRET_ENV} or secret=). Nothing was read or recorded with it.")
        if found.st_mode & 0o077:
            raise PayloadAuthenticationError(
                f"the key file {path} may be read or written by other users (mode {oct(found.st_mode & 0o777)}): "
                f"anyone who can read it can forge values this store would unpickle. Make it private (chmod 600 "
                f"{path}) and check it was not changed.")
        key = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if not _KEY_SHAPE.fullmatch(key):
        raise PayloadAuthenticationError(
            f"the key file {path} is damaged: replaykit writes 64 hex digits in it, and it holds "
            f"{'nothing' if not key else f'{len(key)} other bytes'}. Restore it from your backup of it; nothing was "
            "read or recorded with it.")
    return key


def _refused(path: str, what: str) -> PayloadAuthenticationError:
    return PayloadAuthenticationError(
        f"the key file {path} {what}. A store's key file is a private file of the user that runs its processes; "
        "nothing was read or recorded with it. Put the store's own key file back (chmod 600, owned by that user), "
        f"or give its secret instead ({SECRET_ENV} or secret=).")
