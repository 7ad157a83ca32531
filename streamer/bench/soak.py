"""``streamer bench soak --minutes M``: the live pipeline under scheduled faults.

Real parts only: two GStreamer RTSP cameras on loopback (the second serves a clip with
corrupt packets), a mosquitto broker reached through a TCP relay, and an HTTP server
speaking the Ollama API. On a fixed schedule the soak injects, in turn: an RTSP server
kill (restarted 2 s later), an RTSP stall (SIGSTOP for 4 s), a broker restart, a
network cut between the publisher and the broker, an LLM outage (HTTP 500) and LLM
garbage (answers that are not JSON). Each fault is *recovered* when the affected part
works again after the fault ends: a camera delivers a new VA sample, the publisher has
reconnected and published again, the LLM describes a track again.

The JSON printed at the end:

* ``faults``: injected and recovered per kind, and per fault its recovery time;
* ``recover_s``: per camera (and for the broker and the LLM) time to recover, max and p95;
* ``va``: VA samples analysed (on the bus) and published to MQTT, with every
  difference accounted for by a counted reason (rate limit, superseded by a newer
  sample of the same track while offline, stale, overflow, invalid, bus drops);
  ``unexplained`` must be 0;
* ``nan_published``: VA payloads seen on the broker with a non-finite value (must be 0);
* ``rss_mb``: start, end and slope (MiB per minute, least squares over the samples);
* ``threads`` and ``fds``: at start (after warm-up) and at the end (still running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bench.harness import emit, resolve_media
from streamer.bus import EventBus
from streamer.compose import build_pipeline
from streamer.config import AppConfig, load_config
from streamer.describe.providers.ollama import OllamaConfig
from streamer.errors import ConfigError, MediaError
from streamer.lifecycle import cancel_and_wait
from streamer.messages import Description, VASample
from streamer.publish.config import MqttConfig
from streamer.sources.config import BackoffConfig, CameraConfig
from streamer.testing.mqtt import MOSQUITTO, Broker, TcpProxy
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllama
from streamer.testing.sources import RtspServer, corrupt_packets, gst_rtsp_unavailable, loop_clip

logger = logging.getLogger(__name__)

CAMERAS = ("soak0", "soak1")
PREFIX = "soak"
WARMUP_S = 8.0  # before the first fault
SETTLE_S = 15.0  # after the last fault: every recovery must fit in it
MIN_PERIOD_S = 5.0  # seconds from one fault's start to the next, at least
MAX_PERIOD_S = 15.0
RSS_SAMPLE_S = 2.0
CORRUPT_EVERY = 97  # one corrupt packet in this many on the second camera
POLL_S = 0.05

# (kind, camera index or None, seconds the fault lasts)
SCHEDULE: tuple[tuple[str, int | None, float], ...] = (
    ("rtsp_kill", 0, 2.0),
    ("llm_outage", None, 4.0),
    ("rtsp_stall", 1, 4.0),
    ("broker_restart", None, 2.0),
    ("rtsp_kill", 1, 2.0),
    ("network_cut", None, 3.0),
    ("rtsp_stall", 0, 4.0),
    ("llm_garbage", None, 4.0),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "soak",
        help="live pipeline over two RTSP cameras, MQTT and an LLM under scheduled faults",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    p.add_argument("--clip", default="single_face.mp4", help="clip served by both cameras")
    p.add_argument("--config", type=Path, help="YAML config (cameras, mqtt and llm are replaced)")
    p.set_defaults(func=cmd_bench_soak)


@dataclasses.dataclass
class Fault:
    kind: str
    target: str
    start_s: float
    restored_s: float | None = None
    recover_s: float | None = None


@dataclasses.dataclass
class Observed:
    """What the soak saw on the bus and on the broker."""

    va_analysed: int = 0
    va_nonfinite_analysed: int = 0
    last_va: dict[str, float] = dataclasses.field(default_factory=dict)  # camera -> monotonic
    llm_descriptions: int = 0
    last_llm: float = float("-inf")
    mqtt_va_seen: int = 0
    nan_published: int = 0
    rss: list[tuple[float, float]] = dataclasses.field(default_factory=list)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _finite_va(payload: bytes) -> bool:
    bad: list[str] = []

    def constant(name: str) -> float:
        bad.append(name)
        return float("nan")

    rec = json.loads(payload, parse_constant=constant)
    values = [rec.get("valence"), rec.get("arousal")]
    return not bad and all(isinstance(v, int | float) and math.isfinite(v) for v in values)


class Soak:
    """The parts, the fault schedule and the measurements of one soak run."""

    def __init__(self, cfg: AppConfig, clip: Path, minutes: float, workdir: Path) -> None:
        self.total_s = minutes * 60.0
        self.workdir = workdir
        served = loop_clip(clip, workdir / "served.mp4", self.total_s + 60.0)
        damaged = workdir / "damaged.mp4"
        damaged.write_bytes(served.read_bytes())
        import av

        with av.open(str(damaged)) as src:
            n_packets = sum(1 for p in src.demux(video=0) if p.size)
        self.corrupt_indices = list(range(CORRUPT_EVERY // 2, n_packets, CORRUPT_EVERY))
        corrupt_packets(damaged, self.corrupt_indices, seed=13)
        self.servers = [RtspServer(served), RtspServer(damaged)]
        self.broker = Broker(workdir, free_port())
        self.proxy = TcpProxy(free_port(), self.broker.port)
        self.llm = FakeOllama("happy")
        self.cfg = cfg
        self.observed = Observed()
        self.faults: list[Fault] = []
        self.publisher: Any = None

    def app_config(self) -> AppConfig:
        backoff = BackoffConfig(initial_s=0.2, max_s=2.0, healthy_after_s=5.0)
        cams = [
            CameraConfig(
                name=name,
                url=srv.url,
                open_timeout_s=3.0,
                stall_timeout_s=2.0,
                backoff=backoff,
            )
            for name, srv in zip(CAMERAS, self.servers, strict=True)
        ]
        llm = OllamaConfig(
            host=self.llm.url,
            timeout_s=3.0,
            interval_s=2.0,
            min_gap_s=1.0,
            warmup_s=0.5,
            reconnect_interval_s=0.5,
            reconnect_max_s=2.0,
        )
        return self.cfg.model_copy(update={"cameras": cams, "llm": llm, "mqtt": None})

    def mqtt_config(self, port: int) -> MqttConfig:
        return MqttConfig(
            port=port, prefix=PREFIX, reconnect_min_s=0.2, reconnect_max_s=1.0, keepalive_s=5
        )

    # ------------------------------------------------------------------ observers

    async def watch_bus(self, bus: EventBus) -> None:
        sub = bus.subscribe(
            "soak", maxsize=100_000, accept=lambda m: isinstance(m, VASample | Description)
        )
        async for msg in sub:
            now = time.monotonic()
            if isinstance(msg, VASample):
                self.observed.va_analysed += 1
                if not (math.isfinite(msg.valence) and math.isfinite(msg.arousal)):
                    self.observed.va_nonfinite_analysed += 1
                self.observed.last_va[msg.camera] = now
            elif isinstance(msg, Description) and msg.source == "llm":
                self.observed.llm_descriptions += 1
                self.observed.last_llm = now

    async def watch_broker(self) -> None:
        from streamer.publish.subscriber import mqtt_messages

        cfg = self.mqtt_config(self.broker.port)
        async with contextlib.aclosing(mqtt_messages(cfg, [f"{PREFIX}/+/faces/+/va"])) as msgs:
            async for _, payload in msgs:
                self.observed.mqtt_va_seen += 1
                try:  # an oversize payload (only its size kept) is no VA the soak sent
                    ok = isinstance(payload, bytes) and _finite_va(payload)
                except ValueError:
                    ok = False
                if not ok:
                    self.observed.nan_published += 1

    async def sample_rss(self, t0: float) -> None:
        while True:
            self.observed.rss.append((time.monotonic() - t0, _rss_mb()))
            await asyncio.sleep(RSS_SAMPLE_S)

    # ------------------------------------------------------------------ faults

    async def _wait_for(self, ok: Callable[[], bool], limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while not ok():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def inject(self, kind: str, cam: int | None, hold_s: float, t0: float) -> None:
        target = CAMERAS[cam] if cam is not None else ("llm" if kind.startswith("llm") else "mqtt")
        fault = Fault(kind, target, round(time.monotonic() - t0, 1))
        self.faults.append(fault)
        logger.info("soak: %s on %s for %.0f s", kind, target, hold_s)
        undo = await self._start_fault(kind, cam)
        await asyncio.sleep(hold_s)
        connections = self.publisher.stats.connections
        published = sum(self.publisher.stats.published.values())
        await undo()
        restored = time.monotonic()
        fault.restored_s = round(restored - t0, 1)
        if cam is not None:
            name = CAMERAS[cam]

            def ok() -> bool:
                return self.observed.last_va.get(name, float("-inf")) > restored

        elif target == "llm":

            def ok() -> bool:
                return self.observed.last_llm > restored

        else:

            def ok() -> bool:
                stats = self.publisher.stats
                return bool(
                    stats.connected
                    and stats.connections > connections
                    and sum(stats.published.values()) > published
                )

        if await self._wait_for(ok, SETTLE_S):
            fault.recover_s = round(time.monotonic() - restored, 2)

    async def _start_fault(self, kind: str, cam: int | None) -> Callable[[], Awaitable[None]]:
        if kind == "rtsp_kill":
            assert cam is not None
            server = self.servers[cam]
            await asyncio.to_thread(server.kill)

            async def restart() -> None:
                await asyncio.to_thread(server.start)

            return restart
        if kind == "rtsp_stall":
            assert cam is not None
            server = self.servers[cam]
            server.pause()

            async def resume() -> None:
                server.resume()

            return resume
        if kind == "broker_restart":
            await asyncio.to_thread(self.broker.stop)
            return lambda: asyncio.to_thread(self.broker.start)
        if kind == "network_cut":
            await self.proxy.cut()
            return self.proxy.start
        mode = "error500" if kind == "llm_outage" else "garbage"
        self.llm.mode = mode

        async def heal() -> None:
            self.llm.mode = "happy"

        return heal

    async def schedule(self, t0: float) -> None:
        window = self.total_s - WARMUP_S - SETTLE_S
        period = min(MAX_PERIOD_S, max(MIN_PERIOD_S, window / len(SCHEDULE)))
        injections: list[asyncio.Task[None]] = []
        i = 0
        while time.monotonic() - t0 + period <= self.total_s - SETTLE_S + 1e-6 or i == 0:
            kind, cam, hold = SCHEDULE[i % len(SCHEDULE)]
            started = time.monotonic()
            injections.append(asyncio.create_task(self.inject(kind, cam, hold, t0)))
            i += 1
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))
        await asyncio.gather(*injections)

    # ------------------------------------------------------------------ run

    async def run(self) -> dict[str, Any]:
        from streamer.publish.mqtt import MqttPublisher
        from streamer.runtime.live import run_live
        from streamer.store import default_store

        cfg = self.app_config()
        pipe = build_pipeline(cfg, default_store(), bus=EventBus(lossless_wait_s=2.0))
        publisher = MqttPublisher(self.mqtt_config(self.proxy.port), pipe.bus, list(CAMERAS))
        self.publisher = publisher
        stop = asyncio.Event()
        await self.proxy.start()
        t0 = time.monotonic()
        start: dict[str, float] = {}
        end: dict[str, float] = {}
        async with publisher:
            bus_watch = asyncio.create_task(self.watch_bus(pipe.bus), name="soak-bus")
            broker_watch = asyncio.create_task(self.watch_broker(), name="soak-broker")
            live = asyncio.create_task(
                run_live(cfg, pipeline=pipe, stop=stop, handle_signals=False), name="soak-live"
            )

            async def measure() -> None:
                await asyncio.sleep(WARMUP_S)
                start.update(threads=threading.active_count(), fds=_fds())
                sampler = asyncio.create_task(self.sample_rss(t0))
                await self.schedule(t0)
                left = self.total_s - (time.monotonic() - t0)
                await asyncio.sleep(max(0.0, left))
                sampler.cancel()
                self.observed.rss.append((time.monotonic() - t0, _rss_mb()))
                end.update(threads=threading.active_count(), fds=_fds())

            try:
                await measure()
            finally:
                stop.set()
                result = await live
                await cancel_and_wait(bus_watch)
        # The publisher flushed on exit; the broker watcher may still be receiving.
        await asyncio.sleep(1.0)
        await cancel_and_wait(broker_watch)
        await self.proxy.cut()
        return self.report(result, start, end, time.monotonic() - t0)

    def report(
        self, result: Any, start: dict[str, float], end: dict[str, float], wall_s: float
    ) -> dict[str, Any]:
        stats = self.publisher.stats
        obs = self.observed
        published = stats.published["va"]
        accounted = {
            "rate_limited": stats.throttled,
            "superseded_while_offline": stats.superseded,
            "stale": stats.dropped["va_stale"],
            "overflow": stats.dropped["va_overflow"],
            "invalid": stats.dropped["invalid"],
            "bus_drops_any_kind": stats.dropped["bus"],
        }
        gap = obs.va_analysed - published - sum(accounted.values())
        # Bus drops are counted over every kind, so they bound (not equal) VA losses.
        unexplained = 0 if -stats.dropped["bus"] <= gap <= 0 else gap
        by_kind: dict[str, dict[str, int]] = {}
        for f in self.faults:
            row = by_kind.setdefault(f.kind, {"injected": 0, "recovered": 0})
            row["injected"] += 1
            row["recovered"] += f.recover_s is not None
        recover: dict[str, dict[str, Any]] = {}
        for target in (*CAMERAS, "mqtt", "llm"):
            times = [
                f.recover_s for f in self.faults if f.target == target and f.recover_s is not None
            ]
            recover[target] = {"n": len(times), "max": max(times, default=None)}
            recover[target]["p95"] = _pct(times, 95)
        ts = np.array([t for t, _ in obs.rss])
        mb = np.array([m for _, m in obs.rss])
        slope = float(np.polyfit(ts / 60.0, mb, 1)[0]) if len(ts) >= 3 else None
        return {
            "bench": "soak",
            "minutes": round(wall_s / 60.0, 2),
            "model": self.cfg.affect.model,
            "cameras": list(CAMERAS),
            "faults": {
                "injected": len(self.faults),
                "recovered": sum(f.recover_s is not None for f in self.faults),
                "by_kind": by_kind,
                "log": [dataclasses.asdict(f) for f in self.faults],
            },
            "corrupt_packets": {
                "served_per_loop": len(self.corrupt_indices),
                "detected": {n: s.corrupt for n, s in result.sources.items()},
            },
            "recover_s": recover,
            "sources": {
                n: {"frames": s.frames, "reconnects": s.reconnects, "stalls": s.stalls}
                for n, s in result.sources.items()
            },
            "frames_analysed": {n: c.frames for n, c in result.cameras.items()},
            "va": {
                "analysed": obs.va_analysed,
                "published": published,
                "accounted": accounted,
                "gap": gap,
                "unexplained": unexplained,
                "seen_on_broker": obs.mqtt_va_seen,
                "nonfinite_analysed": obs.va_nonfinite_analysed,
            },
            "nan_published": obs.nan_published,
            "llm": {
                "descriptions": obs.llm_descriptions,
                "requests": self.llm.count("/api/chat"),
            },
            "rss_mb": {
                "start": round(float(mb[0]), 1) if len(mb) else None,
                "end": round(float(mb[-1]), 1) if len(mb) else None,
                "max": round(float(mb.max()), 1) if len(mb) else None,
                "slope_mb_per_min": None if slope is None else round(slope, 3),
                "samples": len(mb),
            },
            "threads": {"start": start.get("threads"), "end": end.get("threads")},
            "fds": {"start": start.get("fds"), "end": end.get("fds")},
            "analysis_restarts": {n: h.failures + h.hangs for n, h in result.analysis.items()},
        }

    def __enter__(self) -> Soak:
        self.broker.start()
        self.llm.start()
        for srv in self.servers:
            srv.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for srv in self.servers:
            srv.stop()
        self.broker.stop()
        self.llm.stop()


def run_soak(cfg: AppConfig, clip: Path, minutes: float) -> dict[str, Any]:
    """Run one soak (blocking) and return its JSON-ready report."""
    with (
        tempfile.TemporaryDirectory(prefix="streamer-soak-") as tmp,
        Soak(cfg, clip, minutes, Path(tmp)) as soak,
    ):
        return asyncio.run(soak.run())


def cmd_bench_soak(args: argparse.Namespace) -> int:
    if not 0.25 <= args.minutes <= 24 * 60:
        raise ConfigError("--minutes must be between 0.25 and 1440")
    reason = gst_rtsp_unavailable()
    if reason:
        raise MediaError(f"bench soak needs the GStreamer RTSP server: {reason}")
    if MOSQUITTO is None:
        raise MediaError("bench soak needs the mosquitto broker (Debian package 'mosquitto')")
    cfg = load_config(args.config) if args.config else AppConfig()
    result = run_soak(cfg, resolve_media(args.clip), args.minutes)
    return emit(result)
