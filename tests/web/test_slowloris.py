"""A slowloris on loopback cannot hold the web server's connections, nor stop its work.

Clients without the token open far more connections than ``web.max_connections`` and
trickle one header line every 0.2 s, reconnecting when closed. Meanwhile the camera goes
on being analysed and a client with the token, opening a new connection per request,
gets every answer. The server holds at most the cap; every trickling connection is
closed after the header-read timeout; an idle keep-alive connection after the keep-alive
timeout; a refused request's connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest

from streamer.compose import SinkContext, build_pipeline
from streamer.config import parse_config
from streamer.runtime.live import run_live
from streamer.store import default_store
from streamer.testing.net import free_port
from streamer.web.config import WebConfig
from streamer.web.server import WebSink
from tests.helpers.wait import SLACK_S, wait_until
from tests.helpers.web import web_run

TOKEN = "slowloris-test-token-0123456789"
CAP = 40  # web.max_connections of the test
LORIS = 150  # trickling connections the attack keeps trying to hold (well over the cap)
HEADER_TIMEOUT_S = 1.0
KEEPALIVE_TIMEOUT_S = 1.5
REOPEN_AFTER_S = 1.0  # a closed trickling connection is opened again after this (as tools do)
OPEN_FOR_S = 3.0  # new trickling connections are opened this long ...
TRICKLE_FOR_S = 6.0  # ... and the open ones trickle this long (>= 3 s after the last opened)


async def _read_eof(reader: asyncio.StreamReader, within_s: float) -> bool:
    """Whether the server closed the connection (EOF) within ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(4096):
                pass  # a 503 before the close
        return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the server


class Slowloris:
    """Trickling connections: a request line, then one header line every 0.2 s, never the
    blank line; a connection the server closes is opened again after a pause."""

    def __init__(self, port: int, t0: float) -> None:
        self.port = port
        self.t0 = t0
        self.opened = 0
        self.closed_by_server = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    async def one(self) -> None:
        while self.elapsed() < OPEN_FOR_S:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(REOPEN_AFTER_S)
                continue
            self.opened += 1
            try:
                writer.write(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while self.elapsed() < TRICKLE_FOR_S:
                    if await _read_eof(reader, 0.2):
                        self.closed_by_server += 1
                        break
                    writer.write(b"X-Slow: 1\r\n")
            except OSError:
                self.closed_by_server += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await asyncio.sleep(REOPEN_AFTER_S)


async def test_slowloris_is_bounded_and_work_goes_on(
    models: None, face_loop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_WEB_TOKEN", TOKEN)
    cfg = parse_config(
        f"cameras:\n  - name: cam\n    url: {face_loop}\n    realtime: true\n    loop: true\n"
    )
    web_cfg = WebConfig(
        host="0.0.0.0",
        port=free_port(),
        max_connections=CAP,
        header_timeout_s=HEADER_TIMEOUT_S,
        keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
    )
    cfg = cfg.model_copy(update={"web": web_cfg})
    pipe = build_pipeline(cfg, default_store())
    stop = asyncio.Event()
    made: list[WebSink] = []

    def web_sink(ctx: SinkContext) -> WebSink:
        made.append(
            WebSink(web_cfg, ctx.bus, ctx.view, bind_host="127.0.0.1", update_interval_s=0.05)
        )
        return made[-1]

    started = asyncio.Event()
    run = asyncio.create_task(
        run_live(
            cfg,
            stop=stop,
            pipeline=pipe,
            handle_signals=False,
            overrides={"web": web_sink},
            on_start=lambda _: started.set(),
        )
    )
    await asyncio.wait_for(started.wait(), SLACK_S)
    (sink,) = made
    port = sink.port
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def frames() -> int:
        st = pipe.stats.get("cam")
        return st.frames if st else 0

    await wait_until(lambda: frames() > 0, SLACK_S, "the camera to be analysed")
    peak = 0
    snapshots = 0
    loris = Slowloris(port, time.monotonic())

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(sink.connections.open))
            await asyncio.sleep(0.005)

    async def events() -> None:  # the token holder's dashboard, open before the attack
        nonlocal snapshots
        async with aiohttp.ClientSession(headers=auth) as http, http.get(url + "/events") as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"event: state"):
                    snapshots += 1

    watcher = asyncio.create_task(watch())
    dashboard = asyncio.create_task(events())
    await wait_until(lambda: snapshots > 0, SLACK_S, "the dashboard's first snapshot")
    attack = [asyncio.create_task(loris.one()) for _ in range(LORIS)]
    kept: set[int] = set()
    fresh: list[int] = []
    frames_before, snapshots_before = frames(), snapshots
    try:
        # The token holder: one keep-alive connection, and a new connection per request.
        one = aiohttp.TCPConnector(limit=1)
        each = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=one, headers=auth) as kept_alive,
            aiohttp.ClientSession(connector=each, headers=auth) as new_each_time,
        ):
            async with kept_alive.get(url + "/api/state") as r:
                kept.add(r.status)  # its connection is open before the attack's
            while loris.elapsed() < TRICKLE_FOR_S:
                async with kept_alive.get(url + "/api/state") as r:
                    kept.add(r.status)
                if len(fresh) < loris.elapsed() / 0.25:
                    async with new_each_time.get(url + "/api/state") as r:
                        fresh.append(r.status)
                await asyncio.sleep(0.05)
        await asyncio.gather(*attack)
        assert kept == {200}, kept  # the open connection was never closed for a newcomer
        # New connections: served by closing a silent one, or refused at once during the
        # attack's bursts (all slots just taken); never left hanging.
        assert set(fresh) <= {200, 503} and fresh.count(200) >= 3, fresh
        assert snapshots > snapshots_before + 10  # the dashboard kept its updates
        assert not dashboard.done()
        assert frames() > frames_before + 30  # analysis went on meanwhile
        assert peak <= CAP, peak  # a client without the token cannot take more
        assert loris.opened > LORIS  # closed connections were opened again
        # Every trickling connection was closed by the server while it still trickled.
        assert loris.closed_by_server == loris.opened, (loris.closed_by_server, loris.opened)
        assert sink.connections.head_timeouts > 0 and sink.connections.evicted > 0

        dashboard.cancel()
        await asyncio.gather(dashboard, return_exceptions=True)
        await wait_until(lambda: not sink.connections.open, SLACK_S, "no connection left")
    finally:
        for task in [*attack, watcher, dashboard]:
            task.cancel()
        await asyncio.gather(*attack, watcher, dashboard, return_exceptions=True)
        stop.set()
        await asyncio.wait_for(run, SLACK_S)


async def test_idle_and_refused_connections_are_closed(
    models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_WEB_TOKEN", TOKEN)
    web_cfg = WebConfig(host="0.0.0.0", port=free_port(), keepalive_timeout_s=KEEPALIVE_TIMEOUT_S)
    async with web_run(web_cfg, bind_host="127.0.0.1") as (_, sink):
        # An idle keep-alive connection (the token, one full request) is closed in time.
        reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
        writer.write(
            f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
        assert await _read_eof(reader, KEEPALIVE_TIMEOUT_S + SLACK_S)
        writer.close()

        # A refused request (no token) gets its 401 and the connection closes at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
        writer.write(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401")
        assert await _read_eof(reader, 0.5 * KEEPALIVE_TIMEOUT_S)
        writer.close()
        await wait_until(lambda: not sink.connections.open, SLACK_S, "no connection left")
