"""Security of the web sink: loopback by default, token elsewhere, no pixels unless asked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from streamer.config import AppConfig, parse_config
from streamer.errors import ConfigError
from streamer.sources.file import FileSource
from streamer.testing.net import free_port
from streamer.web.auth import CSP
from streamer.web.config import WebConfig
from streamer.web.server import WebSink
from tests.helpers.web import web_run

TOKEN = "tok-3f9a1c-very-secret"
JPEG_MAGIC = b"\xff\xd8\xff"


@asynccontextmanager
async def serving(
    web_cfg: WebConfig, video: Path | None = None, **kw: float
) -> AsyncIterator[tuple[WebSink, str]]:
    """A real pipeline (real models) with a web sink bound to loopback; ``video`` replayed."""
    async with web_run(web_cfg, bind_host="127.0.0.1", **kw) as (run, sink):
        if video is not None:
            async with FileSource(video) as src:
                await run.pipe.run_camera(src.camera, src, lossless=True)
        yield sink, f"http://127.0.0.1:{sink.port}"


def test_non_loopback_host_without_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMER_WEB_TOKEN", raising=False)
    with pytest.raises(ConfigError) as err:
        parse_config("web:\n  host: 0.0.0.0\n  port: 8080\n", "cfg.yaml")
    assert "cfg.yaml:1: web:" in str(err.value)
    assert "STREAMER_WEB_TOKEN" in str(err.value)
    monkeypatch.setenv("STREAMER_WEB_TOKEN", "")
    with pytest.raises(ConfigError):
        parse_config("web:\n  host: 192.168.1.5\n", "cfg.yaml")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_token(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.delenv("STREAMER_WEB_TOKEN", raising=False)
    cfg = parse_config(f"web:\n  host: '{host}'\n")
    assert cfg.web is not None and cfg.web.loopback


def test_non_loopback_host_with_token_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_WEB_TOKEN", TOKEN)
    cfg = parse_config("web:\n  host: 0.0.0.0\n  token_env: CAM_WEB_TOKEN\n")
    assert cfg.web is not None and not cfg.web.loopback
    assert TOKEN not in repr(cfg)


async def test_token_rules_off_loopback(
    models: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("STREAMER_WEB_TOKEN", TOKEN)
    cfg = WebConfig(host="0.0.0.0", port=free_port())
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address host
    async with serving(cfg) as (_, url), aiohttp.ClientSession(cookie_jar=jar) as http:
        for path in ("/", "/api/state", "/metrics", "/readyz", "/events"):
            async with http.get(url + path) as r:
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            bad = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
            async with http.get(url + path, headers=bad) as r:
                assert r.status == 401, path
        good = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/", "/api/state", "/metrics", "/readyz"):
            async with http.get(url + path, headers=good) as r:
                assert r.status == 200, path
        async with http.get(url + "/healthz") as r:
            assert r.status == 200  # probes need no token; the body says nothing
        async with http.get(url + "/login", params={"token": "nope"}) as r:
            assert r.status == 401
        async with http.get(url + "/login", params={"token": TOKEN}, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.cookies["streamer_session"]
            assert TOKEN not in cookie.value
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(url + "/api/state") as r:  # the session cookie now
            assert r.status == 200
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as fresh:
        jar_cookie = {"streamer_session": "forged"}
        async with (
            serving(cfg) as (_, url2),
            fresh.get(url2 + "/api/state", cookies=jar_cookie) as r,
        ):
            assert r.status == 401
    assert TOKEN not in caplog.text
    assert TOKEN[:8] not in caplog.text


async def test_loopback_refuses_foreign_host_names(models: None) -> None:
    """DNS rebinding: a page of another site pointed at 127.0.0.1 gets nothing."""
    async with serving(WebConfig(port=free_port())) as (_, url), aiohttp.ClientSession() as http:
        async with http.get(url + "/api/state", headers={"Host": "evil.example:8080"}) as r:
            assert r.status == 403
        async with http.get(url + "/api/state") as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-store"
        async with http.get(url + "/") as r:
            assert r.status == 200
            assert r.headers["Content-Security-Policy"] == CSP
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            page = await r.text()
        assert "http://" not in page and "https://" not in page  # no CDN, no internet


PATHS = [
    "/",
    "/static/app.js",
    "/static/app.css",
    "/static/index.html",
    "/api/state",
    "/api/schema/state.json",
    "/metrics",
    "/healthz",
    "/readyz",
    "/api/preview/single_face.jpg",
    "/api/preview/single_face",
    "/preview.jpg",
    "/snapshot.jpg",
    "/api/snapshot/single_face.jpg",
    "/favicon.ico",
]


async def crawl(url: str) -> dict[str, tuple[int, str, bytes]]:
    out = {}
    async with aiohttp.ClientSession() as http:
        for path in PATHS:
            async with http.get(url + path) as r:
                out[path] = (r.status, r.headers.get("Content-Type", ""), await r.read())
        async with http.get(url + "/events") as r:
            out["/events"] = (
                r.status,
                r.headers["Content-Type"],
                await r.content.readuntil(b"\n\n"),
            )
    return out


async def test_preview_off_serves_no_pixel(models: None, face_video: Path) -> None:
    cfg = WebConfig(port=free_port(), preview=False)
    async with serving(cfg, face_video, preview_interval_s=0.0) as (sink, url):
        assert not sink.bus.wants_previews  # frames never reach the sink
        for path, (_, ctype, body) in (await crawl(url)).items():
            assert not ctype.startswith("image/"), path
            assert JPEG_MAGIC not in body, path


async def test_preview_on_serves_an_annotated_jpeg(models: None, face_video: Path) -> None:
    cfg = WebConfig(port=free_port(), preview=True)
    async with serving(cfg, face_video, preview_interval_s=0.0) as (_, url):
        pages = await crawl(url)
    status, ctype, body = pages["/api/preview/single_face.jpg"]
    assert (status, ctype) == (200, "image/jpeg")
    assert body.startswith(JPEG_MAGIC)
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 640, 3)


def test_serve_config_keeps_the_web_section() -> None:
    from streamer.cli.replay import serve_config

    cfg = serve_config(parse_config("web:\n  enabled: false\n  port: 9999\n"))
    assert cfg.web is not None and cfg.web.enabled and cfg.web.port == 9999
    assert serve_config(AppConfig()).web == WebConfig()


def test_the_sample_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.config import load_config

    monkeypatch.delenv("STREAMER_WEB_TOKEN", raising=False)
    cfg = load_config(Path(__file__).parents[2] / "configs" / "web.yaml")
    assert cfg.web == WebConfig()  # the documented defaults, spelled out
