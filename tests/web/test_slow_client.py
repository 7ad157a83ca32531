"""A browser that connects to /events and stops reading cannot hurt anyone.

Its queue stays bounded and lossy, it is cut off after the write timeout, while the
video keeps being analysed and another browser keeps getting updates.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp

from streamer.compose import SinkContext, build_pipeline
from streamer.config import parse_config
from streamer.runtime.live import run_live
from streamer.store import default_store
from streamer.testing.net import free_port
from streamer.web.config import WebConfig
from streamer.web.events import CLIENT_QUEUE
from streamer.web.server import WebSink
from tests.helpers.wait import SLACK_S, wait_until


async def test_a_client_that_stops_reading_is_bounded_and_harmless(
    models: None, face_loop: Path
) -> None:
    cfg = parse_config(
        f"cameras:\n  - name: cam\n    url: {face_loop}\n    realtime: true\n    loop: true\n"
    )
    web_cfg = WebConfig(port=free_port())
    cfg = cfg.model_copy(update={"web": web_cfg})
    pipe = build_pipeline(cfg, default_store())
    stop = asyncio.Event()
    made: list[WebSink] = []

    def web_sink(ctx: SinkContext) -> WebSink:
        made.append(
            WebSink(web_cfg, ctx.bus, ctx.view, update_interval_s=0.01, write_timeout_s=3.0)
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
    received = 0
    url = f"http://127.0.0.1:{sink.port}/events"

    async def reader() -> None:
        nonlocal received
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            async for line in r.content:
                if line.startswith(b"event: state"):
                    received += 1

    reading = asyncio.create_task(reader())
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(stalled, ("127.0.0.1", sink.port))
        await loop.sock_sendall(
            stalled, b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )  # ... and never read a byte

        def frames() -> int:
            st = pipe.stats.get("cam")
            return st.frames if st else 0

        async def until(pred: Callable[[], object], what: str) -> None:
            def bounded() -> object:  # every client's queue stays bounded meanwhile
                assert all(len(c.items) <= CLIENT_QUEUE for c in sink.events.clients)
                return pred()

            await wait_until(bounded, SLACK_S, what)

        await until(lambda: len(sink.events.clients) == 2, "two event streams")
        await until(
            lambda: any(c.dropped > 0 for c in sink.events.clients) or sink.events.slow_clients,
            "the stalled client to lose snapshots",
        )
        frames_then, received_then = frames(), received
        await until(
            lambda: frames() > frames_then + 30 and received > received_then + 10,
            "video and the reading client to go on",
        )
        await until(lambda: sink.events.slow_clients == 1, "the stalled client to be cut off")
        assert len(sink.events.clients) == 1  # the reader is still there
        received_then = received
        await until(lambda: received > received_then + 10, "the reader to go on")
        assert sink.events.client_drops > 0
        assert not reading.done()
    finally:
        stalled.close()
        stop.set()
        await asyncio.wait_for(run, SLACK_S)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
