"""``streamer bench cluster``: the cost of running the cameras on Ray, on this machine.

The same cameras (real RTSP servers on loopback serving a face clip) are analysed three
ways, each publishing to a real mosquitto: in a single process (``streamer run``'s
pipeline), on a one-node local Ray cluster, and on a two-node local Ray cluster (head
plus one worker, cameras spread). Reported as JSON per mode: frames analysed per
second, latency (frame decode to VA on the bus, and VA to its arrival at an MQTT
subscriber; p95 each), and resident memory per node.

Every node here shares the same CPU cores, so this measures what the engine costs
(memory, latency), not a speed-up from more hardware: ``overhead`` gives the ratios. A
gain in frames per second over the single process, when the cameras saturate it, comes
from running each camera in its own process (no shared interpreter lock), which one
machine could also have without Ray; more hardware needs nodes on separate machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bench.harness import emit, percentiles_ms, resolve_media, rss_mb
from streamer.config import AppConfig, load_config
from streamer.errors import ConfigError, MediaError
from streamer.publish.config import MqttConfig
from streamer.sources.config import CameraConfig
from streamer.testing.mqtt import MOSQUITTO, Broker
from streamer.testing.net import free_port
from streamer.testing.sources import RtspServer, gst_rtsp_unavailable, loop_clip

logger = logging.getLogger(__name__)

PREFIX = "bench"
NAMESPACE = "streamer-bench"
SAMPLE_EVERY_S = 1.0  # how often frames and memory are sampled (s)
NODE_CPUS = 4  # logical CPUs of each local node (camera actors ask for 1)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cluster",
        help="single process vs one-node vs two-node local Ray cluster (overhead, JSON)",
    )
    p.add_argument("--clip", default="single_face.mp4", help="H.264 MP4 or store media name")
    p.add_argument("--cameras", type=int, default=2, help="RTSP cameras (default 2)")
    p.add_argument("--duration-s", type=float, default=30.0, help="measured run per mode")
    p.add_argument("--warmup-s", type=float, default=10.0, help="excluded from the figures")
    p.add_argument("--config", type=Path, help="YAML config (cameras, mqtt, cluster ignored)")
    p.set_defaults(func=cmd_bench_cluster)


class MqttLatency:
    """Subscribes to every VA topic; latency = arrival - the payload's wall_time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[float] = []
        self.measuring = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bench-mqtt", daemon=True)

    def __enter__(self) -> MqttLatency:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _main(self) -> None:
        asyncio.run(self._read())

    async def _read(self) -> None:
        from streamer.publish.connect import Client, connection

        client = Client("127.0.0.1", self.port, identifier="bench-latency")
        async with connection(client):
            await client.subscribe(f"{PREFIX}/+/faces/+/va", qos=0)
            reader = asyncio.ensure_future(self._consume(client))
            await asyncio.to_thread(self._stop.wait)
            reader.cancel()

    async def _consume(self, client: Any) -> None:
        async for msg in client.messages:
            now = time.time()
            if self.measuring and isinstance(msg.payload, bytes):
                self.samples.append(now - float(json.loads(msg.payload)["wall_time"]))


def _proc_tree_rss_mb(roots: list[int]) -> float:
    """Resident memory of ``roots`` and all their descendants (Linux /proc), MiB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return round(total, 1)


def _summary(
    mode: str,
    frames: list[tuple[float, int]],
    lat: MqttLatency,
    pipe_p95: list[float],
    mem: dict[str, float],
) -> dict[str, Any]:
    (t0, f0), (t1, f1) = frames[0], frames[-1]
    mqtt = percentiles_ms(lat.samples)
    decode = round(float(np.median(pipe_p95)), 2) if pipe_p95 else None
    return {
        "mode": mode,
        "frames_analysed_per_s": round((f1 - f0) / (t1 - t0), 2) if t1 > t0 else None,
        "latency_ms": {
            "decode_to_va_p95": decode,
            "va_to_mqtt_p95": mqtt["p95"],
            "frame_to_mqtt_p95_est": round(decode + mqtt["p95"], 2)
            if decode is not None and mqtt["p95"] is not None
            else None,
            "va_messages": mqtt["n"],
        },
        "memory_mb_per_node": mem,
    }


def _measure(
    sample: Any, lat: MqttLatency, warmup_s: float, duration_s: float
) -> tuple[list[tuple[float, int]], list[float], dict[str, list[float]]]:
    """Warm up, then sample (frames, latency p95s, memory per node) for ``duration_s``."""
    time.sleep(warmup_s)
    lat.measuring = True
    frames: list[tuple[float, int]] = []
    p95s: list[float] = []
    mem: dict[str, list[float]] = {}
    end = time.monotonic() + duration_s
    while True:
        n, p95, node_mem = sample()
        frames.append((time.monotonic(), n))
        p95s.extend(p95)
        for node, mb in node_mem.items():
            mem.setdefault(node, []).append(mb)
        if time.monotonic() >= end:
            break
        time.sleep(SAMPLE_EVERY_S)
    lat.measuring = False
    return frames, p95s, mem


def bench_single(
    cfg: AppConfig, lat: MqttLatency, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """The cameras in this process (``streamer run``'s pipeline)."""
    from streamer.bus import EventBus
    from streamer.compose import build_pipeline
    from streamer.runtime.live import run_until_stopped
    from streamer.store import default_store

    pipe = build_pipeline(cfg, default_store(), bus=EventBus())

    def sample() -> tuple[int, list[float], dict[str, float]]:
        stats = list(pipe.stats.values())
        p95 = [
            float(np.percentile(list(s.latencies_s)[-1000:], 95)) * 1000.0
            for s in stats
            if s.latencies_s
        ]
        return sum(s.frames for s in stats), p95, {"process": round(rss_mb(), 1)}

    result: dict[str, Any] = {}

    def measure() -> None:
        frames, p95s, mem = _measure(sample, lat, warmup_s, duration_s)
        result.update(
            _summary("single-process", frames, lat, p95s, {k: max(v) for k, v in mem.items()})
        )

    t = threading.Thread(target=measure, daemon=True)
    t.start()
    run_until_stopped(
        cfg, pipeline=pipe, duration_s=warmup_s + duration_s + 5, handle_signals=False
    )
    t.join(10)
    return result


@contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0 if workers else NODE_CPUS, "include_dashboard": False},
    )
    for _ in range(workers):
        cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


def bench_cluster_mode(
    cfg: AppConfig, workers: int, lat: MqttLatency, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """The cameras as actors on a local cluster: head only, or head plus workers."""
    import ray

    from streamer.cluster.actor import actor_name
    from streamer.cluster.driver import run_cluster

    mode = "one-node-cluster" if workers == 0 else f"{workers + 1}-node-cluster"
    with local_cluster(workers) as cluster:
        nodes = [cluster.head_node, *cluster.worker_nodes]
        stop = threading.Event()
        driver = threading.Thread(
            target=run_cluster, args=(cfg,), kwargs={"stop": stop}, name="bench-driver"
        )
        driver.start()
        names = [c.name for c in cfg.cameras]

        def sample() -> tuple[int, list[float], dict[str, float]]:
            frames, p95 = 0, list[float]()
            for name in names:
                try:
                    actor = ray.get_actor(actor_name(name), namespace=NAMESPACE)
                    st: Any = ray.get(actor.status.remote(), timeout=5)
                except Exception:  # not started yet
                    continue
                frames += st.frames
                if st.decode_to_va_p95_ms is not None:
                    p95.append(st.decode_to_va_p95_ms)
            mem = {
                ("head" if i == 0 else f"worker{i}"): _proc_tree_rss_mb(
                    [p.pid for _, p in node.live_processes()]
                )
                for i, node in enumerate(nodes)
            }
            return frames, p95, mem

        # The cameras start (models load in every actor) before the warm-up counts.
        deadline = time.monotonic() + 180.0
        while sample()[0] == 0 and time.monotonic() < deadline:
            time.sleep(1.0)
        try:
            frames, p95s, mem = _measure(sample, lat, warmup_s, duration_s)
        finally:
            stop.set()
            driver.join(60)
    return _summary(mode, frames, lat, p95s, {k: max(v) for k, v in mem.items()})


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


@contextmanager
def _servers(clip: Path, cameras: int, seconds: float) -> Iterator[tuple[list[str], Broker]]:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp:
        served = loop_clip(clip, Path(tmp) / "served.mp4", seconds)
        urls = []
        for i in range(cameras):
            srv = stack.enter_context(RtspServer(served, mount=f"/cam{i}"))
            urls.append(srv.url)
        broker = Broker(Path(tmp), free_port())
        broker.start()
        stack.callback(broker.stop)
        yield urls, broker


def bench_cluster(
    base: AppConfig, clip: Path, cameras: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    from streamer.cluster.config import ClusterConfig

    per_mode_s = duration_s + warmup_s + 240.0
    with _servers(clip, cameras, 3 * per_mode_s) as (urls, broker):
        cfg = base.model_copy(
            update={
                "cameras": [CameraConfig(name=f"cam{i}", url=u) for i, u in enumerate(urls)],
                "mqtt": MqttConfig(host=broker.host, port=broker.port, prefix=PREFIX),
                "cluster": ClusterConfig(namespace=NAMESPACE, lease_s=2.0),
            }
        )
        with MqttLatency(broker.port) as lat:
            modes = [
                bench_single(cfg.model_copy(update={"cluster": None}), lat, warmup_s, duration_s)
            ]
            lat.samples = []
            for workers in (0, 1):
                modes.append(bench_cluster_mode(cfg, workers, lat, warmup_s, duration_s))
                lat.samples = []
    single, *clusters = modes
    overhead = {
        m["mode"]: {
            "frames_per_s_single_over_cluster": _ratio(
                single["frames_analysed_per_s"], m["frames_analysed_per_s"]
            ),
            "frame_to_mqtt_p95_cluster_over_single": _ratio(
                m["latency_ms"]["frame_to_mqtt_p95_est"],
                single["latency_ms"]["frame_to_mqtt_p95_est"],
            ),
            "memory_cluster_total_over_single": _ratio(
                sum(m["memory_mb_per_node"].values()), single["memory_mb_per_node"]["process"]
            ),
        }
        for m in clusters
    }
    return {
        "bench": "cluster",
        "clip": clip.name,
        "cameras": cameras,
        "cpus": os.cpu_count(),
        "duration_s": duration_s,
        "note": "all nodes share this machine's cores: the figures show the engine's "
        "overhead, not a speed-up from more hardware; a frames/s gain over the single "
        "process comes from one process per camera (no shared interpreter lock)",
        "latency_note": "frame_to_mqtt_p95_est = p95(decode->VA on the bus, in the "
        "analyzer) + p95(VA->arrival at an MQTT subscriber)",
        "modes": modes,
        "overhead": overhead,
    }


def cmd_bench_cluster(args: argparse.Namespace) -> int:
    from streamer.cluster import require_ray

    require_ray()
    if args.duration_s <= 0 or args.warmup_s < 0 or not 1 <= args.cameras <= 16:
        raise ConfigError("--duration-s must be > 0, --warmup-s >= 0, --cameras in 1..16")
    reason = gst_rtsp_unavailable()
    if reason:
        raise MediaError(f"bench cluster needs the GStreamer RTSP server: {reason}")
    if MOSQUITTO is None:
        raise MediaError("bench cluster needs the mosquitto broker binary (Debian 'mosquitto')")
    cfg = load_config(args.config) if args.config else AppConfig()
    clip = resolve_media(args.clip)
    result = bench_cluster(cfg, clip, args.cameras, args.duration_s, args.warmup_s)
    return emit(result)
