"""The web sink on a live run over a real RTSP camera: metrics, readiness, state schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import aiohttp
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.compose import build_pipeline
from streamer.config import parse_config
from streamer.runtime.live import run_live
from streamer.store import default_store
from streamer.testing.net import free_port
from streamer.testing.sources import RtspServer
from tests.helpers.wait import SLACK_S, wait_until_async

pytestmark = pytest.mark.rtsp


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], name: str, **labels: str) -> float:
    fam = fams[name.removesuffix("_total")]
    for s in fam.samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError(f"{name}{labels}")


def check_histogram(fam: Any, camera: str) -> None:
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in fam.samples
        if s.name.endswith("_bucket") and s.labels["camera"] == camera
    ]
    count = next(
        s.value for s in fam.samples if s.name.endswith("_count") and s.labels["camera"] == camera
    )
    total = next(
        s.value for s in fam.samples if s.name.endswith("_sum") and s.labels["camera"] == camera
    )
    bounds = [b for b, _ in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    counts = [n for _, n in buckets]
    assert counts == sorted(counts), "bucket counts must be cumulative"
    assert counts[-1] == count > 0
    assert 0 < total < count * 10.0  # seconds: positive, and no observation near 10 s on average


async def test_metrics_readiness_and_state_on_a_live_camera(
    models: None, face_camera: RtspServer
) -> None:
    port = free_port()
    cfg = parse_config(
        f"cameras:\n  - name: front\n    url: {face_camera.url}\n"
        "    backoff: {initial_s: 0.2, max_s: 1}\n"
        f"web:\n  port: {port}\n"
    )
    pipe = build_pipeline(cfg, default_store())
    stop = asyncio.Event()
    run = asyncio.create_task(run_live(cfg, stop=stop, pipeline=pipe, handle_signals=False))
    url = f"http://127.0.0.1:{port}"
    schema = json.loads(resources.files("streamer.web").joinpath("schemas/state.json").read_text())
    try:
        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> tuple[int, str]:
                try:
                    async with http.get(url + path) as r:
                        return r.status, await r.text()
                except aiohttp.ClientConnectionError:
                    return 0, ""

            async def ready() -> bool:
                return (await get("/readyz"))[0] == 200

            async def analysed(at_least: float) -> dict[str, Any] | None:
                status, text = await get("/metrics")
                if status != 200:
                    return None
                fams = families(text)
                try:
                    n = value(fams, "streamer_frames_analysed_total", camera="front")
                    faces = value(fams, "streamer_faces_total", camera="front")
                except KeyError:
                    return None
                return fams if n >= at_least and faces > 0 else None

            await wait_until_async(ready, SLACK_S, "/readyz 200 with the camera online")
            first = await wait_until_async(lambda: analysed(1), SLACK_S, "frames analysed")
            n1 = value(first, "streamer_frames_analysed_total", camera="front")
            second = await wait_until_async(
                lambda: analysed(n1 + 10), SLACK_S, "more frames analysed"
            )
            assert value(second, "streamer_frames_decoded_total", camera="front") >= value(
                first, "streamer_frames_decoded_total", camera="front"
            )
            assert value(second, "streamer_camera_up", camera="front") == 1.0
            assert value(second, "streamer_tracks_alive", camera="front") >= 0
            assert value(second, "streamer_bus_dropped_total", sink="web") >= 0
            assert value(second, "streamer_va_batches_total") > 0
            assert "process_resident_memory_bytes" in second
            for name in (
                "streamer_detection_seconds",
                "streamer_va_seconds",
                "streamer_frame_seconds",
            ):
                assert second[name].type == "histogram"
                check_histogram(second[name], "front")

            status, text = await get("/api/state")
            assert status == 200
            state = json.loads(text)
            jsonschema.validate(state, schema)
            assert [c["name"] for c in state["cameras"]] == ["front"]

            face_camera.kill()
            status, text = await wait_until_async(
                lambda: _status_is(get, "/readyz", 503),
                SLACK_S,
                "/readyz 503 after the camera died",
            )
            body = json.loads(text)
            assert body["ready"] is False and "front" in body["not_ready"]
            assert body["cameras"]["front"]["state"] in ("offline", "starting")
            down = families((await get("/metrics"))[1])
            assert value(down, "streamer_camera_up", camera="front") == 0.0

            face_camera.start()
            await wait_until_async(ready, SLACK_S, "/readyz 200 when the camera is back")
            back = families((await get("/metrics"))[1])
            assert value(back, "streamer_reconnects_total", camera="front") >= 1
            assert (await get("/healthz"))[0] == 200
    finally:
        stop.set()
        await asyncio.wait_for(run, SLACK_S)


async def _status_is(get: Callable[[str], Any], path: str, status: int) -> tuple[int, str] | None:
    got = await get(path)
    return got if got[0] == status else None
