"""The review API over a real history (SQLite) and a real web server: paging, filters,
marking reviewed, keeping, the live episodes and moods of /api/state, the write rules,
and /readyz when the history stops."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from streamer.config import AppConfig
from streamer.history.config import HistoryConfig
from streamer.history.sink import HistorySink
from streamer.messages import Episode, Message, Mood, VASample, VAStats
from streamer.testing.history_load import frame_messages
from streamer.testing.net import free_port
from streamer.web.config import WebConfig
from tests.helpers.wait import wait_until, wait_until_async
from tests.helpers.web import web_run

TOKEN = "review-token-0123456789"
NOW = time.time()


def ep(n: int, state: str, wall: float) -> Episode:
    st = VAStats(-0.5, -0.6, -0.4)
    t_start = 10.0 * n
    t = t_start + 2.0 if state == "started" else t_start + 5.0
    return Episode(
        f"front:{n}:low:{int(t_start * 1000)}",
        "front",
        n,
        "low",
        state,
        t,
        int(t * 30),
        t_start,
        None if state == "started" else t_start + 4.0,
        t - t_start,
        None if state == "started" else "cleared",
        st,
        st,
        wall,
    )


def samples(n: int, wall: float) -> list[Message]:
    return [
        VASample(
            "front",
            i,
            10.0 * n + i / 10,
            n,
            (0, 0, 1, 1),
            -0.5 + i / 100,
            0.1,
            None,
            None,
            (0.01, 0.01),
            "m",
            wall + i / 10,
        )
        for i in range(30)
    ]


async def publish_history(run: Any) -> None:
    bus = run.bus
    for n, age in ((1, 3000), (2, 2000), (3, 1000)):  # three ended episodes, oldest first
        wall = NOW - age
        for msg in [*samples(n, wall - 4), ep(n, "started", wall - 3), ep(n, "ended", wall)]:
            await bus.publish(msg)
    await bus.publish(Mood("front", 1.0, 30, 1, 0.4, 0.3, 0.0, 0.0, "excited", NOW - 2500))
    history = run.sinks["history"]
    assert isinstance(history, HistorySink)
    await wait_until(lambda: history.messages >= 97, what="the history to read them")
    history.writer.put(history.recorder.tick())  # the open VA segments, now
    history.writer.commit_soon()
    w = history.writer
    await wait_until(
        lambda: w.written["episode"] >= 3 and w.written["va"] >= 3, what="rows written"
    )


def config(tmp_path: Any, **web: Any) -> tuple[WebConfig, AppConfig]:
    web_cfg = WebConfig(port=free_port(), **web)
    history = HistoryConfig(path=tmp_path / "h.db", commit_interval_s=0.1)
    return web_cfg, AppConfig(history=history)


async def test_review_api_pages_filters_and_marks(models: None, tmp_path: Any) -> None:
    web_cfg, cfg = config(tmp_path)
    async with web_run(web_cfg, cfg) as (run, sink), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{sink.port}"
        await publish_history(run)
        async with http.get(base + "/api/episodes", params={"camera": "front", "limit": "2"}) as r:
            page = await r.json()
        assert [e["track_id"] for e in page["episodes"]] == [3, 2]  # newest first
        assert page["next_before"] == page["episodes"][-1]["wall_start"]
        async with http.get(
            base + "/api/episodes", params={"before": str(page["next_before"]), "limit": "2"}
        ) as r:
            rest = await r.json()
        assert [e["track_id"] for e in rest["episodes"]] == [1] and rest["next_before"] is None
        first = rest["episodes"][0]
        assert first["state"] == "ended" and first["reviewed_at"] is None and not first["keep"]
        assert first["wall_end"] == pytest.approx(NOW - 3000 - 1.0, abs=0.01)

        ids = [e["id"] for e in page["episodes"]]
        async with http.post(base + "/api/episodes/reviewed", json={"ids": ids}) as r:
            assert (r.status, await r.json()) == (200, {"changed": 2})
        async with http.get(base + "/api/episodes", params={"reviewed": "false"}) as r:
            left = (await r.json())["episodes"]
        assert [e["id"] for e in left] == [first["id"]]
        async with http.post(base + f"/api/episodes/{first['id']}/keep", json={"keep": True}) as r:
            assert r.status == 200
        async with http.post(base + "/api/episodes/99999/keep", json={"keep": True}) as r:
            assert r.status == 404
        async with http.get(base + "/api/episodes", params={"reviewed": "false"}) as r:
            assert (await r.json())["episodes"][0]["keep"] is True

        params = {
            "camera": "front",
            "track": "1",
            "run": str(first["run"]),
            "after": str(NOW - 3010),
            "before": str(NOW - 2990),
        }
        async with http.get(base + "/api/va", params=params) as r:
            bins = (await r.json())["bins"]
        assert sum(b["n"] for b in bins) == 30 and bins[0]["valence"]["min"] == -0.5
        async with http.get(
            base + "/api/mood", params={"camera": "front", "after": str(NOW - 3600)}
        ) as r:
            mood = (await r.json())["mood"]
        assert [m["quadrant"] for m in mood] == ["excited"]
        async with http.get(
            base + "/api/timeline", params={"camera": "front", "after": str(NOW - 3600)}
        ) as r:
            tl = await r.json()
        assert tl["recording"] and tl["outages"] == []
        async with http.get(base + "/api/cameras") as r:
            assert (await r.json())["cameras"] == ["front"]
        # bad input: one line, 400
        for query in (
            {"camera": "nope"},
            {"after": "x"},
            {"after": "5", "before": "1"},
            {"limit": "0"},
        ):
            async with http.get(base + "/api/episodes", params=query) as r:
                assert r.status == 400, query
                assert "\n" not in (await r.json())["error"]
        # writes: JSON only, never from another site
        async with http.post(base + "/api/episodes/reviewed", data="ids=1") as r:
            assert r.status == 415
        async with http.post(
            base + "/api/episodes/reviewed",
            json={"ids": ids},
            headers={"Origin": "http://evil.example"},
        ) as r:
            assert r.status == 403
        async with http.get(base + "/review") as r:
            assert r.status == 200 and "review.js" in await r.text()


async def test_state_shows_open_episodes_and_moods(models: None, tmp_path: Any) -> None:
    web_cfg, cfg = config(tmp_path)
    async with web_run(web_cfg, cfg) as (run, sink), aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{sink.port}/api/state"
        await run.bus.publish(ep(1, "started", time.time()))
        await run.bus.publish(Mood("front", 1.0, 30, 2, -0.3, 0.5, 0.1, 0.1, "tense", time.time()))

        async def state() -> dict[str, Any] | None:
            async with http.get(url) as r:
                body: dict[str, Any] = await r.json()
            return body if body["episodes"]["open"] and body["mood"] else None

        body = await wait_until_async(state, what="the open episode in the state")
        (open_ep,) = body["episodes"]["open"]
        assert open_ep["rule"] == "low" and open_ep["for_s"] >= 2.0
        assert body["mood"][0]["quadrant"] == "tense" and body["history"] is True
        await run.bus.publish(ep(1, "ended", time.time()))

        async def ended() -> dict[str, Any] | None:
            async with http.get(url) as r:
                b: dict[str, Any] = await r.json()
            return b if not b["episodes"]["open"] else None

        body = await wait_until_async(ended, what="the episode to end")
        assert body["episodes"]["ended"][0]["reason"] == "cleared"


async def test_writes_need_the_token_off_loopback(
    models: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIEW_TOKEN", TOKEN)
    web_cfg, cfg = config(tmp_path, host="0.0.0.0", token_env="REVIEW_TOKEN")
    async with (
        web_run(web_cfg, cfg, bind_host="127.0.0.1") as (run, sink),
        aiohttp.ClientSession() as http,
    ):
        await publish_history(run)
        url = f"http://127.0.0.1:{sink.port}/api/episodes/reviewed"
        async with http.post(url, json={"ids": [1]}) as r:
            assert r.status == 401
        async with http.get(f"http://127.0.0.1:{sink.port}/api/episodes") as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(url, json={"ids": [1]}, headers=auth) as r:
            assert (r.status, await r.json()) == (200, {"changed": 1})


async def test_readyz_says_when_the_history_stopped(models: None, tmp_path: Any) -> None:
    web_cfg = WebConfig(port=free_port())
    history = HistoryConfig(path=tmp_path / "h.db", commit_interval_s=0.05, max_size_mb=0.15)
    async with (
        web_run(web_cfg, AppConfig(history=history)) as (run, sink),
        aiohttp.ClientSession() as http,
    ):
        for i in range(3000):
            for msg in frame_messages(i, i / 30, NOW + i * 60, 2, 3):
                await run.bus.publish(msg)
        store = run.sinks["history"]
        assert isinstance(store, HistorySink)
        await wait_until(store.problem, what="the history to stop")
        async with http.get(f"http://127.0.0.1:{sink.port}/readyz") as r:
            body = await r.json()
        assert r.status == 503
        assert "full" in body["not_ready"]["history"]
        async with http.get(f"http://127.0.0.1:{sink.port}/metrics") as r:
            text = await r.text()
        assert 'streamer_history_rows_dropped_total{reason="disabled"}' in text
        assert "streamer_history_up 0.0" in text


async def test_without_history_the_review_api_says_404(models: None) -> None:
    async with (
        web_run(WebConfig(port=free_port())) as (_, sink),
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{sink.port}/api/episodes") as r,
    ):
        assert r.status == 404 and "history" in (await r.json())["error"]
