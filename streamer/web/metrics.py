"""Prometheus metrics of a run, read from the existing counters at scrape time.

Nothing in the pipeline counts for Prometheus: :class:`PipelineCollector` reads the
per-camera :class:`~streamer.pipeline.CameraStats`, each live source's
:class:`~streamer.sources.live.SourceStats`, the affect engine's, MQTT publisher's and
describer's counters and every bus subscription's drops when ``/metrics`` is scraped.
Durations recorded as :class:`~streamer.samples.RecentSamples` become histograms here
(each observation counted once). The process collector adds RSS, CPU and open files.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamer.samples import RecentSamples

# Seconds; a detector or VA call takes ms on a CPU, a whole frame up to a second when busy.
STAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Seconds; an LLM answer takes from 100 ms to the request timeout.
LLM_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STAGE_HISTOGRAMS = (
    ("detect", "streamer_detection_seconds", "seconds of one face-detector run"),
    ("va", "streamer_va_seconds", "seconds of one valence/arousal model call per frame"),
    ("frame", "streamer_frame_seconds", "seconds from a frame's preparation to its results"),
)


class _Histogram:
    """Cumulative buckets fed from a :class:`RecentSamples` at scrape time."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.seen = 0

    def feed(self, samples: RecentSamples) -> None:
        new, self.seen = samples.since(self.seen)
        for x in new:
            self.counts[bisect.bisect_left(self.bounds, x)] += 1
            self.sum += x

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip([*self.bounds, float("inf")], self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class PipelineCollector(Collector):
    """A Prometheus collector over a running :class:`~streamer.pipeline.Pipeline`.

    Args:
        pipe: the pipeline (its stats, sources, engine, MQTT publisher, describer, bus).
        camera_up: per camera, whether it is online now.
        tracks_alive: per camera, the number of tracks followed now.
        extra: more metric families to add (the web sink's own counters).
    """

    def __init__(
        self,
        pipe: Any,
        camera_up: Callable[[], dict[str, bool]],
        tracks_alive: Callable[[], dict[str, int]],
        extra: Callable[[], list[Metric]] | None = None,
    ) -> None:
        self.pipe = pipe
        self.camera_up = camera_up
        self.tracks_alive = tracks_alive
        self.extra = extra
        self._hists: dict[tuple[str, str], _Histogram] = {}

    def _hist(self, key: tuple[str, str], buckets: Sequence[float]) -> _Histogram:
        h = self._hists.get(key)
        if h is None:
            h = self._hists[key] = _Histogram(buckets)
        return h

    def collect(self) -> Iterator[Metric]:
        yield from self._cameras()
        yield from self._stage_histograms()
        yield from self._engine()
        yield from self._mqtt()
        yield from self._llm()
        yield from self._bus()
        if self.extra is not None:
            yield from self.extra()

    def _cameras(self) -> Iterator[Metric]:
        cam = ("camera",)
        decoded = _counter("streamer_frames_decoded", "frames decoded by the source", cam)
        analysed = _counter("streamer_frames_analysed", "frames analysed (faces, VA)", cam)
        skipped = _counter(
            "streamer_frames_skipped", "frames replaced before analysis (analysis busy)", cam
        )
        reconnects = _counter("streamer_reconnects", "reopen attempts after the first open", cam)
        stalls = _counter("streamer_stalls", "read timeouts and stalled streams", cam)
        corrupt = _counter(
            "streamer_corrupt_packets", "undecodable packets and corrupt frames", cam
        )
        faces = _counter("streamer_faces", "faces analysed (one per track per frame)", cam)
        tracks = _counter("streamer_tracks_appeared", "tracks confirmed", cam)
        up = _gauge("streamer_camera_up", "1 when the camera is online", cam)
        alive = _gauge("streamer_tracks_alive", "tracks followed now", cam)
        stats = dict(self.pipe.stats)
        ups = self.camera_up()
        for name in sorted(set(stats) | set(ups)):
            st = stats.get(name)
            src = self.pipe.sources.get(name)
            sstats = src.stats() if src is not None and hasattr(src, "stats") else None
            n_analysed = st.frames if st else 0
            counters = getattr(src, "counters", None)  # a replayed file
            if sstats is not None:
                decoded.add_metric([name], sstats.frames)
                skipped.add_metric([name], sstats.skipped)
                reconnects.add_metric([name], sstats.reconnects)
                stalls.add_metric([name], sstats.stalls)
                corrupt.add_metric([name], sstats.corrupt)
            else:
                decoded.add_metric([name], n_analysed)
                skipped.add_metric([name], 0)
                reconnects.add_metric([name], 0)
                stalls.add_metric([name], 0)
                corrupt.add_metric([name], float(counters.get("corrupt", 0)) if counters else 0)
            analysed.add_metric([name], n_analysed)
            faces.add_metric([name], st.faces if st else 0)
            tracks.add_metric([name], st.tracks_appeared if st else 0)
            up.add_metric([name], 1.0 if ups.get(name, st is not None) else 0.0)
        for name, n in self._alive().items():
            alive.add_metric([name], n)
        yield from (decoded, analysed, skipped, reconnects, stalls, corrupt, faces, tracks, up)
        yield alive

    def _alive(self) -> dict[str, int]:
        out = dict.fromkeys(self.pipe.stats, 0)
        out.update(self.tracks_alive())
        return out

    def _stage_histograms(self) -> Iterator[Metric]:
        for key, name, doc in STAGE_HISTOGRAMS:
            fam = HistogramMetricFamily(name, doc, labels=["camera"])
            for camera, st in sorted(self.pipe.stats.items()):
                h = self._hist((key, camera), STAGE_BUCKETS_S)
                h.feed(st.samples[key])
                fam.add_metric([camera], h.buckets(), h.sum)
            yield fam

    def _engine(self) -> Iterator[Metric]:
        es = self.pipe.engine.stats
        yield CounterMetricFamily(
            "streamer_va_batches", "valence/arousal model calls (batches)", value=es.batches
        )
        yield CounterMetricFamily(
            "streamer_va_batch_faces",
            "faces in all VA batches (mean size: / batches)",
            value=es.faces,
        )
        yield GaugeMetricFamily(
            "streamer_va_batch_size_max", "largest VA batch so far", value=es.largest_batch
        )
        yield CounterMetricFamily(
            "streamer_va_failed_faces",
            "faces answered with no VA (model error, timeout, degraded)",
            value=es.failed_faces + es.skipped_faces,
        )

    def _mqtt(self) -> Iterator[Metric]:
        pub = getattr(self.pipe, "mqtt", None)
        if pub is None:
            return
        sent = _counter("streamer_mqtt_messages_sent", "MQTT publications sent", ("kind",))
        for kind, n in sorted(pub.stats.published.items()):
            sent.add_metric([kind], n)
        dropped = _counter(
            "streamer_mqtt_messages_dropped", "messages never published, by reason", ("reason",)
        )
        for reason, n in sorted(pub.stats.dropped.items()):
            dropped.add_metric([reason], n)
        yield sent
        yield dropped
        yield GaugeMetricFamily(
            "streamer_mqtt_messages_buffered", "messages waiting to be sent", value=len(pub.buffer)
        )
        yield GaugeMetricFamily(
            "streamer_mqtt_connected", "1 while connected to the broker", value=pub.stats.connected
        )

    def _llm(self) -> Iterator[Metric]:
        d = getattr(self.pipe, "describer", None)
        if d is None:
            return
        yield CounterMetricFamily("streamer_llm_requests", "LLM requests made", value=d.requests)
        yield CounterMetricFamily(
            "streamer_llm_failures", "LLM requests failed (down, timeout, error)", value=d.failed
        )
        yield CounterMetricFamily(
            "streamer_llm_timeouts", "LLM requests past their timeout", value=d.timeouts
        )
        h = self._hist(("llm", ""), LLM_BUCKETS_S)
        h.feed(d.request_s)
        fam = HistogramMetricFamily("streamer_llm_request_seconds", "seconds of one LLM request")
        fam.add_metric([], h.buckets(), h.sum)
        yield fam

    def _bus(self) -> Iterator[Metric]:
        dropped = _counter(
            "streamer_bus_dropped", "messages a sink never received (slow sink)", ("sink",)
        )
        queued = _gauge("streamer_bus_queued", "messages waiting in a sink's queue", ("sink",))
        totals: dict[str, tuple[int, int]] = {}
        for sub in self.pipe.bus.subscriptions:
            d, q = totals.get(sub.name, (0, 0))
            totals[sub.name] = (d + sub.dropped, q + len(sub))
        for name, (d, q) in sorted(totals.items()):
            dropped.add_metric([name], d)
            queued.add_metric([name], q)
        yield dropped
        yield queued


def make_registry(collector: Collector) -> CollectorRegistry:
    """A registry of ``collector`` plus the process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(collector)
    return registry
