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

from streamer.cli.run import run_live
from streamer.compose import build_pipeline
from streamer.config import parse_config
from streamer.store import default_store
from streamer.testing.net import free_port
from streamer.web.config import WebConfig
from streamer.web.server import CLIENT_QUEUE, WebSink
from tests.helpers.wait import wait_until

SLACK_S = 60.0


async def test_a_client_that_stops_reading_is_bounded_and_harmless(
    models: None, face_loop: Path
) -> None:
    cfg = parse_config(
        f"cameras:\n  - name: cam\n    url: {face_loop}\n    realtime: true\n    loop: true\n"
    )
    pipe = build_pipeline(cfg, default_store())
    stop = asyncio.Event()
    web_cfg = WebConfig(port=free_port())
    sink = WebSink(web_cfg, pipe, update_interval_s=0.01, write_timeout_s=3.0)
    received = 0
    async with sink:
        run = asyncio.create_task(run_live(cfg, stop=stop, pipeline=pipe, handle_signals=False))
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
                    assert all(len(c.items) <= CLIENT_QUEUE for c in sink.clients)
                    return pred()

                await wait_until(bounded, SLACK_S, what)

            await until(lambda: len(sink.clients) == 2, "two event streams")
            await until(
                lambda: any(c.dropped > 0 for c in sink.clients) or sink.slow_clients,
                "the stalled client to lose snapshots",
            )
            frames_then, received_then = frames(), received
            await until(
                lambda: frames() > frames_then + 30 and received > received_then + 10,
                "video and the reading client to go on",
            )
            await until(lambda: sink.slow_clients == 1, "the stalled client to be cut off")
            assert len(sink.clients) == 1  # the reader is still there
            received_then = received
            await until(lambda: received > received_then + 10, "the reader to go on")
            assert sink.client_drops > 0
            assert not reading.done()
        finally:
            stalled.close()
            stop.set()
            await asyncio.wait_for(run, SLACK_S)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
