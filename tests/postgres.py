"""A real PostgreSQL server for the tests, started from the OS package's binaries.

`postgres` (session): one server in a temporary folder, on a free port and a socket folder of its
own, stopped at the end of the session. `postgres_url` (per test): a fresh, empty store on it, as a
URL any process can open (`fedctl server --store postgresql://...` replicas included). Each is a
schema of its own in one database, named by the URL's search_path: creating a database takes
0.1-0.4 s here, a schema a few milliseconds.
Where the binaries are absent the tests skip, or fail when CI is set.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import missing

MISSING = "PostgreSQL not installed: apt-get install postgresql"
DATABASE = "fedctl"
# A throwaway cluster: durability is not what is tested, speed is.
SETTINGS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            " -c listen_addresses=127.0.0.1")


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [b for b in found if (b / "pg_ctl").exists()]
    return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0) if found else None


class PostgresServer:
    """initdb + pg_ctl start into `root`, as the `postgres` OS user when run as root (initdb refuses root)."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin, self.root = bin_dir, root
        self.data, self.sockets = root / "data", root / "sockets"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, and there is no `postgres` user to run initdb as") from None
            self._as = ["runuser", "-u", "postgres", "--"]
            self.sockets.mkdir()
            for path in (root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        else:
            self.sockets.mkdir()

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", f"-p {self.port} -k {self.sockets} {SETTINGS}")
        self._run("createdb", "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres", DATABASE)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def url(self, schema: str = "") -> str:
        base = f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"
        return f"{base}?options=-csearch_path%3D{schema}" if schema else base

    def database(self) -> str:
        """A fresh, empty store's URL."""
        name = f"t{next(self._names)}"
        self._admin(f"CREATE SCHEMA {name}")
        return self.url(name)

    def drop(self, url: str) -> None:
        self._admin(f"DROP SCHEMA IF EXISTS {url.rsplit('%3D', 1)[1]} CASCADE")

    def _admin(self, sql: str) -> None:
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = binaries()
    if bin_dir is None:
        missing(MISSING)
    root = Path(tempfile.mkdtemp(prefix="fedctl-pg-"))
    server = PostgresServer(bin_dir, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty store on the session's server (a schema of its own), dropped after the test."""
    url = postgres.database()
    yield url
    postgres.drop(url)
