"""A throwaway PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` in a temporary directory,
listening only on a Unix socket there (no TCP), with fsync on as a real server has it.

PostgreSQL refuses to run as root: when the tests are root, the server runs as the ``postgres``
user, which owns the directory. Each test gets a database of its own (``create_database``).

    python tests/pgserver.py      # start one and print its URL; Ctrl-C stops it
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from urllib.parse import quote

USER = "replaykit"  # the server's superuser: the tests connect as it (trust, on the socket only)
NEEDED = ("initdb", "pg_ctl", "postgres")


def find_binaries() -> str | None:
    """The directory holding initdb, pg_ctl and postgres: $PG_BINDIR if set (and only it), else from
    PATH, else the newest /usr/lib/postgresql/*/bin (Debian does not put them on PATH)."""
    if "PG_BINDIR" in os.environ:
        candidates = [os.environ["PG_BINDIR"]]
    else:
        found = shutil.which("pg_ctl")
        candidates = [os.path.dirname(os.path.realpath(found))] if found else []
        versions = glob.glob("/usr/lib/postgresql/*/bin")
        candidates += sorted(versions, key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
                             reverse=True)
    for directory in candidates:
        if all(os.access(os.path.join(directory, name), os.X_OK) for name in NEEDED):
            return directory
    return None


class PgServer:
    """One server: :meth:`start`, then :meth:`url` / :meth:`create_database`, then :meth:`stop`."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="rk-pg-")  # short: a socket path has at most 107 bytes
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self._names = itertools.count(1)
        self._free: list[str] = []  # databases emptied after a test, ready for the next one
        self._root = os.geteuid() == 0
        if self._root:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("the tests run as root, and PostgreSQL refuses root: a 'postgres' user "
                                   "is needed to run the test server (the Debian package creates it)") from None
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)

    def _run(self, *command: str) -> None:
        argv = [os.path.join(self.bindir, command[0]), *command[1:]]
        if self._root:  # as the postgres user
            if shutil.which("runuser"):
                argv = ["runuser", "-u", "postgres", "--", *argv]
            else:
                argv = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(_quote, argv))]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = open(self.log).read()[-2000:] if os.path.exists(self.log) else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}")

    def start(self) -> PgServer:
        self._run("initdb", "-D", self.data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale",
                  "--no-sync", "--no-instructions")
        settings = {
            "listen_addresses": "''",  # no TCP at all: the socket in our directory only
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "300",
            "shared_buffers": "64MB",
            "fsync": "on",  # as a real server: what a store commits with synchronous_commit on is on disk
        }
        options = " ".join(f"-c {k}={v}" for k, v in settings.items())
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql:///{dbname}?host={quote(self.dir, safe='/')}&user={USER}"

    def create_database(self) -> str:
        """An empty database nobody is connected to; its name. Handed back with :meth:`release_database`."""
        if self._free:
            return self._free.pop()
        name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0")  # ~0.05-0.3 s with fsync on: reused
        return name

    def release_database(self, name: str) -> None:
        """Empty the database for the next test: its connections ended (their locks with them), its
        schemas dropped and ``public`` made again, as a new database has it."""
        self.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        self.execute(f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = '{name}'")
        self.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        schemas = [row[0] for row in self.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'",
            name)]
        self.execute("; ".join([*(f'DROP SCHEMA "{s}" CASCADE' for s in schemas),
                                "CREATE SCHEMA public", "GRANT ALL ON SCHEMA public TO PUBLIC"]), name)
        self._free.append(name)

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    import time

    bindir = find_binaries()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (initdb, pg_ctl) found")
    server = PgServer(bindir).start()
    print(server.url(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
