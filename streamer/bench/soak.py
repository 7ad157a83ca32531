"""``streamer bench soak --minutes M``: the live pipeline under scheduled faults.

Real parts only: two GStreamer RTSP cameras on loopback (the second serves a clip with
corrupt packets), a mosquitto broker reached through a TCP relay, and an HTTP server
speaking the Ollama API (in a child process, like the cameras and the broker, so that
the measured process is the analyzer's, the relay and the bookkeeping aside). On a
fixed schedule the soak injects, in turn: an RTSP server kill (restarted 2 s later), an
RTSP stall (SIGSTOP for 4 s), a broker restart, a network cut between the publisher and
the broker, an LLM outage (HTTP 500) and LLM garbage (answers that are not JSON). Each
fault is *recovered* when the affected part works again after the fault ends: a camera
delivers a new VA sample, the publisher has reconnected and published again, the LLM
describes a track again.

The JSON printed at the end:

* ``faults``: injected and recovered per kind, and per fault its recovery time;
* ``recover_s``: per camera (and for the broker and the LLM) time to recover, max and p95;
* ``va``: VA samples analysed (on the bus) and published to MQTT, with every
  difference accounted for by a counted reason (rate limit, superseded by a newer
  sample of the same track while offline, stale, overflow, invalid, taken for sending
  when the connection broke, bus drops);
  ``unexplained`` must be 0;
* ``nan_published``: VA payloads seen on the broker with a non-finite value (must be 0);
* ``rss_mb``: start (after the warm-up), end and slope (MiB per minute, least squares
  over the samples after the warm-up), and the mean of each minute;
  ``projection_24h_mb`` is the slope times a day;
* ``threads`` and ``fds``: at start (after warm-up) and at the end (still running), the
  bench's own apart (``bench_own``: the relay's and the broker watcher's sockets, and
  the asyncio default executor, a pool that grows on demand up to its fixed size);
  ``os_threads``: the native threads (FFmpeg decoding, inference), sampled with the
  RSS, as they come and go with the decoders;
* ``tracemalloc``: the Python allocation sites that grew most from the end of the warm-up
  to the last snapshot, the growth charged to the bench's own servers and bookkeeping
  (``bench``) apart from the analyzer's (``analyzer``), and one line per snapshot;
* ``verdict``: ``pass`` and each check against the long-run targets (RSS slope after the
  warm-up, threads and fds equal at start and end, native threads not above the most
  seen in the first half, no unexplained VA sample, every fault recovered, MQTT
  publishing again within 2 s of the broker's return).

``--no-faults`` runs the same parts without injecting anything: the memory baseline.
The RSS slope and the threads/fds "start" are taken after ``--warmup`` minutes (faults
run during the warm-up too, so every code path has allocated its caches by then).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import gc
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
from streamer.bench.memtrace import MemTrace
from streamer.bench.pymalloc import pymalloc_stats
from streamer.bus import EventBus
from streamer.compose import build_pipeline
from streamer.config import AppConfig, load_config
from streamer.describe.providers.ollama import OllamaConfig
from streamer.episodes.config import EpisodeRule, EpisodesConfig, MoodConfig, RuleCondition
from streamer.errors import ConfigError, MediaError
from streamer.lifecycle import cancel_and_wait
from streamer.messages import Description, VASample
from streamer.publish.config import HomeAssistantConfig, MqttConfig
from streamer.sources.config import BackoffConfig, CameraConfig
from streamer.testing.mqtt import MOSQUITTO, Broker, TcpProxy
from streamer.testing.net import free_port
from streamer.testing.ollama import FakeOllamaProcess
from streamer.testing.sources import RtspServer, corrupt_packets, gst_rtsp_unavailable, loop_clip

logger = logging.getLogger(__name__)

CAMERAS = ("soak0", "soak1")
PREFIX = "soak"
WARMUP_S = 8.0  # before the first fault
SETTLE_S = 15.0  # after the last fault: every recovery must fit in it
MIN_PERIOD_S = 5.0  # seconds from one fault's start to the next, at least
MAX_PERIOD_S = 15.0
RSS_SAMPLE_S = 2.0
RSS_KINDS = {"anon": "RssAnon", "file": "RssFile", "shmem": "RssShmem"}  # /proc/PID/status
PYMALLOC_EVERY = 5  # pymalloc's arenas are read with every 5th RSS sample
LLM_REQUESTS_KEPT = 50  # the fake LLM server's request log (its counts stay exact)
# Targets of a long run (issue 26): the verdict compares the figures with them.
TARGET_SLOPE_MB_PER_MIN = 0.05
TARGET_MQTT_RECOVER_S = 2.0
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
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="minutes before the RSS slope, threads and fds are measured "
        "(default: a fifth of the run, at most 5)",
    )
    p.add_argument("--no-faults", action="store_true", help="inject nothing: the baseline")
    p.add_argument(
        "--trace-frames",
        type=int,
        default=0,
        help="trace Python allocations with this many frames each (8 is a good start) and "
        "report the sites that grew; costs CPU and memory, so the verdict is not judged "
        "(default 0: off)",
    )
    p.add_argument(
        "--snapshot-every",
        type=float,
        default=None,
        help="minutes between tracemalloc snapshots (default: six over the measured part)",
    )
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
    # RSS (MiB) in all, by kind (RSS_KINDS) and the native threads, every RSS_SAMPLE_S
    memory: Series = dataclasses.field(
        default_factory=lambda: Series("rss", *RSS_KINDS, "native_threads")
    )
    # pymalloc's arenas, the bytes in use in them and the arenas' high-water mark (MiB)
    pymalloc: Series = dataclasses.field(
        default_factory=lambda: Series("arenas", "used", "highwater")
    )


class Series:
    """Samples over time in flat arrays of doubles, 8 bytes a value: the soak's own
    bookkeeping lives in the process it measures, and a list of tuples of float objects
    would grow it by ~10 times as much (and churn pymalloc's arenas)."""

    def __init__(self, *names: str) -> None:
        self.t = array.array("d")
        self.columns = {name: array.array("d") for name in names}

    def __len__(self) -> int:
        return len(self.t)

    def add(self, t: float, values: dict[str, float]) -> None:
        self.t.append(t)
        for name, column in self.columns.items():
            column.append(values[name])

    def since(self, t0: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The samples at or after ``t0`` seconds (all of them when none is): times and
        each column, as copies."""
        t = np.array(self.t)
        keep = t >= t0
        if not keep.any():
            keep[:] = True
        return t[keep], {name: np.array(c)[keep] for name, c in self.columns.items()}


class GcWatch:
    """CPython's full (generation 2) collections while installed, the periodic tidy's
    and CPython's own: when, how many objects of cyclic garbage each freed, how long
    each held the interpreter (:mod:`streamer.runtime.memory`)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.began = 0.0
        self.done = Series("freed", "ms")

    def install(self, t0: float) -> None:
        self.t0 = t0
        gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        now = time.monotonic()
        if phase == "start":
            self.began = now
        else:
            ms = (now - self.began) * 1000.0
            self.done.add(now - self.t0, {"freed": info["collected"], "ms": ms})

    def report(self, since: float) -> dict[str, float | int | None]:
        """The full collections after ``since`` seconds: how many, the objects they
        freed, the longest and the median pause."""
        t, columns = self.done.since(since)
        if not len(t) or t[0] < since:  # none in the measured part
            return {"full_collections": 0, "freed": 0, "max_ms": None, "median_ms": None}
        return {
            "full_collections": len(t),
            "freed": int(columns["freed"].sum()),
            "max_ms": round(float(columns["ms"].max()), 1),
            "median_ms": round(float(np.median(columns["ms"])), 2),
        }


def _statuses(*fields: str) -> dict[str, float]:
    """Fields of /proc/self/status (kB for the memory ones), read at once; NaN for one
    it lacks."""
    out = dict.fromkeys(fields, float("nan"))
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in out:
                out[name] = float(value.split()[0])
    return out


def _status(field: str) -> float:
    return _statuses(field)[field]


def _memory_sample() -> dict[str, float]:
    """The resident memory (MiB) in all (``rss``) and by kind: ``anon`` (the process's
    own: heaps, arenas, thread stacks, buffers: what a leak grows), ``file`` (pages of
    mapped files, mostly the shared libraries' code, faulted in as code paths are first
    run; the kernel can drop them), ``shmem``; and ``native_threads``, the process's
    threads that Python did not start (FFmpeg's, the inference runtime's)."""
    read = _statuses("VmRSS", "Threads", *RSS_KINDS.values())
    values = {k: read[field] / 1024.0 for k, field in RSS_KINDS.items()}
    values["rss"] = read["VmRSS"] / 1024.0
    values["native_threads"] = read["Threads"] - threading.active_count()
    return values


def _fd_kinds(bench_ports: tuple[set[int], set[int]]) -> dict[str, int]:
    """Open fds by kind; a TCP socket with a local or remote port of the bench's
    (:meth:`Soak.bench_ports`) is the bench's, not the analyzer's."""
    ports: dict[str, tuple[int, int]] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as fh:
            next(fh, None)
            for line in fh:
                cols = line.split()
                local, remote = (int(c.rsplit(":", 1)[1], 16) for c in cols[1:3])
                ports[cols[9]] = (local, remote)
    kinds: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            local, remote = ports.get(target[8:-1], (0, 0))
            mine = local in bench_ports[0] or remote in bench_ports[1]
            kind = "bench_socket" if mine else "socket"
        elif target.startswith(("pipe:", "anon_inode:")):
            kind = target.split(":")[0] + (":" + target.split(":")[1] if "anon" in target else "")
        else:
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def _counts(bench_ports: tuple[set[int], set[int]]) -> dict[str, Any]:
    """Threads and open fds of this process now, the bench's own apart.

    ``threads``: the analyzer's Python threads (not the asyncio default executor's
    pool, which grows up to its fixed size on demand);
    ``os_threads``: native threads (inference, decoding: every OS thread of the process
    that is not a Python thread); ``fds``: open fds but the bench's sockets.
    """
    names = [t.name for t in threading.enumerate()]
    pool = [n for n in names if n.startswith("asyncio_")]
    fds = _fd_kinds(bench_ports)
    return {
        "threads": len(names) - len(pool),
        "os_threads": int(_status("Threads")) - len(names),
        "fds": sum(n for k, n in fds.items() if k != "bench_socket"),
        "executor_threads": len(pool),
        "thread_names": sorted(n for n in names if n not in pool),
        "fd_kinds": fds,
    }


def _per_minute(t_s: np.ndarray, rss: np.ndarray) -> list[float]:
    """Mean RSS of each whole minute of the run (its shape: steps, a line, a plateau)."""
    minute = (t_s // 60).astype(int)
    return [round(float(rss[minute == m].mean()), 1) for m in np.unique(minute)]


def _slope_per_min(t_s: np.ndarray, values: np.ndarray) -> float | None:
    """Least-squares slope of ``values`` per minute (``t_s`` in seconds); None under 3."""
    return float(np.polyfit(t_s / 60.0, values, 1)[0]) if len(t_s) >= 3 else None


def _rounded(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _kinds_report(samples: Series, since: float) -> dict[str, dict[str, float | None]]:
    """Start, end and slope (MiB per minute, after ``since`` seconds) of each kind of
    resident memory (:func:`_memory_sample`)."""
    ts, columns = samples.since(since)
    out: dict[str, dict[str, float | None]] = {}
    for kind in RSS_KINDS:
        mb = columns[kind]
        out[kind] = {
            "start": round(float(mb[0]), 1) if len(mb) else None,
            "end": round(float(mb[-1]), 1) if len(mb) else None,
            "slope_mb_per_min": _rounded(_slope_per_min(ts, mb)),
        }
    return out


def _pymalloc_report(samples: Series, since: float) -> dict[str, float | None] | None:
    """pymalloc's arenas and the bytes in use in them (MiB) at the start (after
    ``since`` seconds) and the end, the arenas' slope (MiB per minute) and the most
    arenas ever held; None without pymalloc."""
    if not len(samples):
        return None
    ts, columns = samples.since(since)
    arenas, used = columns["arenas"], columns["used"]
    return {
        "arenas_start": round(float(arenas[0]), 1),
        "arenas_end": round(float(arenas[-1]), 1),
        "used_start": round(float(used[0]), 1),
        "used_end": round(float(used[-1]), 1),
        "arenas_highwater": round(float(columns["highwater"][-1]), 1),
        "arenas_slope_mb_per_min": _rounded(_slope_per_min(ts, arenas)),
    }


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

    def __init__(
        self,
        cfg: AppConfig,
        clip: Path,
        minutes: float,
        workdir: Path,
        *,
        warmup_min: float | None = None,
        faults: bool = True,
        trace_frames: int = 0,
        snapshot_every_min: float | None = None,
    ) -> None:
        self.total_s = minutes * 60.0
        default_s = max(WARMUP_S, min(300.0, self.total_s / 5.0))
        self.warmup_s = default_s if warmup_min is None else 60.0 * warmup_min
        if not 0.0 <= self.warmup_s <= self.total_s - SETTLE_S:
            raise ConfigError(f"--warmup must leave at least {SETTLE_S:.0f} s of the run")
        measured_s = self.total_s - self.warmup_s
        self.snapshot_s = (
            measured_s / 6.0 if snapshot_every_min is None else 60.0 * snapshot_every_min
        )
        if self.snapshot_s <= 0:
            raise ConfigError("--snapshot-every must be positive")
        self.with_faults = faults
        self.memtrace = MemTrace(trace_frames, workdir)
        self.gc_watch = GcWatch()
        self._in_flight = 0  # injections not yet recovered (or given up)
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
        self.llm = FakeOllamaProcess("happy", keep=LLM_REQUESTS_KEPT)
        self.cfg = cfg
        self.observed = Observed()
        self.faults: list[Fault] = []
        self.publisher: Any = None

    def bench_ports(self) -> tuple[set[int], set[int]]:
        """Sockets of the bench, by (local, remote) port: the relay's accepted sockets
        and the bench's own connections to the broker (the relay's upstream, the
        watcher)."""
        return {self.proxy.port}, {self.broker.port}

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
        update: dict[str, Any] = {"cameras": cams, "llm": llm, "mqtt": None}
        # Per-track state everywhere: an episode rule the clip's crying part meets, and
        # the room mood (unless the given config has its own).
        if self.cfg.episodes is None:
            rule = EpisodeRule(
                name="sad", when=RuleCondition(valence_below=-0.1), for_s=1.0, clear_after_s=1.0
            )
            update["episodes"] = EpisodesConfig(rules=[rule])
        if self.cfg.mood is None:
            update["mood"] = MoodConfig(interval_s=2.0)
        return self.cfg.model_copy(update=update)

    def mqtt_config(self, port: int, discovery: bool = False) -> MqttConfig:
        return MqttConfig(
            port=port,
            prefix=PREFIX,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
            keepalive_s=5,
            homeassistant=HomeAssistantConfig(enabled=discovery),
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
        n = 0
        while True:
            t = time.monotonic() - t0
            self.observed.memory.add(t, _memory_sample())
            stats = pymalloc_stats() if n % PYMALLOC_EVERY == 0 else None
            if stats is not None:
                mib = float(1 << 20)
                self.observed.pymalloc.add(
                    t,
                    {
                        "arenas": stats["arena_bytes"] / mib,
                        "used": stats["used_bytes"] / mib,
                        "highwater": stats["arenas_highwater"] * stats["arena_size"] / mib,
                    },
                )
            n += 1
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
        self._in_flight += 1
        try:
            await self._inject(kind, cam, hold_s, t0)
        finally:
            self._in_flight -= 1

    async def _inject(self, kind: str, cam: int | None, hold_s: float, t0: float) -> None:
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
        await asyncio.to_thread(self.llm.set_mode, mode)

        async def heal() -> None:
            await asyncio.to_thread(self.llm.set_mode, "happy")

        return heal

    async def schedule(self, t0: float) -> None:
        if not self.with_faults:
            return
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
        try:
            return await self._run()
        finally:
            self.gc_watch.remove()  # also when the publisher or the run failed to start

    async def _run(self) -> dict[str, Any]:
        from streamer.publish.mqtt import MqttPublisher
        from streamer.runtime.live import run_live
        from streamer.store import default_store

        cfg = self.app_config()
        pipe = build_pipeline(cfg, default_store(), bus=EventBus(lossless_wait_s=2.0))
        publisher = MqttPublisher(
            self.mqtt_config(self.proxy.port, discovery=True),
            pipe.bus,
            list(CAMERAS),
            rules=[r.name for r in cfg.episodes.rules] if cfg.episodes else [],
            mood=cfg.mood is not None and cfg.mood.enabled,
        )
        self.publisher = publisher
        stop = asyncio.Event()
        await self.proxy.start()
        t0 = time.monotonic()
        start: dict[str, Any] = {}
        end: dict[str, Any] = {}
        self.gc_watch.install(t0)
        async with publisher:
            bus_watch = asyncio.create_task(self.watch_bus(pipe.bus), name="soak-bus")
            broker_watch = asyncio.create_task(self.watch_broker(), name="soak-broker")
            live = asyncio.create_task(
                run_live(cfg, pipeline=pipe, stop=stop, handle_signals=False), name="soak-live"
            )

            async def quiet(limit_s: float) -> None:
                """Until no fault is in flight (or its recovery being waited for)."""
                await self._wait_for(lambda: self._in_flight == 0, limit_s)

            async def begin() -> None:
                """The start figures and the baseline snapshot, after the warm-up."""
                await asyncio.sleep(max(0.0, self.warmup_s - (time.monotonic() - t0)))
                await quiet(min(SETTLE_S, self.warmup_s))
                start.update(_counts(self.bench_ports()))
                start["t_s"] = round(time.monotonic() - t0, 1)
                await self.memtrace.baseline()

            async def snapshots(began: asyncio.Task[None]) -> None:
                await began
                while True:
                    await asyncio.sleep(self.snapshot_s)
                    await self.memtrace.sample((time.monotonic() - t0) / 60.0)

            async def measure() -> None:
                await asyncio.sleep(WARMUP_S)
                sampler = asyncio.create_task(self.sample_rss(t0))
                began = asyncio.create_task(begin())
                tracer = asyncio.create_task(snapshots(began))
                await self.schedule(t0)
                left = self.total_s - (time.monotonic() - t0)
                await asyncio.sleep(max(0.0, left))
                await began  # a short run's baseline may still be on its way
                await cancel_and_wait(sampler, tracer)
                await quiet(2 * SETTLE_S)
                self.observed.memory.add(time.monotonic() - t0, _memory_sample())
                end.update(_counts(self.bench_ports()))
                end["gc_frozen"] = gc.get_freeze_count()
                await self.memtrace.sample((time.monotonic() - t0) / 60.0)

            try:
                await measure()
            finally:
                stop.set()
                result = await live
                self.gc_watch.remove()
                await cancel_and_wait(bus_watch)
                self.memtrace.stop()
        # The publisher flushed on exit; the broker watcher may still be receiving.
        await asyncio.sleep(1.0)
        await cancel_and_wait(broker_watch)
        await self.proxy.cut()
        return self.report(result, start, end, time.monotonic() - t0)

    def report(
        self, result: Any, start: dict[str, Any], end: dict[str, Any], wall_s: float
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
            "send_failed_at_disconnect": stats.dropped["va_send_failed"],
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
        since = start.get("t_s", self.warmup_s)
        ts, measured = obs.memory.since(since)
        all_t, every = obs.memory.since(float("-inf"))
        mb = measured["rss"]
        slope = _slope_per_min(ts, mb)
        mqtt_max = recover["mqtt"]["max"]
        # Native threads (FFmpeg decoding, inference) come and go with the decoders: a
        # leak grows past the most seen in the first half of the measured part.
        native = [int(n) for n in measured["native_threads"]]
        half = native[: max(1, len(native) // 2)]
        native_ok = not native or end.get("os_threads", 0) <= max(half)
        checks = {
            "rss_slope_below_0.05_mb_per_min": slope is not None
            and slope < TARGET_SLOPE_MB_PER_MIN,
            "threads_equal": start.get("threads") == end.get("threads"),
            "native_threads_bounded": native_ok,
            "fds_equal": start.get("fds") == end.get("fds"),
            "va_unexplained_0": unexplained == 0,
            "faults_all_recovered": all(f.recover_s is not None for f in self.faults),
            "mqtt_publishing_within_2s": mqtt_max is None or mqtt_max <= TARGET_MQTT_RECOVER_S,
        }
        return {
            "bench": "soak",
            "minutes": round(wall_s / 60.0, 2),
            "warmup_minutes": round(since / 60.0, 2),
            "faults_injected": self.with_faults,
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
                "first": round(obs.memory.columns["rss"][0], 1) if len(obs.memory) else None,
                "end": round(float(mb[-1]), 1) if len(mb) else None,
                "max": round(float(mb.max()), 1) if len(mb) else None,
                "slope_mb_per_min": None if slope is None else round(slope, 3),
                "samples": len(mb),
                "per_minute": _per_minute(all_t, every["rss"]),
                "by_kind": _kinds_report(obs.memory, since),
                "pymalloc": _pymalloc_report(obs.pymalloc, since),
            },
            "threads": {
                "start": start.get("threads"),
                "end": end.get("threads"),
                "names_start": start.get("thread_names"),
                "names_end": end.get("thread_names"),
            },
            "os_threads": {
                "start": start.get("os_threads"),
                "end": end.get("os_threads"),
                "min": min(native, default=None),
                "max_first_half": max(half, default=None),
                "max": max(native, default=None),
            },
            "fds": {"start": start.get("fds"), "end": end.get("fds")}
            | {"kinds_start": start.get("fd_kinds"), "kinds_end": end.get("fd_kinds")},
            "bench_own": {
                k: {"start": start.get(k), "end": end.get(k)} for k in ("executor_threads",)
            },
            "projection_24h_mb": None if slope is None else round(slope * 60 * 24, 1),
            "tracemalloc": self.memtrace.report(),
            "gc": self.gc_watch.report(since) | {"frozen_at_end": end.get("gc_frozen")},
            # Tracing's own memory and CPU distort RSS: a traced run finds sites, and an
            # untraced one judges.
            "verdict": {
                "pass": None if self.memtrace.enabled else all(checks.values()),
                "checks": checks,
            },
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


def run_soak(cfg: AppConfig, clip: Path, minutes: float, **options: Any) -> dict[str, Any]:
    """Run one soak (blocking) and return its JSON-ready report; ``options`` are
    :class:`Soak`'s keyword arguments."""
    with (
        tempfile.TemporaryDirectory(prefix="streamer-soak-") as tmp,
        Soak(cfg, clip, minutes, Path(tmp), **options) as soak,
    ):
        soak.memtrace.start()
        try:
            return asyncio.run(soak.run())
        finally:
            soak.memtrace.stop()


def cmd_bench_soak(args: argparse.Namespace) -> int:
    if not 0.25 <= args.minutes <= 24 * 60:
        raise ConfigError("--minutes must be between 0.25 and 1440")
    reason = gst_rtsp_unavailable()
    if reason:
        raise MediaError(f"bench soak needs the GStreamer RTSP server: {reason}")
    if MOSQUITTO is None:
        raise MediaError("bench soak needs the mosquitto broker (Debian package 'mosquitto')")
    cfg = load_config(args.config) if args.config else AppConfig()
    if args.trace_frames < 0:
        raise ConfigError("--trace-frames must be 0 (off) or more")
    result = run_soak(
        cfg,
        resolve_media(args.clip),
        args.minutes,
        warmup_min=args.warmup,
        faults=not args.no_faults,
        trace_frames=args.trace_frames,
        snapshot_every_min=args.snapshot_every,
    )
    verdict = result["verdict"]
    failed = [name for name, ok in verdict["checks"].items() if not ok]
    if verdict["pass"] is None:
        logger.info("soak verdict: not judged (allocation tracing distorts RSS)")
    else:
        word = "PASS" if verdict["pass"] else "FAIL: " + ", ".join(failed)
        logger.info("soak verdict: %s", word)
    return emit(result)
