"""The composition root: builds the pipeline from the config and wires its sinks.

``replay``, ``run`` and the benches all build their analysis here, in two steps:

    pipe = build_pipeline(cfg, store)        # 1. build: models load (a missing one fails)
    async with Composition(pipe, SinkOptions(out=path, replay=True)) as run:
        await run.pipe.run_camera(...)       # 2. run: the pipeline and its sinks

:func:`build_pipeline` is the explicit build step: it loads the VA model and the face
detector from the store and passes them to :class:`~streamer.pipeline.Pipeline`
(tests pass fakes the same way, with no module global patched). :class:`Composition`
enters the pipeline, the JSONL writer and every optional sink or stage whose config
section is set; on exit it closes them in order (describer drain, bus close, sinks
flushed, output committed or dropped).

Adding an optional sink or stage (an episodes stage, a web dashboard, a metrics
collector): write one function ``_enter_<name>(ctx) -> AbstractAsyncContextManager |
None`` that returns None when its config section is unset, and add it to
:data:`OPTIONAL_SINKS`. The object it returns is entered in that order (after the
pipeline, so the bus and the engine are running), exited in reverse, and reachable as
``composition.sinks[name]``. A sink reads the bus through its own subscription
(``ctx.bus.subscribe(...)`` in its ``__aenter__``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamer.bus import EventBus
from streamer.config import AppConfig
from streamer.lifecycle import SingleUse
from streamer.pipeline import DetectorFactory, FaceDetector, Pipeline, first_error
from streamer.publish.jsonl import JsonlWriter

if TYPE_CHECKING:
    from streamer.affect.models import VAModel
    from streamer.describe import Describer
    from streamer.store import ArtifactStore

logger = logging.getLogger(__name__)

JSONL_QUEUE_SIZE = 4096  # messages queued for the JSONL writer (lossless)


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
    return Pipeline(cfg, model, detector_factory, bus=bus)


@dataclass(frozen=True)
class SinkOptions:
    """What a run writes besides the sinks its config sets up.

    Attributes:
        out: JSON lines to this file (default: the config's ``output.jsonl``).
        stdout_jsonl: JSON lines to stdout when there is no file.
        atomic_out: write the file atomically (replay); False appends as it goes (live).
        replay: a lossless run: at the end, wait (bounded by ``llm.drain_timeout_s``)
            for LLM answers still in flight. A live stop must be quick and does not.
        mqtt_options: extra MqttPublisher keywords (cluster mode: will, availability).
    """

    out: Path | None = None
    stdout_jsonl: bool = False
    atomic_out: bool = True
    replay: bool = False
    mqtt_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkContext:
    """What an optional sink's enter function may use.

    Attributes:
        cfg: the app config.
        bus: the pipeline's bus (subscribe in the sink's ``__aenter__``).
        pipe: the pipeline (entered: its engine runs).
        cameras: the names of the configured cameras.
        sinks: the sinks entered before this one, by name (e.g. ``"describer"``).
    """

    cfg: AppConfig
    bus: EventBus
    pipe: Pipeline
    cameras: list[str]
    sinks: dict[str, Any]
    options: SinkOptions


OptionalSink = Callable[[SinkContext], AbstractAsyncContextManager[object] | None]


def _enter_mqtt(ctx: SinkContext) -> AbstractAsyncContextManager[object] | None:
    cfg = ctx.cfg
    if cfg.mqtt is None:
        return None
    from streamer.publish.mqtt import MqttPublisher

    rules = [r.name for r in cfg.episodes.rules] if cfg.episodes else []
    mood = cfg.mood is not None and cfg.mood.enabled
    return MqttPublisher(
        cfg.mqtt, ctx.bus, ctx.cameras, rules=rules, mood=mood, **ctx.options.mqtt_options
    )


def _enter_describer(ctx: SinkContext) -> AbstractAsyncContextManager[object] | None:
    if ctx.cfg.llm is None:
        return None
    from streamer.describe import Describer

    return Describer(ctx.cfg.llm, ctx.bus)


def _enter_episodes(ctx: SinkContext) -> AbstractAsyncContextManager[object] | None:
    cfg = ctx.cfg
    if cfg.episodes is None and (cfg.mood is None or not cfg.mood.enabled):
        return None
    from streamer.episodes import EpisodeStage

    on_end = None
    describer = ctx.sinks.get("describer")
    if describer is not None and cfg.episodes is not None and cfg.episodes.describe:
        from streamer.episodes.describe import describer_hook

        on_end = describer_hook(describer)  # ended episodes are described too
    return EpisodeStage(ctx.bus, cfg.episodes, cfg.mood, on_end)


def _enter_web(ctx: SinkContext) -> AbstractAsyncContextManager[object] | None:
    if ctx.cfg.web is None or not ctx.cfg.web.enabled:
        return None
    from streamer.web.server import WebSink

    return WebSink(ctx.cfg.web, ctx.pipe)


# name -> enter function; entered in this order, exited in reverse. Add new ones here.
OPTIONAL_SINKS: dict[str, OptionalSink] = {
    "mqtt": _enter_mqtt,
    "describer": _enter_describer,
    "episodes": _enter_episodes,
    "web": _enter_web,
}


class Composition(SingleUse):
    """A pipeline with its sinks, entered and closed together (see the module docstring).

    Args:
        pipe: a built, not yet entered pipeline (:func:`build_pipeline`).
        options: outputs besides the config's sinks.
    """

    def __init__(self, pipe: Pipeline, options: SinkOptions | None = None) -> None:
        self.pipe = pipe
        self.options = options or SinkOptions()
        self.sinks: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        self._writer: JsonlWriter | None = None
        self._sink_tasks: asyncio.TaskGroup | None = None
        out = self.options.out or pipe.cfg.output.jsonl
        if out is not None or self.options.stdout_jsonl:
            self._writer = JsonlWriter(out, atomic=self.options.atomic_out)

    @property
    def bus(self) -> EventBus:
        return self.pipe.bus

    @property
    def describer(self) -> Describer | None:
        """The describer when the config has an ``llm`` section."""
        return self.sinks.get("describer")

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
            cameras = [c.name for c in self.pipe.cfg.cameras]
            self.pipe.sinks = self.sinks
            ctx = SinkContext(self.pipe.cfg, self.bus, self.pipe, cameras, self.sinks, self.options)
            for name, enter in OPTIONAL_SINKS.items():
                sink = enter(ctx)
                if sink is not None:
                    self.sinks[name] = await stack.enter_async_context(sink)
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
            episodes = self.sinks.get("episodes")
            if episodes is not None and exc_type is None:
                await episodes.drain()  # its episodes, moods and descriptions first
            describer = self.describer
            if describer is not None:
                # Fallbacks for every sample already published go out in any case; a
                # replay also waits (bounded) for the LLM answers still in flight.
                llm = self.pipe.cfg.llm
                replay = self.options.replay and exc_type is None
                await describer.drain(llm.drain_timeout_s if llm is not None and replay else 0.0)
            await self._close_sinks(exc)
            ok = exc_type is None
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)
            if self._writer is not None:
                # A failed run (or a failed sink) leaves no half-written output behind.
                if ok:
                    self._writer.commit()
                else:
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
    "OPTIONAL_SINKS",
    "Composition",
    "SinkContext",
    "SinkOptions",
    "build_pipeline",
    "yunet_factory",
]
