"""Security of the web sink: loopback by default, token elsewhere, no pixels unless asked."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
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


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("short-token", "has 11 characters; use at least 16"),
        (" " * 24, "is only whitespace"),
        ("\t\n", "is only whitespace"),
        (" " + TOKEN, "starts or ends with whitespace"),
        (TOKEN + "\n", "starts or ends with whitespace"),
    ],
)
def test_weak_tokens_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token: str, says: str
) -> None:
    monkeypatch.setenv("STREAMER_WEB_TOKEN", token)
    with pytest.raises(ConfigError) as err:
        parse_config("web:\n  host: 0.0.0.0\n", "cfg.yaml")
    assert says in str(err.value) and "STREAMER_WEB_TOKEN" in str(err.value)
    if token.strip():
        assert token.strip() not in str(err.value)
    if token != "short-token":
        return  # the command line's handling is the same for every reason: checked once
    # At start, before any work: one line, exit 1.
    cfg = tmp_path / "web.yaml"
    cfg.write_text("web:\n  host: 0.0.0.0\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer",
            "replay",
            "missing.mp4",
            "--serve",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STREAMER_WEB_TOKEN": token},
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr


async def test_bearer_scheme_in_any_case_sessions_expire_and_log_out(
    models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_WEB_TOKEN", TOKEN)
    cfg = WebConfig(host="0.0.0.0", port=free_port(), session_hours=2 / 3600)  # 2 s
    async with serving(cfg) as (_, url), aiohttp.ClientSession() as http:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            headers = {"Authorization": f"{scheme} {TOKEN}"}
            async with http.get(url + "/api/state", headers=headers) as r:
                assert r.status == 200, scheme
        for bad in (f"Basic {TOKEN}", f"Bearer{TOKEN}", TOKEN, "bearer  "):
            async with http.get(url + "/api/state", headers={"Authorization": bad}) as r:
                assert r.status == 401, bad
                assert r.headers.get("Connection", "").lower() == "close"

        async def login() -> tuple[str, str]:
            async with http.get(
                url + "/login", params={"token": TOKEN}, allow_redirects=False
            ) as r:
                assert r.status == 303
                morsel = r.cookies["streamer_session"]
                return morsel.value, str(morsel["max-age"])

        async def with_cookie(value: str) -> int:
            headers = {"Cookie": f"streamer_session={value}"}
            async with http.get(url + "/api/state", headers=headers) as r:
                return r.status

        value, max_age = await login()
        assert max_age == "2" and TOKEN not in value
        assert await with_cookie(value) == 200
        forged = value.rsplit(".", 1)[0] + "." + "0" * 64
        assert await with_cookie(forged) == 401
        later = str(int(value.split(".")[0]) + 3600) + value[value.index(".") :]
        assert await with_cookie(later) == 401  # the expiry is signed
        await asyncio.sleep(3.0)  # the server, not only the browser, ends the session
        assert await with_cookie(value) == 401

        value, _ = await login()
        assert await with_cookie(value) == 200
        headers = {"Cookie": f"streamer_session={value}"}
        async with http.get(url + "/logout", headers=headers) as r:
            assert r.status == 200
            assert r.cookies["streamer_session"].value == ""
        assert await with_cookie(value) == 401  # ended here too, not only in the browser


@pytest.mark.parametrize(("given", "bound"), [("[::1]", "::1"), ("::1", "::1")])
def test_bracketed_ipv6_host_is_the_address(given: str, bound: str) -> None:
    cfg = parse_config(f"web:\n  host: '{given}'\n")
    assert cfg.web is not None and cfg.web.host == bound and cfg.web.loopback


@pytest.mark.parametrize("host", ["[nope]", "[127.0.0.1]", "127.0.0.1:8080", "[::1"])
def test_hosts_that_cannot_be_bound_are_refused_in_validation(host: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"web:\n  host: '{host}'\n", "cfg.yaml")
    assert "cfg.yaml:2: web.host:" in str(err.value) and host in str(err.value)


async def test_a_bracketed_ipv6_host_listens_and_answers(models: None) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    cfg = parse_config(f"web:\n  host: '[::1]'\n  port: {free_port()}\n").web
    assert cfg is not None
    async with web_run(cfg) as (_, sink), aiohttp.ClientSession() as http:
        assert sink.url == f"http://[::1]:{sink.port}/"
        async with http.get(sink.url + "api/state") as r:
            assert r.status == 200
