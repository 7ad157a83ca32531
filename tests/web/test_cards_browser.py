"""Track cards in a real browser (Debian's chromium through Playwright) over a real RTSP
camera and a real mosquitto: no card survives its track's ``lost`` event, even when the
track's episode is described after the loss (a late description must not bring the
card back).

Needs the fix of issue 25's ghost cards (branch i25b: streamer/web/state.py remembers
lost tracks); on a tree without it, the late description re-creates the card."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from streamer.testing.mqtt import Broker
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama
from streamer.testing.sources import RtspServer, loop_clip
from tests.helpers.browser import CHROMIUM, SLACK_MS, Run, TimedMessages, chromium_page
from tests.helpers.wait import wait_until_sync

pytestmark = [
    pytest.mark.browser,
    pytest.mark.rtsp,
    pytest.mark.mqtt,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

# Every card added to or removed from the page, with the wall time (before the page's
# own scripts run).
CARD_WATCH = """
window.__cards = [];
document.addEventListener("DOMContentLoaded", () => {
  const note = (nodes, op, now) => {
    for (const n of nodes) {
      if (n.dataset && n.dataset.track) window.__cards.push([n.dataset.track, op, now]);
    }
  };
  new MutationObserver((records) => {
    const now = Date.now() / 1000;
    for (const r of records) {
      note(r.addedNodes, "add", now);
      note(r.removedNodes, "remove", now);
    }
  }).observe(document.getElementById("tracks"), { childList: true });
});
"""


def h264_copy(src: Path, dst: Path, width: int = 640) -> Path:
    """``src`` re-encoded as H.264 (what the RTSP test server streams), ``width`` wide."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        istream = inp.streams.video[0]
        fps = round(float(istream.average_rate or 30))
        stream = out.add_stream("libx264", rate=fps)
        height = round(istream.codec_context.height * width / istream.codec_context.width / 2) * 2
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = fps
        stream.options = {"preset": "ultrafast", "bf": "0"}
        for i, frame in enumerate(inp.decode(istream)):
            img = frame.reformat(width=width, height=height, format="yuv420p")
            img.pts, img.time_base = i, Fraction(1, fps)
            for packet in stream.encode(img):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


@pytest.fixture
def room_camera(
    store_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RtspServer]:
    """face_noface.mov (HEVC, re-encoded as H.264) back to back over RTSP: a face for
    2.4 s, then 4 s of empty room, again and again (a new track each time, lost in the
    empty stretch)."""
    tmp = tmp_path_factory.mktemp("room")
    once = h264_copy(store_path("face_noface.mov"), tmp / "room_once.mp4")
    with RtspServer(loop_clip(once, tmp / "room.mp4", 60.0)) as srv:
        yield srv


def test_no_card_survives_its_tracks_lost_event(
    models: None,
    room_camera: RtspServer,
    mqtt_broker: Broker,
    fake_ollama: Callable[..., FakeOllama],
    tmp_path: Path,
) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    port = free_port()
    llm = fake_ollama("happy")
    config = tmp_path / "room.yaml"
    # An episode for every face that ends when its track is lost, described then: the
    # description comes after the `lost` event.
    config.write_text(
        f"cameras:\n  - name: room\n    url: {room_camera.url}\n"
        f"web:\n  port: {port}\n"
        f"mqtt: {{host: {mqtt_broker.host}, port: {mqtt_broker.port}, prefix: cards}}\n"
        f"llm:\n  host: {llm.url}\n  model: llama3.2\n  interval_s: 30\n  warmup_s: 0.2\n"
        "episodes:\n  rules:\n    - name: any\n      when: {valence_above: -1}\n"
        "      for_s: 0.5\n  describe: true\n"
    )
    run = Run(config, port, tmp_path / "run.log")
    with (
        TimedMessages(mqtt_broker.host, mqtt_broker.port, "cards/room/#") as msgs,
        playwright.sync_playwright() as pw,
        chromium_page(pw, 1100, 760) as (page, errors),
    ):
        try:
            page.add_init_script(CARD_WATCH)
            run.start()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#conn.live", timeout=SLACK_MS)

            page.wait_for_selector(".track[data-valence]", timeout=SLACK_MS)  # a face

            # The track is lost, then its episode is described: wait for both messages.
            # A track the page drew a card for: one lost before the page connected (a
            # short-lived track under load) never had a card to leave behind.
            def lost_then_described() -> tuple[str, float] | None:
                drawn = {k for k, op, _ in page.evaluate("window.__cards") if op == "add"}
                seen = list(msgs.messages)
                for t_lost, topic, rec in seen:
                    if topic.endswith("/events") and rec.get("event") == "lost":
                        key = f"room/{rec['track_id']}"
                        if key not in drawn:
                            continue
                        late = [
                            t
                            for t, topic2, r in seen
                            if topic2.endswith("/description")
                            and r.get("track_id") == rec["track_id"]
                            and t > t_lost
                        ]
                        if late:
                            return key, max(late)
                return None

            key, t_late = wait_until_sync(
                lost_then_described,
                SLACK_MS / 1000,
                "a track lost, then described",
                poll_s=0.2,
            )
            # A state the page drew after the late description went out.
            page.wait_for_function(
                "t => Number(document.body.dataset.updated) > t", arg=t_late + 1.0, timeout=SLACK_MS
            )
            assert page.locator(f'.track[data-track="{key}"]').count() == 0, "a ghost card"
            history: list[Any] = page.evaluate("window.__cards")
            ops = [op for k, op, _ in history if k == key]
            assert ops and ops[0] == "add" and ops[-1] == "remove", history
            assert ops.count("add") == 1, f"the card of {key} came back: {history}"
            assert errors == []
        finally:
            run.stop()
