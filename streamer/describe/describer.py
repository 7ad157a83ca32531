"""The describer: a fallback description at once, the LLM's answer later, never in the way.

    async with Describer(cfg, bus, episodes=True) as describer:
        ...  # the pipeline publishes VASample / TrackEvent on ``bus``

The describer reads its own bus subscription (bounded, drop-oldest, so it can never slow
the publisher). Per track it keeps a window of smoothed VA in *media* time and decides
when a description is due: first after ``warmup_s``, then every ``interval_s``, and
sooner when VA moved more than ``min_change`` (but not within ``min_gap_s``). A due
track gets a deterministic :class:`Description` (``source="fallback"``) published at
once, and a job in a bounded queue. Workers (``max_concurrency``) send jobs to the
provider, one in flight per track; a newer job for a track replaces its waiting one. The
LLM's answer is published as a ``Description`` with the same ``id`` and
``source="llm"``. With ``episodes=True`` it also reads ended
:class:`~streamer.messages.Episode` messages (a small lossless subscription of their
own, so none is missed) and describes each the same way
(:mod:`streamer.describe.episodes`). Every request has a hard timeout; after a failed
request no request is sent for ``reconnect_interval_s`` (doubling up to
``reconnect_max_s``; the package's one :class:`~streamer.backoff.Backoff`), so a dead
server costs one connection attempt per interval. A blank or invalid answer is retried
once, then the job is dropped and counted.

Counters (attributes): ``requests`` (provider calls, retries included), ``answered``
(LLM descriptions published), ``failed`` (calls that timed out, errored or could not
connect), ``invalid`` (answers that failed validation), ``dropped`` (jobs abandoned
without an answer; reasons in ``drop_reasons``), ``fallbacks`` (fallback descriptions
published), ``errors`` (unexpected exceptions in the describer's loops).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

from streamer.backoff import Backoff, BackoffPolicy
from streamer.bus import EventBus, Subscription
from streamer.describe.answer import ANSWER_SCHEMA, Answer, parse_answer
from streamer.describe.config import LlmConfig
from streamer.describe.episodes import episode_description
from streamer.describe.fallback import FALLBACK_MODEL, fallback_answer
from streamer.describe.prompts import build_messages
from streamer.describe.providers import Provider, create_provider
from streamer.errors import DescriberError, InvalidAnswerError, ProviderTimeoutError
from streamer.lifecycle import SingleUse
from streamer.messages import (
    Description,
    Episode,
    Message,
    TrackEvent,
    TrackEventKind,
    VASample,
    clamp_va,
)
from streamer.samples import RecentSamples
from streamer.sinks import Metric, SinkContext
from streamer.summary import TrackSummary, summarize
from streamer.throttle import LogThrottle

logger = logging.getLogger(__name__)

TrackKey = tuple[str, int]

FAILURE_LOG_INTERVAL_S = 60.0  # failed LLM requests: one warning per this (s), else debug
INBOX_DRAIN_MAX_S = 5.0  # seconds: safety bound on handing the inbox over in drain()
TIME_REWIND_S = 1.0  # media seconds backwards that mean a restarted stream, not jitter
# Seconds; an LLM answer takes from 100 ms to the request timeout.
LLM_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EPISODE_INBOX = 256  # ended episodes queued for the describer (lossless)


def due_reason(
    cfg: LlmConfig,
    first_t: float,
    last_desc_t: float | None,
    last_desc_va: tuple[float, float] | None,
    t: float,
    valence: float,
    arousal: float,
) -> str | None:
    """Why a track is due for a description at media time ``t``, or None.

    Returns:
        ``"first"`` once the track was seen for ``warmup_s``; ``"interval"`` when
        ``interval_s`` passed since the last description; ``"change"`` when VA moved
        more than ``min_change`` from the last described value and ``min_gap_s`` passed.
    """
    if last_desc_t is None or last_desc_va is None:
        return "first" if t - first_t >= cfg.warmup_s else None
    dt = t - last_desc_t
    if dt >= cfg.interval_s:
        return "interval"
    if dt >= cfg.min_gap_s and math.dist(last_desc_va, (valence, arousal)) > cfg.min_change:
        return "change"
    return None


@dataclass
class _Track:
    first_t: float
    last_t: float
    window: collections.deque[tuple[float, float, float]] = field(default_factory=collections.deque)
    last_desc_t: float | None = None
    last_desc_va: tuple[float, float] | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class _Job:
    key: TrackKey
    fallback: Description
    summary: TrackSummary


def _accept(msg: Message) -> bool:
    return isinstance(msg, VASample | TrackEvent)


def _ended_episode(msg: Message) -> bool:
    return isinstance(msg, Episode) and msg.state == "ended"


class Describer(SingleUse):
    """Publishes a :class:`Description` per track, fallback first, LLM answer later.

    Args:
        cfg: the ``llm`` config section.
        bus: the pipeline's bus; the describer subscribes to it on entry and publishes
            descriptions onto it.
        provider: a provider to use instead of building one from ``cfg`` (tests,
            plug-ins); None = :func:`create_provider`.
        episodes: also describe ended episodes (read from the bus).
    """

    def __init__(
        self,
        cfg: LlmConfig,
        bus: EventBus,
        provider: Provider | None = None,
        *,
        episodes: bool = False,
    ) -> None:
        self.cfg = cfg
        self._bus = bus
        self._provider: Provider | None = provider
        self._provider_usable = False
        self._provider_ready = asyncio.Event()
        self._sub: Subscription | None = None
        self._describe_episodes = episodes
        self._episodes: Subscription | None = None
        self._tracks: collections.OrderedDict[TrackKey, _Track] = collections.OrderedDict()
        self._pending: collections.OrderedDict[TrackKey, _Job] = collections.OrderedDict()
        self._in_flight: set[TrackKey] = set()
        self._work = asyncio.Event()
        self._idle = asyncio.Event()  # set while no job is pending or in flight
        self._idle.set()
        self._inbox_empty = asyncio.Event()  # set when the consumer caught up (or ended)
        self._tasks: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        # no requests for a while after failures (monotonic seconds)
        self._backoff = Backoff(
            BackoffPolicy(cfg.reconnect_interval_s, cfg.reconnect_max_s, multiplier=2.0)
        )
        self._failure_log = LogThrottle(FAILURE_LOG_INTERVAL_S)
        self._down_until = 0.0
        self.requests = 0
        self.answered = 0
        self.failed = 0
        self.invalid = 0
        self.dropped = 0
        self.fallbacks = 0
        self.errors = 0
        self.timeouts = 0
        self.request_s = RecentSamples()  # seconds of each answered or failed request
        self.drop_reasons: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._enter_once()
        if self._provider is None:
            self._provider = create_provider(self.cfg)
        self._sub = self._bus.subscribe("describer", maxsize=self.cfg.inbox_size, accept=_accept)
        if self._describe_episodes:
            self._episodes = self._bus.subscribe(
                "describer-episodes", EPISODE_INBOX, lossless=True, accept=_ended_episode
            )
        tasks = self._tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._loops = [
            tasks.create_task(self._consume_loop(), name="describer-consume"),
            *(
                [tasks.create_task(self._episode_loop(self._episodes), name="describer-episodes")]
                if self._episodes is not None
                else []
            ),
            tasks.create_task(self._provider_loop(), name="describer-provider"),
            *(
                tasks.create_task(self._worker_loop(), name=f"describer-worker-{i}")
                for i in range(self.cfg.max_concurrency)
            ),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tasks is not None:
                # The loops run until cancelled; a crash in one (a bug: they catch and
                # count every expected error) surfaces here as an ExceptionGroup.
                for task in self._loops:
                    task.cancel()
                await self._tasks.__aexit__(None, None, None)
        finally:
            self._tasks = None
            await self._stack.aclose()
        for sub in (self._sub, self._episodes):
            if sub is not None:
                self._bus.unsubscribe(sub)
        self._sub = self._episodes = None
        logger.info(
            "describer: %d fallback(s), %d LLM answer(s), %d request(s), %d failed, "
            "%d invalid, %d dropped %s",
            self.fallbacks,
            self.answered,
            self.requests,
            self.failed,
            self.invalid,
            self.dropped,
            dict(self.drop_reasons),
        )

    @property
    def pending(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Requests running now."""
        return len(self._in_flight)

    @property
    def tracked(self) -> int:
        """Tracks whose VA window is held now."""
        return len(self._tracks)

    @property
    def backoff_remaining_s(self) -> float:
        """Seconds until the next request may be sent after failures (0.0 = now)."""
        return max(0.0, self._down_until - time.monotonic())

    @property
    def model(self) -> str:
        """The label of the LLM answers (``provider:model``)."""
        return self._provider.label if self._provider is not None else self.cfg.model

    async def flush(self, *, ok: bool, replay: bool) -> None:
        """Before the bus closes: the fallbacks of every sample already published go out
        in any case; a replay that did not fail also waits (bounded by
        ``drain_timeout_s``) for the LLM answers still in flight."""
        await self.drain(self.cfg.drain_timeout_s if ok and replay else 0.0)

    def metrics(self) -> list[Metric]:
        """LLM requests, failures, timeouts and request durations."""
        failed = "LLM requests failed (down, timeout, error)"
        return [
            Metric.counter("streamer_llm_requests", "LLM requests made", self.requests),
            Metric.counter("streamer_llm_failures", failed, self.failed),
            Metric.counter(
                "streamer_llm_timeouts", "LLM requests past their timeout", self.timeouts
            ),
            Metric.histogram(
                "streamer_llm_request_seconds",
                "seconds of one LLM request",
                self.request_s,
                LLM_BUCKETS_S,
            ),
        ]

    async def drain(self, timeout_s: float) -> bool:
        """Handle every VA message already on the bus, then wait for pending LLM answers.

        Call it before closing the bus at the end of a replay: the fallbacks of the last
        samples always go out (that part does not depend on ``timeout_s``; it is CPU
        work bounded by ``inbox_size``), and LLM answers still coming are waited for at
        most ``timeout_s`` seconds. Returns True when nothing is left, False when jobs
        were still pending or in flight at the deadline.
        """
        if (self._sub is not None and len(self._sub)) or (
            self._episodes is not None and len(self._episodes)
        ):
            self._inbox_empty.clear()  # the consumers set it when they have caught up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INBOX_DRAIN_MAX_S):
                    await self._inbox_empty.wait()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ tracks

    def _drop(self, reason: str, n: int = 1) -> None:
        self.dropped += n
        self.drop_reasons[reason] += n

    def _forget(self, key: TrackKey) -> None:
        self._tracks.pop(key, None)
        if self._pending.pop(key, None) is not None:
            self._drop("track_lost")
            self._note_if_idle()

    def _note_if_idle(self) -> None:
        """Set the idle event once no job is pending or in flight (``drain`` waits on it)."""
        if not self._pending and not self._in_flight:
            self._idle.set()

    def _track_for(self, key: TrackKey, t: float) -> _Track:
        track = self._tracks.get(key)
        if track is not None and t < track.last_t - TIME_REWIND_S:
            logger.debug("track %s: media time went back %.3f -> %.3f; reset", key, track.last_t, t)
            track = None
        if track is None:
            track = _Track(first_t=t, last_t=t)
            self._tracks[key] = track
            while len(self._tracks) > self.cfg.max_tracks:
                old, _ = self._tracks.popitem(last=False)
                self._forget(old)
        self._tracks.move_to_end(key)
        return track

    def on_sample(self, sample: VASample) -> Description | None:
        """Update the track of ``sample``; when it is due, queue its job and return the
        fallback (the caller publishes it)."""
        key = (sample.camera, sample.track_id)
        v, a = clamp_va(sample.valence), clamp_va(sample.arousal)
        t = sample.t if math.isfinite(sample.t) else 0.0
        track = self._track_for(key, t)
        track.last_t = t
        track.window.append((t, v, a))
        while track.window and track.window[0][0] < t - self.cfg.window_s:
            track.window.popleft()
        reason = due_reason(self.cfg, track.first_t, track.last_desc_t, track.last_desc_va, t, v, a)
        if reason is None:
            return None
        summary = summarize(track.window)
        desc = self._fallback(sample, track, summary)
        track.last_desc_t = t
        track.last_desc_va = (v, a)
        logger.debug("track %s due (%s) at t=%.3f: %s", key, reason, t, desc.id)
        self.fallbacks += 1
        self._enqueue(_Job(key, desc, summary))
        return desc

    def _fallback(self, sample: VASample, track: _Track, summary: TrackSummary) -> Description:
        answer = fallback_answer(summary)
        track.seq += 1
        return Description(
            id=f"{sample.camera}:{sample.track_id}:{track.seq}",
            camera=sample.camera,
            track_id=sample.track_id,
            t=sample.t,
            valence=summary.valence,
            arousal=summary.arousal,
            basic=answer.basic,
            complex=answer.complex,
            text=answer.text,
            source="fallback",
            model=FALLBACK_MODEL,
            wall_time=sample.wall_time,
        )

    def on_episode(self, episode: Episode) -> Description:
        """Queue an ended episode for the LLM; returns its fallback (the caller publishes it).

        The job has a key of its own (it never replaces a track's description, nor is it
        replaced by one) and obeys the same queue, concurrency, timeout and back-off.
        """
        fallback, summary = episode_description(episode)
        self.fallbacks += 1
        key = (f"{fallback.camera}/episode/{fallback.episode_id}", fallback.track_id)
        self._enqueue(_Job(key, fallback, summary))
        return fallback

    def _enqueue(self, job: _Job) -> None:
        if job.key in self._pending:
            del self._pending[job.key]
            self._drop("superseded")
        self._pending[job.key] = job
        while len(self._pending) > self.cfg.queue_size:
            self._pending.popitem(last=False)
            self._drop("queue_full")
        self._idle.clear()
        self._work.set()

    # ------------------------------------------------------------------ loops

    async def _consume_loop(self) -> None:
        assert self._sub is not None
        try:
            async for msg in self._sub:
                desc = None
                try:
                    if isinstance(msg, VASample):
                        desc = self.on_sample(msg)
                    elif isinstance(msg, TrackEvent) and msg.kind is TrackEventKind.LOST:
                        self._forget((msg.camera, msg.track_id))
                except Exception:  # supervisor: one bad message must not end descriptions
                    self.errors += 1
                    logger.exception("describer: failed on %r", msg)
                if desc is not None:
                    await self._bus.publish(desc)
                self._note_caught_up()
        finally:
            self._inbox_empty.set()

    async def _episode_loop(self, sub: Subscription) -> None:
        try:
            async for msg in sub:
                if not isinstance(msg, Episode):
                    continue
                try:
                    desc = self.on_episode(msg)
                except Exception:  # supervisor: one bad episode must not end descriptions
                    self.errors += 1
                    logger.exception("describer: failed on episode %s", msg.id)
                else:
                    await self._bus.publish(desc)
                self._note_caught_up()
        finally:
            self._inbox_empty.set()

    def _note_caught_up(self) -> None:
        """Tell ``drain`` once both inboxes are empty."""
        if not any(sub is not None and len(sub) for sub in (self._sub, self._episodes)):
            self._inbox_empty.set()

    async def _provider_loop(self) -> None:
        """Open the provider off the caller's path (loading a GGUF takes a while)."""
        assert self._provider is not None
        try:
            await self._stack.enter_async_context(self._provider)
        except DescriberError as err:
            logger.error("LLM provider unusable, fallback descriptions only: %s", err)
            self._provider_ready.set()
            self._work.set()
            return
        except Exception:  # supervisor: a provider bug must not stop the fallbacks
            self.errors += 1
            logger.exception("LLM provider failed to start; fallback descriptions only")
            self._provider_ready.set()
            self._work.set()
            return
        self._provider_usable = True
        self._provider_ready.set()
        self._work.set()
        await self._check_model()

    async def _check_model(self) -> None:
        list_models = getattr(self._provider, "list_models", None)
        if list_models is None:
            return
        try:
            names = await list_models()
        except DescriberError as err:
            logger.warning("LLM server not answering yet (fallback meanwhile): %s", err)
            return
        wanted = self.cfg.model
        if not any(n == wanted or n.split(":")[0] == wanted for n in names):
            logger.warning(
                "model %r is not on the LLM server (has: %s); run `ollama pull %s`",
                wanted,
                ", ".join(names[:10]) or "none",
                wanted,
            )

    def _next_job(self) -> _Job | None:
        for key in self._pending:
            if key not in self._in_flight:
                return self._pending.pop(key)
        return None

    async def _worker_loop(self) -> None:
        await self._provider_ready.wait()
        while True:
            job = self._next_job()
            if job is None:
                self._work.clear()
                await self._work.wait()
                continue
            self._in_flight.add(job.key)
            try:
                await self._run_job(job)
            except Exception:  # supervisor: log, count, go on with the next job
                self.errors += 1
                self._drop("error")
                logger.exception("describer: job %s failed unexpectedly", job.fallback.id)
            finally:
                self._in_flight.discard(job.key)
                self._work.set()
                self._note_if_idle()

    def _note_failure(self, err: DescriberError) -> None:
        self.failed += 1
        delay = self._backoff.next_delay()
        self._down_until = time.monotonic() + delay
        args = (self._backoff.failures, delay, err)
        msg = "LLM request failed (%d in a row), next try in %.1f s: %s"
        if not self._failure_log.log(logger, logging.WARNING, msg, *args):
            logger.debug(msg, *args)

    def _note_success(self) -> None:
        if self._backoff.failures:
            logger.info("LLM answering again after %d failed request(s)", self._backoff.failures)
        self._backoff.reset()
        self._down_until = 0.0

    async def _ask(self, messages: Sequence[dict[str, str]]) -> Answer | None:
        """Up to two calls; None when the job is to be dropped (reason recorded)."""
        assert self._provider is not None
        for attempt in (1, 2):
            self.requests += 1
            t0 = time.monotonic()
            try:
                raw = await self._provider.complete(list(messages), ANSWER_SCHEMA)
                self.request_s.add(time.monotonic() - t0)
                answer = parse_answer(raw)
            except InvalidAnswerError as err:
                self.invalid += 1
                logger.info("LLM answer invalid (attempt %d of 2): %s", attempt, err)
                continue
            except DescriberError as err:
                self.request_s.add(time.monotonic() - t0)
                self.timeouts += isinstance(err, ProviderTimeoutError)
                self._note_failure(err)
                self._drop("failed")
                return None
            self._note_success()
            return answer
        # A server that answers, if badly, is up: no back-off, but the job is lost.
        self._note_success()
        self._drop("invalid")
        return None

    async def _run_job(self, job: _Job) -> None:
        if not self._provider_usable:
            self._drop("provider_unavailable")
            return
        if time.monotonic() < self._down_until:
            self._drop("backoff")
            return
        answer = await self._ask(build_messages(job.summary))
        if answer is None:
            return
        fb = job.fallback
        update = replace(
            fb,
            basic=answer.basic,
            complex=answer.complex,
            text=answer.text,
            source="llm",
            model=self.model,
            wall_time=time.time() if fb.wall_time is not None else None,
        )
        await self._bus.publish(update)
        self.answered += 1


def sink(ctx: SinkContext) -> Describer:
    """The describer of a run whose config has an ``llm`` section (:data:`compose.SINKS`);
    it describes ended episodes too when ``episodes.describe`` is on."""
    cfg = ctx.cfg
    if cfg.llm is None:
        raise ValueError("the describer needs an llm section")
    episodes = cfg.episodes is not None and cfg.episodes.describe
    return Describer(cfg.llm, ctx.bus, episodes=episodes)


__all__ = ["Describer", "due_reason", "sink"]
