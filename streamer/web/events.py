"""``/events``: the dashboard state pushed to browsers as server-sent events.

Each browser gets a bounded, lossy queue of encoded snapshots: a browser that stops
reading loses snapshots, then its connection (after ``write_timeout_s`` on one write),
and never slows the video or other browsers. The socket's send buffer is small, so a
stalled browser holds little memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from streamer.sinks import Metric
from streamer.web.auth import CSP

logger = logging.getLogger(__name__)

IDLE_UPDATE_S = 1.0  # with no new message, a snapshot still goes out this often (fps move)
CLIENT_QUEUE = 4  # snapshots queued per browser; older ones are dropped
MAX_CLIENTS = 32  # event-stream connections at once
SSE_SNDBUF_BYTES = 65536  # socket send buffer of an event stream (bounds memory per browser)


class _Client:
    """One event-stream connection: a bounded queue of encoded snapshots, oldest dropped."""

    def __init__(self, maxsize: int) -> None:
        self.items: collections.deque[bytes] = collections.deque()
        self.maxsize = maxsize
        self.ready = asyncio.Event()
        self.dropped = 0
        self.sent = 0

    def offer(self, data: bytes) -> None:
        if len(self.items) >= self.maxsize:
            self.items.popleft()
            self.dropped += 1
        self.items.append(data)
        self.ready.set()

    async def next(self, timeout_s: float) -> bytes | None:
        if not self.items:
            self.ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.ready.wait()
        return self.items.popleft() if self.items else None


class EventStream:
    """The browsers reading ``/events`` and the loop that feeds them.

    Args:
        snapshot: the state document to send.
        version: a number that changes whenever the state changed.
        update_interval_s: the fastest snapshot rate to browsers.
        write_timeout_s: a browser that takes longer to accept one snapshot is cut off.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        version: Callable[[], int],
        update_interval_s: float,
        write_timeout_s: float,
    ) -> None:
        self._snapshot = snapshot
        self._version = version
        self.update_interval_s = update_interval_s
        self.write_timeout_s = write_timeout_s
        self.clients: set[_Client] = set()
        self.client_drops = 0  # snapshots dropped for browsers already gone
        self.slow_clients = 0  # connections cut off for not reading
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every event stream (the server is stopping)."""
        self._closing.set()
        for client in self.clients:
            client.ready.set()

    def _event_bytes(self) -> bytes:
        body = json.dumps(self._snapshot(), separators=(",", ":"))
        return f"event: state\ndata: {body}\n\n".encode()

    async def broadcast_loop(self) -> None:
        sent_version = -1
        sent_at = 0.0
        while True:
            await asyncio.sleep(self.update_interval_s)
            now = time.monotonic()
            if not self.clients:
                continue
            version = self._version()
            if version == sent_version and now - sent_at < IDLE_UPDATE_S:
                continue
            sent_version, sent_at = version, now
            data = self._event_bytes()
            for client in self.clients:
                client.offer(data)

    def metrics(self) -> list[Metric]:
        return [
            Metric.gauge(
                "streamer_web_clients", "browsers connected to the event stream", len(self.clients)
            ),
            Metric.counter(
                "streamer_web_snapshots_dropped",
                "snapshots a browser never got (it read too slowly)",
                self.client_drops + sum(c.dropped for c in self.clients),
            ),
            Metric.counter(
                "streamer_web_slow_clients",
                "event streams cut off for not reading",
                self.slow_clients,
            ),
        ]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /events``."""
        if len(self.clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text="too many dashboard connections\n")
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Content-Security-Policy"] = CSP
        await resp.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_SNDBUF_BYTES)
        client = _Client(CLIENT_QUEUE)
        self.clients.add(client)
        client.offer(b"retry: 1000\n\n" + self._event_bytes())
        try:
            await self._serve(client, request, resp)
        except ConnectionError:  # the browser went away
            pass
        finally:
            self.clients.discard(client)
            self.client_drops += client.dropped
        return resp

    async def _serve(self, client: _Client, request: web.Request, resp: web.StreamResponse) -> None:
        while not self._closing.is_set():
            data = await client.next(IDLE_UPDATE_S * 15)
            if self._closing.is_set():
                break
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    await resp.write(data or b": keepalive\n\n")
            except TimeoutError:
                self.slow_clients += 1
                logger.info(
                    "dashboard client too slow for %.0f s: disconnected", self.write_timeout_s
                )
                if request.transport is not None:
                    request.transport.abort()
                break
            client.sent += 1
