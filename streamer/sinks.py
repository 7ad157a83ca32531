"""The sink interface: what the composition enters around a pipeline, and what sinks see.

A sink (MQTT, the describer, the episodes stage, the web dashboard, the history store)
is a bus subscriber with its own bounded queue. The composition root
(:mod:`streamer.compose`) builds each sink whose config section is set through the
sink's factory (``def sink(ctx: SinkContext) -> Sink``, listed once in
:data:`streamer.compose.SINKS`), enters it after the pipeline, calls its
:meth:`Sink.flush` before the bus closes, and exits it in reverse order.

Sinks never reach into the pipeline: they read the bus through their own subscription
and, when they show the run (the web dashboard, ``/metrics``), a read-only
:class:`RunView`: camera counters, each source's counters, the VA engine's counters and
every sink's own :meth:`Sink.metrics`.

A sink's metrics are plain :class:`Metric` values named as in Prometheus (counters
without the ``_total`` suffix); the web sink turns them into its ``/metrics`` page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from streamer.affect.engine import EngineStats
    from streamer.bus import EventBus, Subscription
    from streamer.config import AppConfig
    from streamer.pipeline import CameraStats
    from streamer.samples import RecentSamples
    from streamer.sources.counters import SourceCounters

MetricKind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family: a name, its help text, and its values by label values.

    Attributes:
        name: Prometheus name (a counter without ``_total``).
        doc: help text.
        kind: ``counter``, ``gauge`` or ``histogram``.
        labels: label names (empty: one unlabelled value).
        values: (label values, value) pairs; for a histogram, unused.
        samples: a histogram's observations (each is counted once by the reader).
        buckets: a histogram's upper bounds (seconds).
    """

    name: str
    doc: str
    kind: MetricKind
    labels: tuple[str, ...] = ()
    values: tuple[tuple[tuple[str, ...], float], ...] = ()
    samples: RecentSamples | None = field(default=None, compare=False)
    buckets: tuple[float, ...] = ()

    @classmethod
    def counter(cls, name: str, doc: str, value: float) -> Metric:
        return cls(name, doc, "counter", values=(((), float(value)),))

    @classmethod
    def gauge(cls, name: str, doc: str, value: float) -> Metric:
        return cls(name, doc, "gauge", values=(((), float(value)),))

    @classmethod
    def by_label(
        cls, name: str, doc: str, kind: MetricKind, label: str, values: Mapping[str, float]
    ) -> Metric:
        """A family with one label, one value per label value (sorted)."""
        rows = tuple(((key,), float(v)) for key, v in sorted(values.items()))
        return cls(name, doc, kind, labels=(label,), values=rows)

    @classmethod
    def histogram(
        cls, name: str, doc: str, samples: RecentSamples, buckets: Sequence[float]
    ) -> Metric:
        return cls(name, doc, "histogram", samples=samples, buckets=tuple(buckets))


class Sink(Protocol):
    """A bus subscriber entered around the pipeline (see the module docstring)."""

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def flush(self, *, ok: bool, replay: bool) -> None:
        """Before the bus closes at the end of a run: hand on what is still queued
        (``ok``: the run did not fail; ``replay``: a lossless run that may wait, bounded,
        for work in flight; a live stop must be quick)."""
        ...

    def metrics(self) -> list[Metric]:
        """The sink's own counters and gauges, read at scrape time."""
        ...


@runtime_checkable
class Reporting(Protocol):
    """A sink that can say it is not doing its job (``/readyz`` shows it)."""

    def problem(self) -> str:
        """Why the sink is not working now, or "" when it is."""
        ...


@runtime_checkable
class ReviewStore(Protocol):
    """A history the dashboard's review page reads and marks (the history sink).

    Times are UNIX seconds; a bad argument (an unknown camera, a range that ends before
    it starts) raises :class:`~streamer.errors.HistoryError` with one line.
    """

    async def review_episodes(
        self,
        *,
        camera: str | None,
        rule: str | None,
        reviewed: bool | None,
        after: float | None,
        before: float | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Episodes as review items, newest first."""
        ...

    async def review_mood(
        self, *, camera: str, after: float, before: float, points: int
    ) -> list[dict[str, Any]]:
        """The room mood of ``camera`` in at most ``points`` buckets."""
        ...

    async def review_va(
        self, *, camera: str, track_id: int, run: int | None, after: float, before: float
    ) -> list[dict[str, Any]]:
        """One track's VA bins."""
        ...

    async def review_timeline(self, *, camera: str, after: float, before: float) -> dict[str, Any]:
        """When ``camera`` was recorded, and its outages."""
        ...

    async def review_cameras(self) -> list[str]:
        """Every camera the history knows."""
        ...

    async def mark_reviewed(self, ids: Sequence[int], reviewed: bool) -> int:
        """Mark episodes (by their ``id``) reviewed or not; how many changed."""
        ...

    async def set_keep(self, episode: int, keep: bool) -> bool:
        """Exempt an episode from retention (or not); False when there is none."""
        ...


class RunView(Protocol):
    """A read-only view of a running composition, for the sinks that show it."""

    @property
    def cameras(self) -> Sequence[str]:
        """The configured cameras (a replay's file is its one camera)."""
        ...

    @property
    def model_name(self) -> str: ...

    @property
    def model_approximate(self) -> bool: ...

    def camera_stats(self) -> Mapping[str, CameraStats]:
        """Per camera analysed, its analysis counters."""
        ...

    def source_counters(self, camera: str) -> SourceCounters | None:
        """The counters of ``camera``'s source, None before it was opened."""
        ...

    def engine_stats(self) -> EngineStats:
        """The VA engine's counters (batches, failures, degraded)."""
        ...

    def subscriptions(self) -> Sequence[Subscription]:
        """Every bus subscription (each sink's queue: its drops and its length)."""
        ...

    def sink_metrics(self) -> list[Metric]:
        """Every entered sink's :meth:`Sink.metrics`, in entering order."""
        ...

    def sink_problems(self) -> Mapping[str, str]:
        """Per entered sink that reports one (:class:`Reporting`), why it is not working."""
        ...

    def review(self) -> ReviewStore | None:
        """The history the review page reads (None: no ``history`` configured)."""
        ...


@dataclass(frozen=True)
class SinkOptions:
    """What a run writes besides the sinks its config sets up.

    Attributes:
        out: JSON lines to this file (default: the config's ``output.jsonl``).
        stdout_jsonl: JSON lines to stdout when there is no file.
        atomic_out: write the file atomically (replay); False appends as it goes (live).
        replay: a lossless run: at the end, sinks may wait (bounded) for work in flight
            (LLM answers still coming). A live stop must be quick and does not.
        linger_s: a replay's dashboard keeps serving this long after the analysis ended
            (``inf``: until SIGINT/SIGTERM, which end the wait, not the run).
        hold_out: leave the atomic file uncommitted when the run ends; the caller
            commits it (:meth:`streamer.compose.Composition.commit_output`) once its
            own outputs are written too, or aborts it: a failed step after the run
            leaves no file that looks complete.
    """

    out: Path | None = None
    stdout_jsonl: bool = False
    atomic_out: bool = True
    replay: bool = False
    linger_s: float = 0.0
    hold_out: bool = False


@dataclass(frozen=True)
class SinkContext:
    """What a sink's factory may use.

    Attributes:
        cfg: the app config.
        bus: the pipeline's bus (subscribe in the sink's ``__aenter__``).
        view: the run, read-only.
        options: the run's output options.
    """

    cfg: AppConfig
    bus: EventBus
    view: RunView
    options: SinkOptions


SinkFactory = Callable[[SinkContext], Sink]


__all__ = [
    "Metric",
    "MetricKind",
    "Reporting",
    "ReviewStore",
    "RunView",
    "Sink",
    "SinkContext",
    "SinkFactory",
    "SinkOptions",
]
