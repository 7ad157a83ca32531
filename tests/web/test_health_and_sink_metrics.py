"""``/healthz`` on a blocked event loop; MQTT and LLM metrics with a real broker and server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.compose import Composition, SinkOptions, build_pipeline
from streamer.config import AppConfig, parse_config
from streamer.sources.file import FileSource
from streamer.store import default_store
from streamer.testing.mqtt import MOSQUITTO, Broker
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama
from streamer.web.config import WebConfig
from streamer.web.server import WebSink

SLACK_S = 60.0


def block_the_event_loop(seconds: float) -> None:
    """The fault: a stage that wrongly blocks the event loop (a sync call in a coroutine)."""
    time.sleep(seconds)


async def test_healthz_turns_503_after_the_loop_was_blocked(models: None) -> None:
    pipe = build_pipeline(AppConfig(), default_store())
    sink = WebSink(WebConfig(port=free_port()), pipe, health_stale_s=0.5, health_window_s=2.0)
    async with pipe, sink, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{sink.port}/healthz"
        async with http.get(url) as r:
            assert (r.status, await r.text()) == (200, "ok\n")
        block_the_event_loop(1.5)
        deadline = time.monotonic() + SLACK_S
        while True:  # the heartbeat notices at its next beat
            async with http.get(url) as r:
                status, text = r.status, await r.text()
            if status == 503:
                break
            assert time.monotonic() < deadline, "the block was never reported"
            await asyncio.sleep(0.1)
        assert "event loop" in text and "blocked" in text
        while status != 200:  # and it recovers once the loop runs freely again
            assert time.monotonic() < deadline, "/healthz never recovered"
            await asyncio.sleep(0.2)
            async with http.get(url) as r:
                status = r.status


@pytest.mark.mqtt
async def test_mqtt_and_llm_metrics_move(
    models: None,
    face_video: Path,
    fake_ollama: Callable[..., FakeOllama],
    tmp_path: Path,
) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto broker binary not installed (Debian package 'mosquitto')")
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
            deadline = time.monotonic() + SLACK_S
            while True:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    samples = {
                        (s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in text_string_to_metric_families(await r.text())
                        for s in f.samples
                    }
                sent_va = samples.get(("streamer_mqtt_messages_sent_total", (("kind", "va"),)), 0)
                requests = samples.get(("streamer_llm_requests_total", ()), 0)
                answered = samples.get(("streamer_llm_request_seconds_count", ()), 0)
                if sent_va > 0 and requests > 0 and answered > 0:
                    break
                assert time.monotonic() < deadline, f"metrics did not move: {samples}"
                await asyncio.sleep(0.2)
            assert samples[("streamer_mqtt_connected", ())] == 1.0
            assert ("streamer_mqtt_messages_buffered", ()) in samples
            assert samples[("streamer_llm_failures_total", ())] == 0
            assert samples[("streamer_llm_timeouts_total", ())] == 0
            inf = samples[("streamer_llm_request_seconds_bucket", (("le", "+Inf"),))]
            assert inf == answered
    finally:
        broker.stop()
