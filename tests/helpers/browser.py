"""Helpers of the browser tests: Debian's chromium, a ``streamer run`` process with its
dashboard, and an MQTT subscriber that notes when each message arrived (Playwright's
sync API owns the test's thread, so the subscriber runs in one of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.helpers.wait import wait_until_sync

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SLACK_MS = 120_000  # deadline for what takes seconds on an idle machine (CI is busy)


class Run:
    """A ``streamer run`` process with the dashboard on ``port``."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Run:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until_sync(self.healthy, SLACK_MS / 1000, "the dashboard to come up", poll_s=0.2)
        return self

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class TimedMessages:
    """A real MQTT subscriber on ``topic`` in a thread of its own.

    Attributes:
        messages: (arrival wall time, topic, JSON payload) in arrival order; a payload
            that is not a JSON object is ``{"text": payload}``.
    """

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.messages: list[tuple[float, str, dict[str, Any]]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="mqtt-timed", daemon=True)

    def __enter__(self) -> TimedMessages:
        self._thread.start()
        if not self._ready.wait(SLACK_MS / 1000) or self._error is not None:
            raise AssertionError(f"cannot subscribe to {self.topic}: {self._error}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as err:
            self._error = err
            self._ready.set()

    async def _run(self) -> None:
        from streamer.publish.connect import Client, connection

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = Client(self.host, self.port, identifier=f"timed-{os.getpid()}-{id(self)}")
        async with connection(client):
            await client.subscribe(self.topic, qos=1)
            self._ready.set()

            async def read() -> None:
                async for m in client.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else b""
                    try:
                        rec = json.loads(payload) if payload else {}
                    except ValueError:  # ON/OFF, online/offline
                        rec = {"text": payload.decode("utf-8", "replace")}
                    if isinstance(rec, dict):
                        self.messages.append((time.time(), str(m.topic), rec))

            reader = asyncio.create_task(read())
            await self._stop.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@contextlib.contextmanager
def chromium_page(pw: Any, width: int, height: int) -> Iterator[tuple[Any, list[str]]]:
    """A page of Debian's chromium (``pw``: a started sync Playwright) and the list its
    uncaught script errors are collected in; the browser is closed on leaving."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    try:
        page = browser.new_page(viewport={"width": width, "height": height})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
    finally:
        browser.close()
