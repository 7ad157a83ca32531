"""How many connections the web server holds, and for how long a silent one may stay.

aiohttp keeps a connection while its client trickles a request head, and accepts as
many as the process has file descriptors. :class:`ConnectionGuard` wraps each accepted
connection's protocol:

* **a cap** (``web.max_connections``): at the cap, the oldest connection that has been
  open for a second (or half the header timeout) without sending a complete request head
  is closed to make room: it has shown nothing, no token, no request, while a real
  client sends its head at once. When there is none, the new connection is answered
  ``503`` and closed at once. Either way the process holds at most the cap, whatever a
  client without the token does, and a connection that has sent a request (a browser's
  event stream, a keep-alive connection) is never closed for a newcomer;
* **a header-read deadline** (``web.header_timeout_s``): a connection that has not sent a
  complete request head that long after opening is closed, however slowly it trickles.

Between requests, aiohttp's keep-alive timeout (``web.keepalive_timeout_s``) closes a
connection that has not sent a complete next request in time. A refused request (401,
403) closes its connection (:mod:`streamer.web.auth`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streamer.sinks import Metric
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 25\r\nConnection: close\r\n\r\ntoo many connections, try\n"
)
WARN_INTERVAL_S = 60.0  # refusals and evictions: one warning per this (s)
EVICT_AFTER_S = 1.0  # at the cap, a connection this long without a request head may go (s)


class _Guarded(asyncio.Protocol):
    """One accepted connection: its deadline, then aiohttp's handler for the rest."""

    def __init__(self, guard: ConnectionGuard, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self.make_inner = make_inner
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.opened = 0.0  # loop time when accepted
        self.head_seen = False
        self._tail = b""  # the last bytes of the head so far (a blank line may be split)
        self._deadline: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        if not self.guard.admit(self):
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self._deadline = loop.call_later(self.guard.header_timeout_s, self._head_late)
        self.inner = self.make_inner()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self.head_seen:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self.head_seen = True
                self._cancel_deadline()
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self.guard.release(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # ---------------------------------------------------------------- guard

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        self._deadline = None
        if not self.head_seen:
            self.guard.head_timeouts += 1
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class ConnectionGuard:
    """The web server's open connections: a cap and a header-read deadline.

    Args:
        max_connections: connections open at once.
        header_timeout_s: a complete request head must arrive this soon after opening.

    Attributes:
        refused: connections answered 503 at the cap.
        evicted: connections without a request head closed to make room.
        head_timeouts: connections closed for sending no complete head in time.
    """

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.evict_after_s = min(EVICT_AFTER_S, header_timeout_s / 2)
        self.open: dict[_Guarded, None] = {}  # in opening order (oldest first)
        self.refused = 0
        self.evicted = 0
        self.head_timeouts = 0
        self._warnings = LogThrottle(WARN_INTERVAL_S)

    def factory(self, make_inner: Callable[[], asyncio.Protocol]) -> Callable[[], _Guarded]:
        """A protocol factory for ``loop.create_server`` around aiohttp's ``make_inner``."""
        return lambda: _Guarded(self, make_inner)

    def admit(self, conn: _Guarded) -> bool:
        """Whether ``conn`` may stay (making room if a connection without a head holds it)."""
        if len(self.open) >= self.max_connections:
            before = conn.opened - self.evict_after_s
            oldest_silent = next(
                (c for c in self.open if not c.head_seen and c.opened <= before), None
            )
            if oldest_silent is None:
                self.refused += 1
                self._warn("refused")
                return False
            del self.open[oldest_silent]
            self.evicted += 1
            self._warn("closed the oldest one without a request to make room")
            oldest_silent.close()
        self.open[conn] = None
        return True

    def release(self, conn: _Guarded) -> None:
        self.open.pop(conn, None)

    def metrics(self) -> list[Metric]:
        """Connections open, refused at the cap, closed to make room or for a late head."""
        return [
            Metric.gauge("streamer_web_connections", "HTTP connections open", len(self.open)),
            Metric.counter(
                "streamer_web_connections_refused",
                "connections answered 503 at web.max_connections",
                self.refused,
            ),
            Metric.counter(
                "streamer_web_connections_evicted",
                "connections without a request head closed to make room at the cap",
                self.evicted,
            ),
            Metric.counter(
                "streamer_web_header_timeouts",
                "connections closed for no complete request head within web.header_timeout_s",
                self.head_timeouts,
            ),
        ]

    def _warn(self, what: str) -> None:
        self._warnings.log(
            logger,
            logging.WARNING,
            "web: %d connections open (web.max_connections): %s (refused %d, made room %d)",
            len(self.open),
            what,
            self.refused,
            self.evicted,
        )
