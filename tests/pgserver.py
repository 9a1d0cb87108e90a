"""A throwaway PostgreSQL cluster for tests and benchmarks.

`PgServer.start()` runs `initdb` in a temporary directory and starts
`postgres` on a free loopback port with its unix socket in that directory.
PostgreSQL refuses to run as root, so under root the directory is given to
the `postgres` user and the server runs as that user. The cluster trades
durability for speed (fsync off): it exists for one test session.

`OPTOUT_TEST_PG_URL=postgresql://user:password@host:port/postgres` points
the tests at a server you run instead (the user must be allowed to create
databases); tests that stop and start the server then skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

HOW_TO_GET_IT = (
    "PostgreSQL is not installed: `apt-get install postgresql` (Debian/Ubuntu; the tests "
    "start their own throwaway cluster), or set "
    "OPTOUT_TEST_PG_URL=postgresql://user:password@host:port/postgres to use a server you run"
)
URL_ENV = "OPTOUT_TEST_PG_URL"


def find_bindir() -> Path | None:
    """The directory holding initdb/pg_ctl/postgres: $OPTOUT_TEST_PG_BIN,
    Debian's newest /usr/lib/postgresql/N/bin, or whatever is on PATH."""
    explicit = os.environ.get("OPTOUT_TEST_PG_BIN")
    if explicit:
        return Path(explicit)

    def version(initdb: str) -> int:
        name = Path(initdb).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL server: ours (started and stopped here) or external."""

    def __init__(self, admin_url: str, *, bindir: Path | None = None, root: Path | None = None,
                 port: int | None = None, user: str | None = None) -> None:
        self.admin_url = admin_url
        self.bindir = bindir
        self.root = root
        self.port = port
        self._user = user

    @property
    def managed(self) -> bool:
        """True when this process started the server (so it may stop it)."""
        return self.root is not None

    @classmethod
    def external(cls, url: str) -> PgServer:
        return cls(url)

    @classmethod
    def start_new(cls, bindir: Path) -> PgServer:
        root = Path(tempfile.mkdtemp(prefix="optout-pg-"))
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        root.chmod(0o700)
        port = free_port()
        server = cls(
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            bindir=bindir, root=root, port=port, user=user,
        )
        server._run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8", "--locale=C")
        server.start()
        return server

    def _run(self, tool: str, *args: str) -> None:
        assert self.bindir is not None
        # cwd: the postgres user may not be allowed into the caller's directory.
        done = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True, text=True, user=self._user, timeout=120, cwd=self.root,
        )
        if done.returncode != 0:
            log = self.root / "log" if self.root is not None else None
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{tail}"
            )

    def start(self) -> None:
        """Starts (or restarts) the managed server and waits until it accepts."""
        assert self.root is not None and self.port is not None
        options = " ".join([
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c fsync=off",
            "-c full_page_writes=off",
            "-c max_connections=300",
        ])
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"),
                  "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stops the managed server ("fast": disconnects every client)."""
        assert self.root is not None
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if self.root is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    async def new_database(self, prefix: str = "t") -> str:
        """Creates an empty database and returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def wait_accepting(self, timeout: float = 30.0) -> None:
        """Blocks until the server accepts TCP connections again."""
        assert self.port is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
