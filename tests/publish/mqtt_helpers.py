"""Helpers of the publish tests: a real mosquitto broker process, polling with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
START_TIMEOUT_S = 10.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, outside the ephemeral range.

    Outside, because a client that retries connecting to a closed port inside the
    ephemeral range can be given that very port as its source and connect to itself
    (TCP simultaneous open); the broker then cannot bind it.
    """
    low, _high = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


class Collector:
    """An independent MQTT client that records every message on ``topic``.

    Attributes:
        messages: (topic, payload, retain) in arrival order.
    """

    def __init__(self, host: str, port: int, topic: str = "#") -> None:
        import aiomqtt

        self.topic = topic
        self.client = aiomqtt.Client(host, port, identifier=f"collector-{os.getpid()}-{id(self)}")
        self.messages: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        await self.client.__aenter__()
        await self.client.subscribe(self.topic, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            # Teardown: the reader ends with MqttError when the broker is gone.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            self.messages.append((str(m.topic), payload, bool(m.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    def records(self, suffix: str) -> list[dict]:
        import json

        return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p]


def make_va(
    camera: str = "cam1",
    track_id: int = 1,
    t: float = 0.0,
    v: float = 0.25,
    a: float = -0.5,
    frame: int | None = None,
    wall_time: float | None = None,
):
    from streamer.messages import VASample

    return VASample(
        camera=camera,
        frame=round(t * 30) if frame is None else frame,
        t=t,
        track_id=track_id,
        box=(10.0, 20.0, 74.0, 84.0),
        valence=v,
        arousal=a,
        valence_raw=v,
        arousal_raw=None,
        variance=(0.01, 0.02),
        model="fer-minixception-projected (approximate)",
        wall_time=wall_time,
    )


def make_event(camera: str = "cam1", track_id: int = 1, kind: str = "appeared", t: float = 0.0):
    from streamer.messages import TrackEvent, TrackEventKind

    return TrackEvent(
        camera=camera,
        track_id=track_id,
        kind=TrackEventKind(kind),
        frame=int(t * 30),
        t=t,
        duration_s=2.5 if kind == "lost" else None,
    )


def make_status(camera: str = "cam1", state: str = "online"):
    from streamer.messages import CameraState, CameraStatus

    return CameraStatus(
        camera=camera,
        state=CameraState(state),
        wall_time=time.time(),
        detail="rtsp://***@host/stream",
        frames=42,
    )


def make_description(camera: str = "cam1", track_id: int = 1, source: str = "fallback"):
    from streamer.messages import Description

    return Description(
        id=f"{camera}-{track_id}-1",
        camera=camera,
        track_id=track_id,
        t=1.5,
        valence=0.6,
        arousal=0.3,
        basic="happy",
        complex=("content", "amused"),
        text="Looks pleased.",
        source=source,
        model="fallback",
    )


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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
