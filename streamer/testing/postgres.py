"""A real PostgreSQL server in a temporary directory, on a free loopback port.

Debian's ``postgresql`` package (``tools/setup.sh``) ships the server binaries under
``/usr/lib/postgresql/<version>/bin``. :class:`PostgresServer` runs ``initdb`` into a
directory of its own, starts the server listening on 127.0.0.1 only (its socket in that
directory too), makes a database, and removes everything when it stops. PostgreSQL
refuses to run as root: as root, the directory is given to the ``postgres`` user the
package creates (or ``nobody``) and the binaries run as that user.

    with PostgresServer() as pg:
        url = pg.url            # postgresql://streamer@127.0.0.1:PORT/streamer
        pg.stop(); pg.start()   # the same data, the same port (a server restart)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from streamer.testing.net import free_port

START_TIMEOUT_S = 60.0  # the server must accept connections within this (s)
DATABASE = "streamer"
USER = "streamer"


def server_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


def _run_as() -> str | None:
    """The user to run the server as (None: the current one, when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if server_bin() is None:
        return "no PostgreSQL server binaries (Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and _run_as() is None:
        return "running as root and no unprivileged user (postgres, nobody) to run the server"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to drop privileges"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'streamer[postgres]')"
    return None


class PostgresServer:
    """A throw-away PostgreSQL cluster (see the module docstring).

    Args:
        port: the port (0: a free one).
    """

    def __init__(self, port: int = 0) -> None:
        why = postgres_unavailable()
        if why is not None:
            raise RuntimeError(why)
        bindir = server_bin()
        assert bindir is not None
        self.bin = bindir
        self.port = port or free_port()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="streamer-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._initialised = False

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _check(self, *args: str) -> None:
        proc = subprocess.run(
            self._cmd(*args), capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
            )

    def _init(self) -> None:
        if self.user:
            shutil.chown(self.root, self.user)
            os.chmod(self.root, 0o700)
        self._check(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "shared_buffers = 16MB\nmax_connections = 40\n"
            )
        self._initialised = True

    def start(self) -> PostgresServer:
        if not self._initialised:
            self._init()
        self._check("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            proc = subprocess.run(
                self._cmd(
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    USER,
                    "-d",
                    "postgres",
                    "-tAc",
                    f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'",
                ),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if proc.returncode == 0:
                if proc.stdout.strip() != "1":
                    self._check(
                        "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE
                    )
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: as a crash)."""
        if not self._initialised or not (self.data / "postmaster.pid").exists():
            return
        self._check("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
