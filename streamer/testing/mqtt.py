"""A real mosquitto broker for tests and benchmarks, and a TCP relay to cut the network.

* :class:`Broker` runs ``mosquitto`` with a generated config on a loopback port; it can be
  stopped, killed and restarted on the same port.
* :class:`TcpProxy` relays a loopback port to the broker; ``cut()`` drops every relayed
  connection, as a network cut would.
* :func:`mosquitto_unavailable` says why the broker or its clients cannot run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
START_TIMEOUT_S = 10.0
# The command-line clients tests run next to the broker, and their Debian packages.
MOSQUITTO_CLIENTS = {
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "mosquitto_passwd": "mosquitto",
}


def mosquitto_unavailable() -> str | None:
    """Why the broker or its command-line clients cannot run here, or None when they can."""
    if MOSQUITTO is None:
        return "the mosquitto broker is not installed (Debian package 'mosquitto')"
    for client, package in MOSQUITTO_CLIENTS.items():
        if shutil.which(client) is None:
            return f"{client} is not installed (Debian package {package!r})"
    return None


class Broker:
    """A mosquitto process with a generated config; can be stopped and restarted."""

    def __init__(self, workdir: Path, port: int, extra_conf: str = "") -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port
        self.extra_conf = extra_conf
        self.log_path = workdir / f"mosquitto-{port}.log"
        self.conf_path = workdir / f"mosquitto-{port}.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_conf(self) -> None:
        self.conf_path.write_text(
            f"listener {self.port} {self.host}\n"
            # Run as ourselves: as root, mosquitto would switch to the user "mosquitto",
            # which cannot read the test's temporary files.
            f"user {getpass.getuser()}\n"
            "persistence false\n"
            f"log_dest file {self.log_path}\n"
            "log_type all\n"
            "connection_messages true\n"
            f"{self.extra_conf}\n"
            + ("" if "allow_anonymous" in self.extra_conf else "allow_anonymous true\n")
        )

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.write_conf()
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err} {self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def count_in_log(self, needle: str) -> int:
        return self.log_text().count(needle)


class TcpProxy:
    """A loopback TCP relay to cut and restore the network path to a broker.

    ``await start()`` listens on ``port``; ``await cut()`` closes every relayed
    connection and stops listening (the broker sees the client vanish).
    """

    def __init__(self, port: int, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.target_port = target_port
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)  # a relay running for days keeps no dead ones

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in self._writers:
            w.close()
        self._writers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:  # a pipe ends quietly on cancel; any other error is raised
            with contextlib.suppress(asyncio.CancelledError):
                await task
