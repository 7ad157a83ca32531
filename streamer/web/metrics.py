"""Prometheus metrics of a run, read from the existing counters at scrape time.

Nothing in the pipeline counts for Prometheus: :class:`RunCollector` reads the run's
:class:`~streamer.sinks.RunView` when ``/metrics`` is scraped: the per-camera
:class:`~streamer.pipeline.CameraStats`, each source's
:class:`~streamer.sources.counters.SourceCounters`, the affect engine's counters, every
bus subscription's drops and every sink's own :meth:`~streamer.sinks.Sink.metrics` (the
MQTT publisher's, the describer's, the dashboard's). Durations recorded as
:class:`~streamer.samples.RecentSamples` become histograms here (each observation
counted once). The process collector adds RSS, CPU and open files.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamer.samples import RecentSamples
from streamer.sinks import Metric as SinkMetric
from streamer.sinks import RunView

# Seconds; a detector or VA call takes ms on a CPU, a whole frame up to a second when busy.
STAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
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


class RunCollector(Collector):
    """A Prometheus collector over a running composition's :class:`RunView`.

    Args:
        view: the run, read-only.
        camera_up: per camera, whether it is online now (the dashboard's state).
        tracks_alive: per camera, the number of tracks followed now.
    """

    def __init__(
        self,
        view: RunView,
        camera_up: Callable[[], dict[str, bool]],
        tracks_alive: Callable[[], dict[str, int]],
    ) -> None:
        self.view = view
        self.camera_up = camera_up
        self.tracks_alive = tracks_alive
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
        yield from self._bus()
        for metric in self.view.sink_metrics():
            yield self._family(metric)

    def _cameras(self) -> Iterator[Metric]:
        cam = ("camera",)
        decoded = _counter(
            "streamer_frames_decoded", "frames decoded by the source (skipped by rate too)", cam
        )
        analysed = _counter("streamer_frames_analysed", "frames analysed (faces, VA)", cam)
        skipped = _counter(
            "streamer_frames_skipped", "frames replaced before analysis (analysis busy)", cam
        )
        by_rate = _counter(
            "streamer_frames_skipped_by_rate",
            "frames off the camera's analysis grid (analysis_fps): not analysed, by design",
            cam,
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
        stats = dict(self.view.camera_stats())
        ups = self.camera_up()
        for name in sorted(set(stats) | set(ups)):
            st = stats.get(name)
            n_analysed = st.frames if st else 0
            src = self.view.source_counters(name)
            decoded.add_metric([name], src.decoded if src is not None else n_analysed)
            skipped.add_metric([name], src.skipped if src is not None else 0)
            by_rate.add_metric([name], src.skipped_by_rate if src is not None else 0)
            reconnects.add_metric([name], src.reconnects if src is not None else 0)
            stalls.add_metric([name], src.stalls if src is not None else 0)
            corrupt.add_metric([name], src.corrupt if src is not None else 0)
            analysed.add_metric([name], n_analysed)
            faces.add_metric([name], st.faces if st else 0)
            tracks.add_metric([name], st.tracks_appeared if st else 0)
            up.add_metric([name], 1.0 if ups.get(name, st is not None) else 0.0)
        counts = dict.fromkeys(stats, 0)
        counts.update(self.tracks_alive())
        for name, n in counts.items():
            alive.add_metric([name], n)
        yield from (decoded, analysed, skipped, by_rate, reconnects, stalls, corrupt, faces, tracks)
        yield up
        yield alive

    def _stage_histograms(self) -> Iterator[Metric]:
        stats = sorted(self.view.camera_stats().items())
        for key, name, doc in STAGE_HISTOGRAMS:
            fam = HistogramMetricFamily(name, doc, labels=["camera"])
            for camera, st in stats:
                h = self._hist((key, camera), STAGE_BUCKETS_S)
                h.feed(st.samples[key])
                fam.add_metric([camera], h.buckets(), h.sum)
            yield fam

    def _engine(self) -> Iterator[Metric]:
        es = self.view.engine_stats()
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

    def _bus(self) -> Iterator[Metric]:
        dropped = _counter(
            "streamer_bus_dropped", "messages a sink never received (slow sink)", ("sink",)
        )
        queued = _gauge("streamer_bus_queued", "messages waiting in a sink's queue", ("sink",))
        totals: dict[str, tuple[int, int]] = {}
        for sub in self.view.subscriptions():
            d, q = totals.get(sub.name, (0, 0))
            totals[sub.name] = (d + sub.dropped, q + len(sub))
        for name, (d, q) in sorted(totals.items()):
            dropped.add_metric([name], d)
            queued.add_metric([name], q)
        yield dropped
        yield queued

    def _family(self, m: SinkMetric) -> Metric:
        """A sink's :class:`~streamer.sinks.Metric` as a Prometheus family."""
        if m.kind == "histogram":
            fam = HistogramMetricFamily(m.name, m.doc)
            h = self._hist((m.name, ""), m.buckets)
            if m.samples is not None:
                h.feed(m.samples)
            fam.add_metric([], h.buckets(), h.sum)
            return fam
        family = _counter if m.kind == "counter" else _gauge
        out = family(m.name, m.doc, m.labels)
        for labels, value in m.values:
            out.add_metric(list(labels), value)
        return out


def make_registry(collector: Collector) -> CollectorRegistry:
    """A registry of ``collector`` plus the process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(collector)
    return registry
