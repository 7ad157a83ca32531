"""``/healthz`` on a blocked event loop; MQTT and LLM metrics with a real broker and server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.compose import Composition, SinkOptions, build_pipeline
from streamer.config import parse_config
from streamer.sources.file import FileSource
from streamer.store import default_store
from streamer.testing.mqtt import Broker
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama
from streamer.web.config import WebConfig
from tests.helpers.wait import wait_until_async
from tests.helpers.web import web_run


def block_the_event_loop(seconds: float) -> None:
    """The fault: a stage that wrongly blocks the event loop (a sync call in a coroutine)."""
    time.sleep(seconds)


async def test_healthz_turns_503_after_the_loop_was_blocked(models: None) -> None:
    web_cfg = WebConfig(port=free_port())
    async with (
        web_run(web_cfg, health_stale_s=0.5, health_window_s=2.0) as (_, sink),
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{sink.port}/healthz"
        async with http.get(url) as r:
            assert (r.status, await r.text()) == (200, "ok\n")
        block_the_event_loop(1.5)

        async def healthz(expected: int) -> str | None:
            async with http.get(url) as r:
                return await r.text() if r.status == expected else None

        # The heartbeat notices at its next beat ...
        text = await wait_until_async(lambda: healthz(503), what="the block reported", poll_s=0.1)
        assert "event loop" in text and "blocked" in text
        # ... and /healthz recovers once the loop runs freely again.
        await wait_until_async(lambda: healthz(200), what="/healthz to recover", poll_s=0.2)


@pytest.mark.mqtt
async def test_mqtt_and_llm_metrics_move(
    models: None,
    face_video: Path,
    fake_ollama: Callable[..., FakeOllama],
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path, free_port())
    broker.start()
    llm = fake_ollama("happy")
    port = free_port()
    cfg = parse_config(
        f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n"
        f"llm:\n  host: {llm.url}\n  model: llama3.2\n  interval_s: 0.5\n  min_gap_s: 0.25\n"
        "  warmup_s: 0.2\n  drain_timeout_s: 20\n"
        f"web:\n  port: {port}\n"
    )
    try:
        pipe = build_pipeline(cfg, default_store())
        async with Composition(pipe, SinkOptions(replay=True)), aiohttp.ClientSession() as http:
            async with FileSource(face_video) as src:
                await pipe.run_camera(src.camera, src, lossless=True)

            async def moved() -> dict[tuple[str, Any], float] | None:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    samples = {
                        (s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in text_string_to_metric_families(await r.text())
                        for s in f.samples
                    }
                sent_va = samples.get(("streamer_mqtt_messages_sent_total", (("kind", "va"),)), 0)
                requests = samples.get(("streamer_llm_requests_total", ()), 0)
                answered = samples.get(("streamer_llm_request_seconds_count", ()), 0)
                return samples if sent_va > 0 and requests > 0 and answered > 0 else None

            samples = await wait_until_async(moved, what="the metrics to move", poll_s=0.2)
            answered = samples[("streamer_llm_request_seconds_count", ())]
            assert samples[("streamer_mqtt_connected", ())] == 1.0
            assert ("streamer_mqtt_messages_buffered", ()) in samples
            assert samples[("streamer_llm_failures_total", ())] == 0
            assert samples[("streamer_llm_timeouts_total", ())] == 0
            inf = samples[("streamer_llm_request_seconds_bucket", (("le", "+Inf"),))]
            assert inf == answered
    finally:
        broker.stop()
