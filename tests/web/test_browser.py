"""A real headless browser (Debian's chromium through Playwright) on ``streamer run``.

The dashboard of a live run over a real RTSP camera shows the camera, a track with its
point on the valence-arousal plane, values that move as results arrive, and it goes on
updating after the server restarts. The screenshot of the run is kept: set
``STREAMER_DASHBOARD_SHOT=PATH`` to copy it there (docs/img/dashboard.png comes from it).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama
from streamer.testing.sources import RtspServer
from tests.helpers.browser import CHROMIUM, SLACK_MS, Run, chromium_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.rtsp,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def live_run(
    models: None,
    face_camera: RtspServer,
    fake_ollama: Callable[..., FakeOllama],
    tmp_path: Path,
) -> Iterator[Run]:
    port = free_port()
    llm = fake_ollama("happy")
    config = tmp_path / "live.yaml"
    config.write_text(
        f"cameras:\n  - name: front\n    url: {face_camera.url}\n"
        f"web:\n  port: {port}\n  preview: true\n"
        f"llm:\n  host: {llm.url}\n  model: llama3.2\n  interval_s: 1\n  warmup_s: 0.2\n"
    )
    run = Run(config, port, tmp_path / "run.log").start()
    try:
        yield run
    finally:
        run.stop()


def track_values(page: Any) -> tuple[str, str]:
    card = page.locator(".track").first
    return card.get_attribute("data-valence"), card.get_attribute("data-arousal")


def wait_for_moving_track(page: Any) -> None:
    page.wait_for_selector(
        '#cameras tr[data-camera="front"][data-state="online"]', timeout=SLACK_MS
    )
    page.wait_for_selector(".track[data-valence]", timeout=SLACK_MS)
    v, a = track_values(page)
    page.wait_for_function(
        """([v, a]) => {
            const c = document.querySelector('.track');
            return c && (c.dataset.valence !== v || c.dataset.arousal !== a);
        }""",
        arg=[v, a],
        timeout=SLACK_MS,
    )


def test_dashboard_in_a_real_browser(live_run: Run, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with (
        playwright.sync_playwright() as pw,
        chromium_page(pw, 1100, 760) as (page, errors),
    ):
        page.goto(f"http://127.0.0.1:{live_run.port}/")
        wait_for_moving_track(page)
        cells = page.locator('#cameras tr[data-camera="front"] td').all_inner_texts()
        assert cells[0] == "front" and cells[1].startswith("online")
        assert float(cells[3]) > 0  # analysed fps
        assert cells[6] == "1"  # faces: the tracker's count
        # What the embedded default model cannot say, said on the page.
        note = page.locator("#model-note")
        assert note.is_visible() and "no intensity" in note.inner_text()
        assert "no intensity" in (page.locator("#model").get_attribute("title") or "")
        assert page.evaluate("document.body.dataset.hull") == "5"  # drawn on each plane
        point = page.locator(".track canvas.plane")
        assert point.count() == 1
        # the fallback description first, then the LLM's answer, with their source
        page.wait_for_selector(".track .desc .src.llm", timeout=SLACK_MS)
        assert page.locator(".track .desc .src").inner_text().startswith("LLM ")
        assert page.locator(".track .desc .text").inner_text().strip()
        page.wait_for_timeout(1500)  # let the trail grow for the picture
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("STREAMER_DASHBOARD_SHOT"):
            shutil.copyfile(shot, os.environ["STREAMER_DASHBOARD_SHOT"])

        live_run.stop()
        page.wait_for_selector("#conn.down", timeout=SLACK_MS)
        restarted = time.time()
        live_run.start()
        page.wait_for_function(
            "t => Number(document.body.dataset.updated) > t", arg=restarted, timeout=SLACK_MS
        )
        wait_for_moving_track(page)  # no reload: the page reconnected by itself
        assert page.locator("#conn").inner_text() == "live"
        assert errors == []
