"""The describer against a real loopback server speaking the Ollama API.

Every failure mode checks the same three things, by counting: all VA samples reached a
lossless sink (the stream kept its rate), the fallback descriptions were published, and
every job ended in exactly one of answered / dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest

from streamer.bus import EventBus, Subscription
from streamer.describe import Describer
from streamer.describe.config import LlmConfig
from streamer.describe.describer import due_reason
from streamer.describe.prompts import is_text_only
from streamer.describe.providers.llamacpp import LlamaCppConfig
from streamer.describe.providers.ollama import OllamaConfig
from streamer.messages import Description, Message, TrackEvent, TrackEventKind, VASample
from streamer.testing.ollama import FakeOllama
from tests.helpers.wait import SLACK_S, wait_until

FPS = 30.0


def make_samples(
    n_frames: int,
    tracks: tuple[int, ...] = (1,),
    va: Callable[[int], tuple[float, float]] = lambda i: (0.6, 0.3),
    camera: str = "cam",
) -> list[VASample]:
    out = []
    for i in range(n_frames):
        v, a = va(i)
        for tid in tracks:
            out.append(
                VASample(
                    camera=camera,
                    frame=i,
                    t=i / FPS,
                    track_id=tid,
                    box=(0.0, 0.0, 10.0, 10.0),
                    valence=v,
                    arousal=a,
                    valence_raw=v,
                    arousal_raw=a,
                    variance=(0.01, 0.01),
                    model="test",
                )
            )
    return out


def cfg_for(host: str, **kw: object) -> LlmConfig:
    base: dict[str, object] = {
        "host": host,
        "model": "llama3.2",
        "timeout_s": 10.0,
        "interval_s": 1.0,
        "min_change": 0.25,
        "min_gap_s": 0.5,
        "warmup_s": 0.5,
        "reconnect_interval_s": 60.0,
        "reconnect_max_s": 60.0,
    }
    base.update(kw)
    return OllamaConfig(**base)


M = TypeVar("M", bound=Message)


def drain_sub(sub: Subscription, kind: type[M]) -> list[M]:
    out: list[M] = []
    while (m := sub.get_nowait()) is not None:
        assert isinstance(m, kind), m
        out.append(m)
    return out


class Rig:
    """A bus with a lossless VA sink and a description sink."""

    def __init__(self, n_samples: int) -> None:
        self.bus = EventBus()
        self.va = self.bus.subscribe(
            "va-sink",
            maxsize=n_samples + 10,
            lossless=True,
            accept=lambda m: isinstance(m, VASample),
        )
        self.desc = self.bus.subscribe(
            "desc-sink", maxsize=10_000, accept=lambda m: isinstance(m, Description)
        )

    async def feed(self, samples: list[VASample]) -> None:
        for s in samples:
            await self.bus.publish(s)
            await asyncio.sleep(0)  # let the describer's tasks run, as a pipeline would


def check_accounting(d: Describer) -> None:
    assert d.pending == 0 and d.in_flight == 0
    assert d.answered + d.dropped == d.fallbacks, (d.answered, d.dropped, d.fallbacks)
    assert sum(d.drop_reasons.values()) == d.dropped


# ---------------------------------------------------------------------- trigger rule


@pytest.mark.parametrize(
    ("first_t", "last_t", "last_va", "t", "va", "expected"),
    [
        (0.0, None, None, 0.0, (0.0, 0.0), None),  # still warming up
        (0.0, None, None, 0.5, (0.0, 0.0), "first"),
        (2.0, None, None, 2.4, (0.9, 0.9), None),  # warm-up is per track
        (0.0, 0.5, (0.0, 0.0), 1.4, (0.0, 0.0), None),
        (0.0, 0.5, (0.0, 0.0), 1.5, (0.0, 0.0), "interval"),
        (0.0, 0.5, (0.0, 0.0), 1.2, (0.3, 0.0), "change"),  # moved 0.3 > 0.25 after the gap
        (0.0, 0.5, (0.0, 0.0), 0.8, (0.9, 0.9), None),  # moved, but within min_gap_s
        (0.0, 0.5, (0.0, 0.0), 1.2, (0.2, 0.0), None),  # gap passed, move too small
    ],
)
def test_due_reason_table(
    first_t: float,
    last_t: float | None,
    last_va: tuple[float, float] | None,
    t: float,
    va: tuple[float, float],
    expected: str | None,
) -> None:
    cfg = cfg_for("http://127.0.0.1:1")
    assert due_reason(cfg, first_t, last_t, last_va, t, va[0], va[1]) == expected


# ---------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("stream", [False, True])
async def test_happy_fallback_then_llm_update_same_id(
    fake_ollama: Callable[..., FakeOllama], stream: bool
) -> None:
    srv = fake_ollama("happy")
    samples = make_samples(90)  # 3 s: due at t = 0.5, 1.5, 2.5
    rig = Rig(len(samples))
    async with Describer(cfg_for(srv.url, stream=stream), rig.bus) as d:
        for s in samples:
            await rig.bus.publish(s)
            await asyncio.sleep(0)
            # one description at a time, so every job gets its answer (no superseding)
            if d.pending or d.in_flight:
                assert await d.drain(SLACK_S)
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert d.fallbacks == 3
        assert d.answered == 3
        assert d.requests == 3 and d.failed == 0 and d.invalid == 0
    descs = drain_sub(rig.desc, Description)
    assert len(drain_sub(rig.va, VASample)) == len(samples)
    fallbacks = [m for m in descs if m.source == "fallback"]
    updates = [m for m in descs if m.source == "llm"]
    assert [m.id for m in fallbacks] == ["cam:1:1", "cam:1:2", "cam:1:3"]
    assert [m.id for m in updates] == [m.id for m in fallbacks]
    for fb, up in zip(fallbacks, updates, strict=True):
        assert descs.index(fb) < descs.index(up)  # fallback first, update later
        assert up.t == fb.t and up.valence == fb.valence and up.arousal == fb.arousal
        assert up.model == "ollama:llama3.2"
        assert fb.model.startswith("fallback/")
        assert up.basic == "happiness"
        assert up.complex == ("happiness", "pleasure")  # normalised from "Happiness"
        assert "valence +0.60, arousal +0.30" in up.text  # the prompt's numbers came back
    bodies = srv.chat_bodies()
    assert len(bodies) == 3
    assert all(b["stream"] is stream for b in bodies)
    assert all(b["format"]["required"] == ["basic", "complex", "description"] for b in bodies)
    assert all(b["keep_alive"] == "5m" for b in bodies)
    await wait_until(lambda: srv.count("/api/tags") == 1)  # the model check ran once


async def test_prompts_carry_numbers_and_words_only(fake_ollama: Callable[..., FakeOllama]) -> None:
    srv = fake_ollama("happy")
    samples = make_samples(120, tracks=(1, 2), va=lambda i: (0.5 - i / 200, -0.2 + i / 300))
    rig = Rig(len(samples))
    async with Describer(cfg_for(srv.url, max_concurrency=2, queue_size=16), rig.bus) as d:
        await rig.feed(samples)
        assert await d.drain(SLACK_S)
        check_accounting(d)
    bodies = srv.chat_bodies()
    assert bodies, "no request reached the server"
    for body in bodies:
        for msg in body["messages"]:
            assert set(msg) == {"role", "content"}, msg  # no "images" key, nothing else
            assert is_text_only(msg["content"]), msg["content"]
        user = body["messages"][-1]["content"]
        assert "valence" in user and "arousal" in user and "Trend per second" in user


async def test_invalid_answer_is_retried_once_then_used(
    fake_ollama: Callable[..., FakeOllama],
) -> None:
    srv = fake_ollama("invalid_once")
    samples = make_samples(20)  # one description (t = 0.5)
    rig = Rig(len(samples))
    async with Describer(cfg_for(srv.url), rig.bus) as d:
        await rig.feed(samples)
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert (d.fallbacks, d.requests, d.invalid, d.answered, d.dropped) == (1, 2, 1, 1, 0)
    assert srv.count("/api/chat") == 2


# ---------------------------------------------------------------------- failure modes


@pytest.mark.parametrize("mode", ["error500", "malformed", "garbage", "blank", "refused"])
async def test_failure_modes_keep_stream_and_publish_fallback(
    fake_ollama: Callable[..., FakeOllama], refused_url: str, mode: str
) -> None:
    url = refused_url if mode == "refused" else fake_ollama(mode).url
    samples = make_samples(300, tracks=(1, 2))  # 10 s, 2 tracks: 10 fallbacks each
    rig = Rig(len(samples))
    async with Describer(cfg_for(url, max_concurrency=2), rig.bus) as d:
        await rig.feed(samples)
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert d.fallbacks == 20
        assert d.answered == 0
        if mode in ("error500", "refused"):
            # transport failures: after the first, requests wait out the back-off
            assert d.failed >= 1
            assert d.requests == d.failed <= 2  # two workers may both have been sending
            assert d.drop_reasons["backoff"] >= 1
            assert d.invalid == 0
        else:
            # bad answers: each job asked twice, then dropped; no back-off
            assert d.failed == 0
            assert d.requests == 2 * d.drop_reasons["invalid"] == d.invalid >= 2
    got = drain_sub(rig.desc, Description)
    assert len(drain_sub(rig.va, VASample)) == len(samples)  # every VA sample, none lost
    assert len(got) == 20 and all(m.source == "fallback" for m in got)
    assert {m.track_id for m in got} == {1, 2}


async def test_slow_server_never_holds_up_the_stream(
    fake_ollama: Callable[..., FakeOllama],
) -> None:
    srv = fake_ollama("slow")
    samples = make_samples(300, tracks=(1, 2))
    rig = Rig(len(samples))
    async with Describer(cfg_for(srv.url, timeout_s=60.0), rig.bus) as d:
        await rig.feed(samples)
        # All samples went through and all fallbacks are out while the one request
        # is still held by the server.
        await wait_until(lambda: srv.holding == 1)
        assert d.in_flight == 1 and d.answered == 0
        assert d.fallbacks == 20
        assert len(rig.va) == len(samples)
        srv.release()
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert d.answered >= 1


async def test_slow_server_hits_the_hard_timeout(fake_ollama: Callable[..., FakeOllama]) -> None:
    srv = fake_ollama("slow")
    samples = make_samples(20)
    rig = Rig(len(samples))
    async with Describer(cfg_for(srv.url, timeout_s=0.3), rig.bus) as d:
        await rig.feed(samples)
        await wait_until(lambda: d.failed == 1)
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert (d.requests, d.failed, d.answered) == (1, 1, 0)
        assert d.drop_reasons["failed"] == 1
    assert len(drain_sub(rig.va, VASample)) == len(samples)
    assert [m.source for m in drain_sub(rig.desc, Description)] == ["fallback"]


async def test_throttled_reconnect_after_server_comes_up(
    fake_ollama: Callable[..., FakeOllama], refused_url: str
) -> None:
    port = int(refused_url.rsplit(":", 1)[1])
    rig = Rig(1000)
    cfg = cfg_for(refused_url, reconnect_interval_s=0.2, reconnect_max_s=0.2)
    async with Describer(cfg, rig.bus) as d:
        await rig.feed(make_samples(20))  # due at t = 0.5: refused
        assert await d.drain(SLACK_S)
        assert d.failed == 1 and d.requests == 1 and d.drop_reasons["failed"] == 1
        srv = fake_ollama("happy", port=port)  # the server appears on the same port
        await wait_until(lambda: d.backoff_remaining_s == 0.0)
        later = [
            VASample(
                "cam", 100 + i, 10.0 + i / FPS, 1, (0, 0, 1, 1), 0.6, 0.3, None, None, (0, 0), "t"
            )
            for i in range(5)
        ]
        await rig.feed(later)  # t = 10.0 is due (interval), and the server answers now
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert d.answered == 1 and d.requests == 2
    assert srv.count("/api/chat") == 1
    assert [m.source for m in drain_sub(rig.desc, Description)] == ["fallback", "fallback", "llm"]


# ---------------------------------------------------------------------- bookkeeping


async def test_lost_track_drops_pending_job_and_state(
    fake_ollama: Callable[..., FakeOllama],
) -> None:
    srv = fake_ollama("slow")
    rig = Rig(1000)
    async with Describer(cfg_for(srv.url, timeout_s=60.0), rig.bus) as d:
        await rig.feed(make_samples(20, tracks=(1,)))  # track 1's job is held by the server
        await wait_until(lambda: srv.holding == 1)
        await rig.feed(make_samples(20, tracks=(2,)))  # track 2's job waits in the queue
        await wait_until(lambda: d.pending == 1)
        rig.bus.publish_nowait(TrackEvent("cam", 2, TrackEventKind.LOST, 20, 20 / FPS))
        await wait_until(lambda: d.pending == 0)
        assert d.drop_reasons["track_lost"] == 1
        srv.release()
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert d.answered == 1


async def test_queue_is_bounded_and_newer_job_supersedes(
    fake_ollama: Callable[..., FakeOllama],
) -> None:
    srv = fake_ollama("slow")
    rig = Rig(10_000)
    cfg = cfg_for(srv.url, timeout_s=60.0, queue_size=3)
    async with Describer(cfg, rig.bus) as d:
        await rig.feed(make_samples(20, tracks=(1,)))
        await wait_until(lambda: srv.holding == 1)  # the worker is busy with track 1
        await rig.feed(make_samples(50, tracks=(2, 3)))  # due at t = 0.5 and 1.5 each
        assert d.pending == 2
        assert d.drop_reasons["superseded"] == 2  # each track's second due replaced its first
        await rig.feed(make_samples(20, tracks=(4, 5)))  # two more tracks due once
        assert d.pending == 3  # bounded
        assert d.drop_reasons["queue_full"] == 1  # the oldest job was pushed out
        assert d.fallbacks == 1 + 4 + 2
        srv.release()
        assert await d.drain(SLACK_S)
        check_accounting(d)


async def test_tracks_are_bounded(fake_ollama: Callable[..., FakeOllama]) -> None:
    srv = fake_ollama("happy")
    rig = Rig(10_000)
    async with Describer(cfg_for(srv.url, max_tracks=4), rig.bus) as d:
        await rig.feed(make_samples(3, tracks=tuple(range(50))))
        assert d.tracked == 4
        assert await d.drain(SLACK_S)


async def test_bad_numbers_never_reach_outputs(fake_ollama: Callable[..., FakeOllama]) -> None:
    srv = fake_ollama("happy")
    rig = Rig(1000)
    nan = float("nan")
    samples = make_samples(30, va=lambda i: (nan, 5.0) if i % 2 else (0.4, -9.0))
    async with Describer(cfg_for(srv.url), rig.bus) as d:
        await rig.feed(samples)
        assert await d.drain(SLACK_S)
    for m in drain_sub(rig.desc, Description):
        rec = m.to_record()
        assert -1.0 <= rec["valence"] <= 1.0 and -1.0 <= rec["arousal"] <= 1.0


async def test_unusable_provider_gives_fallbacks_only(tmp_path: Path) -> None:
    rig = Rig(1000)
    cfg = LlamaCppConfig(gguf_path=tmp_path / "missing.gguf", interval_s=1.0, warmup_s=0.5)
    samples = make_samples(60)
    async with Describer(cfg, rig.bus) as d:
        await rig.feed(samples)
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert d.fallbacks == 2 and d.requests == 0
        assert d.drop_reasons["provider_unavailable"] == 2
    assert len(drain_sub(rig.va, VASample)) == len(samples)


async def test_replay_is_deterministic_without_llm(refused_url: str) -> None:
    async def once() -> list[dict[str, Any]]:
        rig = Rig(1000)
        samples = make_samples(150, tracks=(1, 2), va=lambda i: (i / 150, 0.5 - i / 150))
        async with Describer(cfg_for(refused_url), rig.bus) as d:
            await rig.feed(samples)
            assert await d.drain(SLACK_S)
        return [m.to_record() for m in drain_sub(rig.desc, Description)]

    first, second = await once(), await once()
    assert first == second
    assert len(first) > 5
    assert len({r["id"] for r in first}) == len(first)


async def test_drain_hands_over_the_inbox_even_with_zero_timeout(refused_url: str) -> None:
    samples = make_samples(300, tracks=(1, 2))
    rig = Rig(len(samples))
    async with Describer(cfg_for(refused_url), rig.bus) as d:
        for s in samples:  # publish without yielding: all 600 wait in the inbox
            rig.bus.publish_nowait(s)
        assert d.fallbacks == 0
        await d.drain(0.0)
        assert d.fallbacks == 20  # the last samples' fallbacks are out before the bus closes
    assert len([m for m in drain_sub(rig.desc, Description) if m.source == "fallback"]) == 20


async def test_provider_that_crashes_on_start_leaves_fallbacks_running(refused_url: str) -> None:
    class Broken:  # a plug-in with a bug: a fault no real server can cause
        label = "broken"

        async def __aenter__(self) -> Self:
            raise RuntimeError("plug-in bug")

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
            raise AssertionError("never called: the provider did not start")

    rig = Rig(1000)
    async with Describer(cfg_for(refused_url), rig.bus, provider=Broken()) as d:
        await rig.feed(make_samples(60))
        assert await d.drain(SLACK_S)
        check_accounting(d)
        assert d.fallbacks == 2 and d.errors == 1 and d.requests == 0
        assert d.drop_reasons["provider_unavailable"] == 2


class _NeverReady:
    """A provider whose start never ends (a model still loading): jobs stay pending."""

    label = "never:ready"

    async def __aenter__(self) -> _NeverReady:
        await asyncio.Event().wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, object]) -> str:
        raise AssertionError("never called")


async def test_drain_returns_as_soon_as_the_last_pending_job_is_dropped() -> None:
    rig = Rig(1000)
    cfg = cfg_for("http://127.0.0.1:9", drain_timeout_s=600.0)
    async with Describer(cfg, rig.bus, _NeverReady()) as d:
        await rig.feed(make_samples(20, tracks=(4,)))
        await wait_until(lambda: d.pending == 1)
        rig.bus.publish_nowait(TrackEvent("cam", 4, TrackEventKind.LOST, 20, 20 / FPS))
        # Nothing is left to wait for: drain answers True without using its timeout.
        assert await asyncio.wait_for(d.drain(600.0), SLACK_S)
        assert d.drop_reasons["track_lost"] == 1
