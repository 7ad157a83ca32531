"""The composition root: builds the pipeline from the config and wires its sinks.

The runtime (:mod:`streamer.runtime`: replay, live runs, cluster actors) and the benches
build their analysis here, in two steps:

    pipe = build_pipeline(cfg, store)        # 1. build: models load (a missing one fails)
    async with Composition(pipe, SinkOptions(out=path, replay=True)) as run:
        await run.pipe.run_camera(...)       # 2. run: the pipeline and its sinks

:func:`build_pipeline` is the explicit build step: it loads the VA model and the face
detector from the store and passes them to :class:`~streamer.pipeline.Pipeline`
(tests pass fakes the same way, with no module global patched). :class:`Composition`
enters the pipeline, the JSONL writer and every sink whose config section is set; on
exit it flushes the sinks in order (episodes, then the describer's fallbacks and LLM
answers), closes the bus, and exits them in reverse order (output committed or dropped).

Adding a sink (say, a history store) is its module's factory ``sink(ctx: SinkContext)
-> Sink`` (:mod:`streamer.sinks`) and one line in :data:`SINKS`: its name, when the
config enables it, and where its factory lives (imported only when enabled, so a run
never loads what it does not use). Sinks see the run through a read-only
:class:`~streamer.sinks.RunView`, never the pipeline itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from streamer.bus import EventBus, Subscription
from streamer.config import AppConfig
from streamer.lifecycle import SingleUse
from streamer.pipeline import CameraStats, DetectorFactory, FaceDetector, Pipeline, first_error
from streamer.publish.jsonl import JsonlWriter
from streamer.sinks import (
    Metric,
    Reporting,
    ReviewStore,
    Sink,
    SinkContext,
    SinkFactory,
    SinkOptions,
)
from streamer.sources.counters import CountedSource, SourceCounters

if TYPE_CHECKING:
    from streamer.affect.engine import EngineStats
    from streamer.affect.models import VAModel
    from streamer.store import ArtifactStore

logger = logging.getLogger(__name__)

JSONL_QUEUE_SIZE = 4096  # messages queued for the JSONL writer (lossless)
END_OF_STREAM = "end_of_stream"  # the reason of the lost events that close a stream


@dataclass(frozen=True)
class SinkSpec:
    """One entry of :data:`SINKS`.

    Attributes:
        name: the sink's name (logs, overrides).
        enabled: whether the config sets the sink up.
        factory: ``"module:function"`` of its factory, imported only when enabled (or
            the factory itself, for a sink whose module is loaded anyway).
    """

    name: str
    enabled: Callable[[AppConfig], bool]
    factory: str | SinkFactory

    def load(self) -> SinkFactory:
        if not isinstance(self.factory, str):
            return self.factory
        module, _, func = self.factory.partition(":")
        made: SinkFactory = getattr(importlib.import_module(module), func)
        return made


def _episodes_on(cfg: AppConfig) -> bool:
    return cfg.episodes is not None or (cfg.mood is not None and cfg.mood.enabled)


# Entered in this order (flushed in this order, exited in reverse). Add new sinks here.
SINKS: tuple[SinkSpec, ...] = (
    SinkSpec("mqtt", lambda cfg: cfg.mqtt is not None, "streamer.publish.mqtt:sink"),
    SinkSpec("episodes", _episodes_on, "streamer.episodes.stage:sink"),
    SinkSpec("describer", lambda cfg: cfg.llm is not None, "streamer.describe.describer:sink"),
    SinkSpec("history", lambda cfg: cfg.history is not None, "streamer.history.sink:sink"),
    SinkSpec("web", lambda cfg: cfg.web is not None and cfg.web.enabled, "streamer.web:sink"),
)


def yunet_factory(cfg: AppConfig, store: ArtifactStore) -> DetectorFactory:
    """A factory of YuNet detectors; the model file is looked up now (fails fast)."""
    from streamer.faces.yunet import YuNetDetector

    path = store.path("yunet")

    def make() -> FaceDetector:
        return YuNetDetector(path, cfg.faces.detector)

    return make


def build_pipeline(
    cfg: AppConfig,
    store: ArtifactStore | None = None,
    *,
    bus: EventBus | None = None,
    model: VAModel | None = None,
    detector_factory: DetectorFactory | None = None,
) -> Pipeline:
    """The build step: load the models ``cfg`` names and return an un-entered pipeline.

    Args:
        cfg: the app config.
        store: the model store (default: :func:`streamer.store.default_store`); not
            read when both ``model`` and ``detector_factory`` are given.
        bus: the event bus (default: a new one).
        model: a VA model to use instead of loading one (tests wrap the real one).
        detector_factory: a detector factory to use instead of YuNet from the store.

    Raises:
        ModelMissingError: a model is not in the store (the message has the command).
    """
    if store is None and (model is None or detector_factory is None):
        from streamer.store import default_store

        store = default_store()
    if detector_factory is None:
        assert store is not None
        detector_factory = yunet_factory(cfg, store)
    if model is None:
        from streamer.affect.models import load_va_model

        assert store is not None
        model = load_va_model(cfg.affect, store)
    # Streams that end close their tracks with a reason only when episodes are on, so
    # the outputs of runs without them keep their earlier form.
    end_reason = END_OF_STREAM if cfg.episodes is not None else None
    return Pipeline(cfg, model, detector_factory, bus=bus, end_reason=end_reason)


class _View:
    """The :class:`~streamer.sinks.RunView` of a composition (read-only)."""

    def __init__(self, comp: Composition) -> None:
        self._comp = comp

    @property
    def cameras(self) -> Sequence[str]:
        return [c.name for c in self._comp.pipe.cfg.cameras]

    @property
    def model_name(self) -> str:
        return self._comp.pipe.model_name

    @property
    def model_approximate(self) -> bool:
        return self._comp.pipe.model_approximate

    def camera_stats(self) -> Mapping[str, CameraStats]:
        return self._comp.pipe.stats

    def source_counters(self, camera: str) -> SourceCounters | None:
        source = self._comp.sources.get(camera)
        return source.counters() if source is not None else None

    def engine_stats(self) -> EngineStats:
        return self._comp.pipe.engine.stats

    def subscriptions(self) -> Sequence[Subscription]:
        return self._comp.bus.subscriptions

    def sink_metrics(self) -> list[Metric]:
        return [m for sink in self._comp.sinks.values() for m in sink.metrics()]

    def sink_problems(self) -> Mapping[str, str]:
        out = {}
        for name, sink in self._comp.sinks.items():
            if isinstance(sink, Reporting) and (why := sink.problem()):
                out[name] = why
        return out

    def review(self) -> ReviewStore | None:
        for sink in self._comp.sinks.values():
            if isinstance(sink, ReviewStore):
                return sink
        return None


class Composition(SingleUse):
    """A pipeline with its sinks, entered and closed together (see the module docstring).

    Args:
        pipe: a built, not yet entered pipeline (:func:`build_pipeline`).
        options: outputs besides the config's sinks.
        overrides: sink factories to use instead of the registered ones, by name (a
            cluster actor's own MQTT session, tests' fakes); used when the sink is
            enabled by the config.

    Attributes:
        sinks: the entered sinks, by name, in entering order.
        sources: the frame sources of the run, by camera (the runtime adds them with
            :meth:`add_source`; the view reads their counters).
        view: the read-only view the sinks get.
    """

    def __init__(
        self,
        pipe: Pipeline,
        options: SinkOptions | None = None,
        *,
        overrides: Mapping[str, SinkFactory] | None = None,
    ) -> None:
        self.pipe = pipe
        self.options = options or SinkOptions()
        self.overrides = dict(overrides or {})
        self.sinks: dict[str, Sink] = {}
        self.sources: dict[str, CountedSource] = {}
        self.view = _View(self)
        self._stack = contextlib.AsyncExitStack()
        self._writer: JsonlWriter | None = None
        self._sink_tasks: asyncio.TaskGroup | None = None
        out = self.options.out or pipe.cfg.output.jsonl
        if out is not None or self.options.stdout_jsonl:
            self._writer = JsonlWriter(out, atomic=self.options.atomic_out)

    @property
    def bus(self) -> EventBus:
        return self.pipe.bus

    def add_source(self, camera: str, source: CountedSource) -> None:
        """Make ``source``'s counters visible (dashboard, ``/metrics``) as ``camera``'s."""
        self.sources[camera] = source

    async def __aenter__(self) -> Composition:
        self._enter_once()
        stack = self._stack
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.pipe)
            if self._writer is not None:
                sub = self.bus.subscribe("jsonl", maxsize=JSONL_QUEUE_SIZE, lossless=True)
                tasks = self._sink_tasks = asyncio.TaskGroup()
                await tasks.__aenter__()
                tasks.create_task(self._writer.consume(sub), name="sink-jsonl")
            ctx = SinkContext(self.pipe.cfg, self.bus, self.view, self.options)
            for spec in SINKS:
                if spec.enabled(self.pipe.cfg):
                    factory = self.overrides.get(spec.name) or spec.load()
                    sink = factory(ctx)
                    await stack.enter_async_context(sink)
                    self.sinks[spec.name] = sink
        except BaseException as err:
            try:
                await self._close_sinks(err)
                await stack.__aexit__(type(err), err, err.__traceback__)
            finally:
                if self._writer is not None:
                    self._writer.abort()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ok = False
        try:
            # Before the bus closes: episodes first (their ended episodes are described),
            # then the describer's fallbacks (and, in a replay, its LLM answers).
            for sink in self.sinks.values():
                await sink.flush(ok=exc_type is None, replay=self.options.replay)
            await self._close_sinks(exc)
            ok = exc_type is None
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)
            if self._writer is not None:
                # A failed run (or a failed sink) leaves no half-written output behind.
                if not ok:
                    self._writer.abort()
                elif not self.options.hold_out:
                    self._writer.commit()

    def commit_output(self) -> None:
        """Commit the JSON lines file a ``hold_out`` run left uncommitted."""
        if self._writer is not None:
            self._writer.commit()

    def abort_output(self) -> None:
        """Drop the JSON lines file a ``hold_out`` run left uncommitted."""
        if self._writer is not None:
            self._writer.abort()

    async def _close_sinks(self, run_error: BaseException | None) -> None:
        """Close the bus: the bus-reading sinks see everything published, then end.

        A sink that failed (say, a full disk under the JSONL file) cancelled the run at
        once; its error is raised here, unless the run failed for a reason of its own.
        """
        self.bus.close()
        tasks, self._sink_tasks = self._sink_tasks, None
        if tasks is None:
            return
        try:
            await tasks.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            if run_error is not None and not isinstance(run_error, asyncio.CancelledError):
                logger.error("a sink failed too: %r", first_error(group))
                return
            raise first_error(group) from None


__all__ = [
    "END_OF_STREAM",
    "SINKS",
    "Composition",
    "SinkContext",
    "SinkOptions",
    "SinkSpec",
    "build_pipeline",
    "yunet_factory",
]
