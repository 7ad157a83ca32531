"""The dashboard shows what is there now: no ghost tracks, a face count that falls to 0.

Real runs on real clips: ``face_noface.mov`` has a face for its first 2.4 s (track 1,
lost at frame 78) and then about 3 s of empty room.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path

import pytest

from streamer.config import parse_config
from streamer.messages import (
    Episode,
    Frame,
    TrackEvent,
    TrackEventKind,
    VAStats,
)
from streamer.sources.file import FileSource
from streamer.testing.mqtt import Broker
from streamer.testing.net import free_port
from streamer.web.config import WebConfig
from streamer.web.state import DashboardState
from tests.helpers.mqtt import Collector, make_description, make_event, make_va
from tests.helpers.wait import SLACK_S, wait_until
from tests.helpers.web import web_run

LOST_FRAME = 78  # face_noface.mov: track 1's `lost` event (max_age_s after the face left)


def _episode(camera: str, track_id: int, t: float) -> Episode:
    stats = VAStats(0.1, 0.0, 0.2)
    return Episode(
        id=f"{camera}:{track_id}:low:0",
        camera=camera,
        track_id=track_id,
        rule="low",
        state="ended",
        t=t,
        frame=int(t * 30),
        t_start=0.0,
        t_end=t,
        duration_s=t,
        reason="track_lost",
        valence=stats,
        arousal=stats,
    )


def test_late_messages_never_bring_a_lost_track_back() -> None:
    state = DashboardState(["cam1"], "m", approximate=False)
    state.add(make_event("cam1", 1, "appeared", 0.1))
    state.add(make_va("cam1", 1, t=0.2, v=0.5))
    assert list(state.tracks) == [("cam1", 1)]
    state.add(make_event("cam1", 1, "lost", 2.0))
    assert not state.tracks
    for late in (
        make_description("cam1", 1),  # the LLM answered after the face left
        _episode("cam1", 1, 2.0),  # the episode that the loss ended
        make_va("cam1", 1, t=1.9),  # a sample still in flight
    ):
        state.add(late)
        assert not state.tracks, f"{type(late).__name__} after `lost` made a ghost"
    # A restarted tracker (a reconnected stream) may use the id again: a new track.
    state.add(make_event("cam1", 1, "appeared", 0.1))
    state.add(make_va("cam1", 1, t=0.2, v=-0.5))
    assert state.tracks[("cam1", 1)].valence == -0.5
    # A description of a live track is shown on it.
    state.add(make_description("cam1", 1))
    assert state.tracks[("cam1", 1)].description is not None


def test_lost_tracks_remembered_are_bounded() -> None:
    from streamer.web.state import MAX_GONE

    state = DashboardState(["c"], "m", approximate=False)
    for i in range(MAX_GONE + 50):
        state.add(TrackEvent("c", i, TrackEventKind.LOST, i, float(i)))
    assert len(state.gone) == MAX_GONE


async def test_no_ghost_after_a_real_episode_described_after_the_loss(
    models: None, store_path: Callable[[str], Path], refused_url: str
) -> None:
    """A real replay with an episode rule and the describer: the episode ends with the
    track (``track_lost``) and its description comes after the ``lost`` event."""
    clip = store_path("face_noface.mov")
    cfg = parse_config(
        "episodes:\n"
        "  rules:\n"
        "    - name: any\n"
        "      when: {valence_above: -1}\n"
        "      for_s: 0.5\n"
        "  describe: true\n"
        f"llm:\n  provider: ollama\n  host: {refused_url}\n  timeout_s: 1\n"
    )
    async with web_run(WebConfig(port=free_port()), cfg, bind_host="127.0.0.1") as (run, sink):
        seen: list[str] = []
        sub = run.pipe.bus.subscribe("test", 4096, lossless=True)

        async def record() -> None:
            async for msg in sub:
                if isinstance(msg, TrackEvent) and msg.kind is TrackEventKind.LOST:
                    seen.append("lost")
                elif getattr(msg, "episode_id", None) and not isinstance(msg, Episode):
                    seen.append("episode description")

        reader = asyncio.create_task(record())
        async with FileSource(clip) as src:
            await run.pipe.run_camera(src.camera, src, lossless=True)
        await wait_until(lambda: "episode description" in seen, SLACK_S, "the description")
        # the sink applies a message in the same step it takes it from its queue
        await wait_until(lambda: len(sink._sub) == 0, SLACK_S, "the web sink to catch up")
        assert seen.index("lost") < seen.index("episode description")
        assert sink.snapshot()["tracks"] == []
        run.pipe.bus.unsubscribe(sub)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _paused(
    src: FileSource, stops: dict[int, asyncio.Event], resume: asyncio.Event
) -> AsyncIterator[Frame]:
    """The clip's frames; after each frame in ``stops`` it signals, then waits for
    ``resume`` (cleared again by the test)."""
    async for frame in src:
        yield frame
        if frame.index in stops:
            stops[frame.index].set()
            await resume.wait()
            resume.clear()


@pytest.mark.mqtt
async def test_face_count_falls_to_zero_in_an_empty_room(
    models: None, store_path: Callable[[str], Path], mqtt_broker: Broker
) -> None:
    """Dashboard and MQTT ``face_count`` agree: 1 while the face is there, 0 in the empty
    stretch of the same real clip, while frames are still being analysed."""
    clip = store_path("face_noface.mov")
    cfg = parse_config(f"mqtt:\n  host: 127.0.0.1\n  port: {mqtt_broker.port}\n  prefix: fc\n")
    topic = "fc/face_noface/face_count"
    async with (
        Collector(mqtt_broker.host, mqtt_broker.port, "fc/#") as col,
        web_run(WebConfig(port=free_port()), cfg, bind_host="127.0.0.1") as (run, sink),
    ):
        stops = {40: asyncio.Event(), 130: asyncio.Event()}
        resume = asyncio.Event()

        def dashboard_faces() -> int:
            (cam,) = sink.snapshot()["cameras"]
            return int(cam["faces"])

        def mqtt_count() -> int | None:
            payloads = col.payloads(topic)
            return json.loads(payloads[-1])["count"] if payloads else None

        async with FileSource(clip) as src:
            analysis = asyncio.create_task(
                run.pipe.run_camera(src.camera, _paused(src, stops, resume), lossless=True)
            )
            for index, want in ((40, 1), (130, 0)):
                await asyncio.wait_for(stops[index].wait(), SLACK_S)

                def settled(index: int = index) -> bool:  # that frame analysed, sink caught up
                    st = run.pipe.stats.get("face_noface")
                    return st is not None and st.frames == index + 1 and len(sink._sub) == 0

                await wait_until(settled, SLACK_S, f"frame {index} analysed")
                assert dashboard_faces() == want, f"dashboard at frame {index}"

                def mqtt_says(want: int = want) -> bool:
                    return mqtt_count() == want

                await wait_until(mqtt_says, SLACK_S, f"MQTT face_count {want}")
                if index > LOST_FRAME:
                    # The empty room: no sample for 50 frames, yet the count is fresh.
                    assert run.pipe.stats["face_noface"].frames > LOST_FRAME + 50
                resume.set()
            await asyncio.wait_for(analysis, SLACK_S)


def _inside(hull: list[list[float]], v: float, a: float) -> bool:
    """Whether (v, a) is inside or on the counter-clockwise polygon ``hull``."""
    n = len(hull)
    for i in range(n):
        (x0, y0), (x1, y1) = hull[i], hull[(i + 1) % n]
        if (x1 - x0) * (a - y0) - (y1 - y0) * (v - x0) < -1e-6:  # float32 points
            return False
    return True


async def test_model_badge_says_what_the_default_model_cannot(
    models: None, store_path: Callable[[str], Path]
) -> None:
    """The embedded default's VA is a probability-weighted mean of category points: the
    state says so in words, and gives the polygon those values never leave."""
    import jsonschema
    import numpy as np

    from streamer.affect.projection import FER_VA, project_va

    schema = json.loads(resources.files("streamer.web").joinpath("schemas/state.json").read_text())
    async with web_run(WebConfig(port=free_port()), bind_host="127.0.0.1") as (run, sink):
        async with FileSource(store_path("single_face.mp4")) as src:
            await run.pipe.run_camera(src.camera, src, lossless=True)
        state = sink.snapshot()
    jsonschema.validate(state, schema)
    assert state["model"] == "fer-minixception-va~approx" and state["approximate"]
    note = state["model_note"]
    assert "no intensity" in note and "(+0.81, +0.51)" in note and "81 % happy" in note
    hull = state["model_hull"]
    assert [0.81, 0.51] in hull and [0.0, 0.0] in hull  # happy and neutral are corners
    for v, a in FER_VA.tolist():  # every category point is inside or on it ...
        assert _inside(hull, v, a), (v, a)
    rng = np.random.default_rng(0)  # ... and so is every output the projection can give
    for v, a in project_va(rng.dirichlet(np.full(7, 0.3), size=2000)).tolist():
        assert _inside(hull, v, a), (v, a)
    assert not _inside(hull, 0.95, 0.9)  # an intense, aroused joy is out of its reach


def test_a_dimensional_model_has_no_such_note() -> None:
    from streamer.web.state import model_limits

    assert model_limits("facechannel-v1") == ("", None)
