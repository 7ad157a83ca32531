"""The episodes stage: rules and room mood on the bus.

    async with EpisodeStage(bus, episodes_cfg, mood_cfg) as stage:
        ...  # the pipeline publishes VASample / TrackEvent on ``bus``
        await stage.drain()  # before the bus closes

The stage owns one lossless bus subscription (VA samples and track events), so in a
replay it sees every sample and its episodes are deterministic; in a live run the bus
bounds how long a frame waits for it. It publishes :class:`Episode` and :class:`Mood`
messages back onto the bus (JSONL, MQTT, dashboard, history). With ``trajectories=True``
an ended episode carries its VA trajectory (never written out): the describer reads
ended episodes from the bus and describes them. The same engine runs over a recorded
JSONL in ``streamer episodes`` (:func:`replay_records`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Self

from streamer.bus import EventBus, Subscription
from streamer.episodes.config import EpisodesConfig, MoodConfig
from streamer.episodes.mood import MoodTracker
from streamer.episodes.rules import REASON_END_OF_STREAM, EpisodeEngine
from streamer.messages import (
    Episode,
    Message,
    Mood,
    TrackEvent,
    TrackEventKind,
    VASample,
)
from streamer.sinks import Metric, SinkContext

logger = logging.getLogger(__name__)

INBOX_SIZE = 4096  # messages queued for the stage before the publisher waits (lossless)


def _accept(msg: Message) -> bool:
    return isinstance(msg, VASample | TrackEvent)


class EpisodeLogic:
    """Rules and mood without the bus: one message in, episodes and moods out."""

    def __init__(
        self,
        episodes: EpisodesConfig | None,
        mood: MoodConfig | None,
        trajectories: bool = False,
    ) -> None:
        self.engine = EpisodeEngine(episodes, trajectories) if episodes is not None else None
        self.mood: MoodTracker | None = None
        if mood is not None and mood.enabled:
            # unsure samples are the ones the rules ignore
            self.mood = MoodTracker(mood, episodes.max_variance) if episodes else MoodTracker(mood)

    def feed(self, msg: Message) -> list[Episode | Mood]:
        out: list[Episode | Mood] = []
        if isinstance(msg, VASample):
            if self.mood is not None:
                out.extend(self.mood.on_sample(msg))
            if self.engine is not None:
                out.extend(self.engine.on_sample(msg))
        elif isinstance(msg, TrackEvent) and msg.kind is TrackEventKind.LOST:
            if self.engine is not None:
                out.extend(self.engine.on_lost(msg))
            if self.mood is not None:
                out.extend(self.mood.on_lost(msg))
        return out


class EpisodeStage:
    """Subscribes to the bus, publishes episodes and moods; see the module docstring.

    Args:
        bus: the pipeline's bus.
        episodes: the ``episodes`` section (None: mood only).
        mood: the ``mood`` section (None or disabled: episodes only).
        trajectories: ended episodes carry their trajectory (for the describer).

    Attributes:
        busy_s: seconds spent in the rules and mood (the stage's cost), per camera.
        published: episodes and moods published.
    """

    def __init__(
        self,
        bus: EventBus,
        episodes: EpisodesConfig | None,
        mood: MoodConfig | None,
        trajectories: bool = False,
    ) -> None:
        self._bus = bus
        self.logic = EpisodeLogic(episodes, mood, trajectories)
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._idle = asyncio.Event()
        self.busy_s: dict[str, float] = {}
        self.published = 0
        self.errors = 0

    async def __aenter__(self) -> Self:
        self._sub = self._bus.subscribe("episodes", INBOX_SIZE, lossless=True, accept=_accept)
        self._task = asyncio.create_task(self._loop(self._sub), name="episodes")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sub is not None:
            self._bus.unsubscribe(self._sub)
            self._sub = None

    async def flush(self, *, ok: bool, replay: bool) -> None:
        """Before the bus closes, after a run that did not fail: publish the episodes and
        moods of every message already on the bus."""
        if ok:
            await self.drain()

    def metrics(self) -> list[Metric]:
        """None of its own: the stage's cost is in ``busy_s`` (``bench replay``)."""
        return []

    async def drain(self) -> None:
        """Return once every message already on the bus was handled and its results
        published (call it before the bus closes)."""
        while self._sub is not None and (len(self._sub) or self._busy):
            task = self._task
            if task is None or task.done():
                return
            self._idle.clear()
            idle = asyncio.ensure_future(self._idle.wait())
            try:
                await asyncio.wait({idle, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()

    async def _loop(self, sub: Subscription) -> None:
        async for first in sub:
            self._busy = True
            try:
                # Everything queued now is handled in one go (one clock reading per batch).
                batch: list[Message] = [first]
                while (more := sub.get_nowait()) is not None:
                    batch.append(more)
                t0 = time.perf_counter()
                out = self._feed(batch)
                busy = time.perf_counter() - t0
                cams = {m.camera for m in batch}
                for cam in cams:
                    self.busy_s[cam] = self.busy_s.get(cam, 0.0) + busy / len(cams)
                for item in out:
                    await self._bus.publish(item)
                    self.published += 1
            finally:
                self._busy = len(sub) > 0
                if not self._busy:
                    self._idle.set()

    def _feed(self, batch: list[Message]) -> list[Episode | Mood]:
        out: list[Episode | Mood] = []
        for msg in batch:
            try:
                out.extend(self.logic.feed(msg))
            except Exception:  # supervisor: one bad message must not end the stage
                self.errors += 1
                logger.exception("episodes: failed on %r", msg)
        return out


def replay_records(
    records: Iterable[VASample | TrackEvent], episodes: EpisodesConfig
) -> Iterator[Episode]:
    """The episodes of recorded VA samples and track events (``streamer episodes``),
    in time order per track (:class:`streamer.recorded.RecordReader` reads them).

    The engine decides on values at the records' precision, so a JSONL written by a
    replay gives exactly that replay's episodes. Tracks still open when the records end
    (a live log cut short) end with ``end_of_stream`` at their camera's last frame.
    """
    engine = EpisodeEngine(episodes)
    last: dict[str, tuple[int, float]] = {}
    for msg in records:
        if isinstance(msg, VASample):
            last[msg.camera] = (msg.frame, msg.t)
            yield from engine.on_sample(msg)
        elif isinstance(msg, TrackEvent) and msg.kind is TrackEventKind.LOST:
            yield from engine.on_lost(msg)
    for camera, track_id in engine.tracks():
        frame, t = last.get(camera, (0, 0.0))
        end = TrackEvent(
            camera, track_id, TrackEventKind.LOST, frame, t, reason=REASON_END_OF_STREAM
        )
        yield from engine.on_lost(end)


def sink(ctx: SinkContext) -> EpisodeStage:
    """The episodes stage of a run with ``episodes:`` or an enabled ``mood:``
    (:data:`compose.SINKS`). Ended episodes carry their trajectory when the describer
    will describe them."""
    cfg = ctx.cfg
    describe = cfg.llm is not None and cfg.episodes is not None and cfg.episodes.describe
    return EpisodeStage(ctx.bus, cfg.episodes, cfg.mood, trajectories=describe)
