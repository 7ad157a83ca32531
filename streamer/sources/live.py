"""Live video sources on PyAV: RTSP, HTTP(S)/HLS, V4L2 webcams, and files paced like cameras.

One :class:`LiveSource` per camera. Demuxing and decoding run in a worker thread that
owns the FFmpeg container; frames reach the asyncio pipeline through a one-slot,
latest-frame-wins :class:`~streamer.sources.mailbox.Mailbox`, so slow inference skips
frames (counted) instead of queueing them. The worker is its own supervisor::

    open (timeout=(open, read)) ──decode_worker──▶ frames ──▶ mailbox
      │   ▲                          │
      │   └── backoff (capped, jittered, reset after a healthy period)
      ▼                              │
    error / EOF / stall / N corrupt packets in a row ──▶ reconnecting | offline

Decoding itself (packet pump, media time, damaged frames) is
:func:`~streamer.sources.decode.decode_worker`, the same core replay uses: a file played
through a camera gives every frame the same media time ``t`` as ``streamer replay``.

A watchdog in the event loop guards against FFmpeg calls that never return (an open,
read or close that ignores the interrupt callback): past its bound the thread is
abandoned (counted, logged), a fresh one takes over, and the abandoned thread can never
deliver a frame or publish a status again (a generation token is checked under the
mailbox's and the status's locks).

Usage::

    async with LiveSource(cam_cfg, bus) as source:
        async for frame in source:      # streamer.messages.Frame
            ...

Status changes (starting, online, reconnecting, offline, stopped) are published on the
bus as :class:`~streamer.messages.CameraStatus`. Every URL in logs, statuses and errors
goes through :func:`~streamer.sources.redact.redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import av
import av.error

from streamer.backoff import Backoff
from streamer.bus import EventBus
from streamer.errors import ConfigError, MediaError, ReadError, SessionEnded, SourceError
from streamer.messages import CameraState, CameraStatus, Frame
from streamer.sources.config import CameraConfig
from streamer.sources.counters import SourceCounters
from streamer.sources.decode import CallWatch, DecodeState, Limits, decode_worker, open_stream
from streamer.sources.file import open_video
from streamer.sources.mailbox import Mailbox, MailboxClosed
from streamer.sources.rate import AnalysisGrid, spread_phase
from streamer.sources.redact import redact

logger = logging.getLogger(__name__)

STALL_MIN_FRAMES = 10  # a stall is never declared within fewer frame intervals than this
STOP_TIMEOUT_S = 3.0  # how long aclose() waits for the decode thread (seconds)
THREAD_EXIT_S = 0.5  # after its end is signalled, how long the decode thread gets to return
WATCHDOG_EVERY_S = 0.5  # how often the wedged-call watchdog looks (seconds)
# FFmpeg's read timeout is a poll interval: a read blocks at most about this long (RTSP
# reports it after about twice as long), so stop requests and the stall watchdog are
# checked at least every second even when no packet comes. The container keeps working
# after such a timeout (checked against a real RTSP server paused with SIGSTOP).
READ_POLL_S = 0.5  # seconds
CORRUPT_LOG_EVERY = 100  # log one warning per this many corrupt packets


class Opener(Protocol):
    """Opens an input container; :func:`open_container` (PyAV) in production."""

    def __call__(
        self,
        url: str,
        *,
        format: str | None,
        options: dict[str, str],
        timeout: tuple[float, float],
        hwaccel: str | None,
    ) -> Any: ...


def source_kind(url: str) -> str:
    """Classify a source URL: ``rtsp``, ``http``, ``device`` or ``file``."""
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://", "rtmp://")):
        return "rtsp"
    if lower.startswith(("http://", "https://")):
        return "http"
    if lower.startswith("/dev/video") or lower.startswith("v4l2://"):
        return "device"
    return "file"


def demuxer_options(cfg: CameraConfig) -> tuple[str, str | None, dict[str, str]]:
    """The URL, FFmpeg input format and options to open ``cfg`` with."""
    url = cfg.resolved_url()
    kind = source_kind(url)
    fmt: str | None = None
    options: dict[str, str] = {}
    if kind == "rtsp" and url.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = cfg.transport
    elif kind == "device":
        fmt = "v4l2"
        url = url.removeprefix("v4l2://")
    options.update(cfg.options)
    return url, fmt, options


def open_container(
    url: str,
    *,
    format: str | None,
    options: dict[str, str],
    timeout: tuple[float, float],
    hwaccel: str | None,
) -> Any:
    """Open ``url`` with PyAV, with explicit open and read timeouts.

    Local files go through the replay source's :func:`~streamer.sources.file.open_video`,
    whose errors name the file and say what is wrong with it (missing, empty, not a
    video); they need no network timeouts.
    """
    if format is None and source_kind(url) == "file" and not hwaccel and not options:
        return open_video(Path(url))
    kwargs: dict[str, Any] = {}
    if hwaccel:
        from av.codec.hwaccel import HWAccel

        kwargs["hwaccel"] = HWAccel(device_type=hwaccel, allow_software_fallback=True)
    return av.open(url, mode="r", format=format, options=options, timeout=timeout, **kwargs)


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Counters of one source (monotonic over its lifetime)."""

    frames: int  # good frames decoded (offered to the pipeline or skipped by rate)
    delivered: int  # frames the pipeline took
    skipped: int  # frames replaced in the mailbox before the pipeline took them
    reconnects: int  # reopen attempts after the first open
    stalls: int  # read timeouts and watchdog stalls
    corrupt: int  # packets that failed to decode and damaged frames skipped
    eagain: int  # transient EAGAIN retries
    untimed: int  # packets without timestamps in a stream that had them
    errors: int  # failed opens and lost sessions
    abandoned: int = 0  # decode threads abandoned in an FFmpeg call that never returned
    skipped_by_rate: int = 0  # good frames off the analysis grid (analysis_fps), by design
    not_decoded: int = 0  # of those, non-reference pictures never decoded (skip_frame)


@dataclass
class _Worker:
    """One decode thread: its generation, stop flag and current FFmpeg call."""

    gen: int
    stop: threading.Event = field(default_factory=threading.Event)
    watch: CallWatch = field(default_factory=CallWatch)
    thread: threading.Thread | None = None
    session_frames: int = 0
    ended: asyncio.Event | None = None  # set (from the thread, via the loop) as it ends


class LiveSource:
    """A camera (or a file played like one) as an async iterator of frames.

    Args:
        cfg: the camera's config.
        bus: where status changes are published (optional).
        opener: opens the container; tests inject faults by wrapping the real one.
        rng: random source for the backoff jitter.
        analysis_fps: the analysis rate when the camera's own ``analysis_fps`` is unset
            (the config's ``analysis.fps``); None: every frame.
        grid_phase: where its analysis slots start, a fraction of a slot (see
            :mod:`streamer.sources.rate`); :func:`build_sources` spreads its cameras.
    """

    def __init__(
        self,
        cfg: CameraConfig,
        bus: EventBus | None = None,
        *,
        opener: Opener | None = None,
        rng: random.Random | None = None,
        analysis_fps: float | None = None,
        grid_phase: float = 0.0,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        try:
            self.kind = source_kind(cfg.resolved_url())
        except ConfigError:  # reported when the camera opens
            self.kind = source_kind(cfg.url)
        self.safe_url = redact(cfg.url)
        self._bus = bus
        self._opener: Opener = opener or open_container
        self._rng = rng
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mailbox: Mailbox[Frame] | None = None
        self._status_lock = threading.Lock()
        self._status = CameraStatus(cfg.name, CameraState.STARTING, time.time())
        self._gen = 0  # generation of the decode thread allowed to deliver and publish
        self._worker_now: _Worker | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._closing = False
        self.left_behind: str | None = None  # the FFmpeg call a thread was left in at stop
        self.fps: float | None = cfg.fps
        self.hwaccel_failed = False  # set when cfg.hwaccel could not be used
        self.last_error = ""
        # Decoding state and counters, written by the current decode thread only.
        self.analysis_fps = cfg.effective_analysis_fps(analysis_fps)
        self.state = DecodeState(
            cfg.name,
            wall_untimed=self.kind != "file",
            grid=AnalysisGrid(self.analysis_fps, grid_phase),
            max_pixels=cfg.max_pixels,
        )
        self.reconnects = 0
        self.stalls = 0
        self.errors = 0
        self.abandoned = 0

    # ---- public state --------------------------------------------------------------

    @property
    def frames(self) -> int:
        return self.state.pictures

    @property
    def corrupt(self) -> int:
        return self.state.damage.corrupt_frames + self.state.damage.bad_packets

    @property
    def status(self) -> CameraStatus:
        """The current status with up-to-date counters."""
        with self._status_lock:
            return self._status_with_counters()

    @property
    def skipped(self) -> int:
        return self._mailbox.skipped if self._mailbox is not None else 0

    def counters(self) -> SourceCounters:
        """The counters the dashboard and ``/metrics`` show."""
        st = self.stats()
        return SourceCounters(
            st.frames, st.skipped, st.reconnects, st.stalls, st.corrupt, st.skipped_by_rate
        )

    def stats(self) -> SourceStats:
        """A snapshot of the counters."""
        delivered = (
            self._mailbox.put_count - self._mailbox.skipped if self._mailbox is not None else 0
        )
        return SourceStats(
            frames=self.frames,
            delivered=delivered,
            skipped=self.skipped,
            reconnects=self.reconnects,
            stalls=self.stalls,
            corrupt=self.corrupt,
            eagain=self.state.eagain,
            untimed=self.state.untimed,
            errors=self.errors,
            abandoned=self.abandoned,
            skipped_by_rate=self.state.skipped_by_rate,
            not_decoded=self.state.not_decoded,
        )

    def stall_timeout(self, fps: float | None = None) -> float:
        """The stall timeout in seconds, raised to ``STALL_MIN_FRAMES`` intervals at low fps."""
        fps = fps or self.fps
        stall = self.cfg.stall_timeout_s
        if fps and fps > 0:
            stall = max(stall, STALL_MIN_FRAMES / fps)
        return stall

    @property
    def thread(self) -> threading.Thread | None:
        """The current decode thread."""
        return self._worker_now.thread if self._worker_now else None

    # ---- async context manager / iterator -------------------------------------------

    async def __aenter__(self) -> LiveSource:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the decode thread and its watchdog (from the event loop)."""
        if self._worker_now is not None:
            raise RuntimeError(f"source {self.name} already started")
        self._loop = asyncio.get_running_loop()
        lossless = self.kind == "file" and not self.cfg.realtime
        self._mailbox = Mailbox(self._loop, lossless=lossless)
        self._publish_status(self._status)
        self._spawn()
        self._watchdog_task = self._loop.create_task(
            self._watchdog(), name=f"source-watchdog-{self.name}"
        )

    def _spawn(self) -> None:
        """Start a decode thread of a new generation; older ones may never deliver again."""
        assert self._mailbox is not None
        with self._status_lock:
            self._gen += 1
            worker = _Worker(self._gen, ended=asyncio.Event())
            self._mailbox.generation = worker.gen
        worker.thread = threading.Thread(
            target=self._worker, args=(worker,), name=f"source-{self.name}", daemon=True
        )
        self._worker_now = worker
        worker.thread.start()

    async def _watchdog(self) -> None:
        """Abandon a decode thread stuck in an FFmpeg call past its bound."""
        while not self._closing:
            await asyncio.sleep(WATCHDOG_EVERY_S)
            worker = self._worker_now
            overdue = worker.watch.overdue() if worker else None
            if worker is None or overdue is None or self._closing:
                continue
            what, stuck_s = overdue
            self.abandoned += 1
            worker.stop.set()
            logger.error(
                "camera %s: decode thread stuck in FFmpeg %s for %.1f s; abandoned it "
                "(%d so far) and started a fresh one",
                self.name,
                what,
                stuck_s,
                self.abandoned,
            )
            self._spawn()

    async def aclose(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop decoding and wait (bounded) for the decode thread to exit."""
        self._closing = True
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
        worker = self._worker_now
        if worker is not None:
            worker.stop.set()
        if self._mailbox is not None:
            self._mailbox.close()
        thread = worker.thread if worker is not None else None
        if thread is not None and worker is not None:
            # Awaited in the loop, not joined in executor threads: 50 cameras stop
            # together within timeout_s (the default executor has about 6 threads, and
            # joins queued behind each other took over 5 s).
            if worker.ended is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await worker.ended.wait()
            await asyncio.sleep(0)  # status callbacks the thread queued run first
            if worker.ended is not None and worker.ended.is_set():
                # set in the thread's last lines: let it return (not joined: no blocking)
                deadline = time.monotonic() + THREAD_EXIT_S
                while thread.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
            if worker.ended is not None and not worker.ended.is_set():
                # In an FFmpeg call bounded by its own timeout (an open on a silent
                # server): it ends by itself and can no longer deliver or publish.
                self.left_behind = worker.watch.current() or "python"
                logger.debug(
                    "camera %s: decode thread still in %s after %.1f s; left behind",
                    self.name,
                    self.left_behind,
                    timeout_s,
                )
        if self.status.state is not CameraState.STOPPED:
            self._set_state(CameraState.STOPPED, "stopped")

    def __aiter__(self) -> LiveSource:
        return self

    async def __anext__(self) -> Frame:
        if self._mailbox is None:
            raise RuntimeError("use 'async with source:' before iterating")
        try:
            return await self._mailbox.get()
        except MailboxClosed:
            raise StopAsyncIteration from None

    # ---- status ---------------------------------------------------------------------

    def _publish_status(self, status: CameraStatus) -> None:
        if self._bus is None or self._loop is None:
            return
        if self._in_loop_thread():
            self._bus.publish_nowait(status)
            return
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._bus.publish_nowait, status)

    def _in_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _set_state(self, state: CameraState, detail: str = "", gen: int | None = None) -> None:
        """Change the status; ``gen``: the decode thread's generation (stale: ignored)."""
        detail = redact(detail)
        with self._status_lock:
            if gen is not None and gen != self._gen:
                return  # an abandoned decode thread never publishes
            if self._status.state is state and self._status.detail == detail:
                return
            if self._status.state is CameraState.STOPPED:
                return  # final
            changed = self._status.state is not state
            self._status = CameraStatus(self.name, state, time.time(), detail)
            self._publish_status(self._status_with_counters())
        if changed:
            log = (
                logger.info
                if state in (CameraState.ONLINE, CameraState.STOPPED)
                else logger.warning
            )
            log(
                "camera %s (%s): %s%s",
                self.name,
                self.safe_url,
                state.value,
                f": {detail}" if detail else "",
            )

    def _status_with_counters(self) -> CameraStatus:
        st = self._status
        return CameraStatus(
            st.camera,
            st.state,
            st.wall_time,
            st.detail,
            frames=self.frames,
            skipped=self.skipped,
            reconnects=self.reconnects,
            errors=self.errors + self.corrupt,
        )

    # ---- decode thread --------------------------------------------------------------

    def _worker(self, worker: _Worker) -> None:
        """Supervisor of one decode thread: sessions, backoff between them, final status."""
        backoff = Backoff(self.cfg.backoff, self._rng)
        try:
            while not worker.stop.is_set():
                reason = self._attempt(worker, backoff)
                if reason is None or worker.stop.is_set():
                    return
                self.reconnects += 1
                if not reason:
                    continue  # a looping file starts again at once: not an error
                self.errors += 1
                backoff.interrupted()
                delay = backoff.next_delay()
                self.last_error = reason
                online = self._status.state is CameraState.ONLINE
                state = CameraState.RECONNECTING if online else CameraState.OFFLINE
                # "retry N": the N-th retry since the backoff last reset.
                detail = f"{reason}; retry {backoff.failures} in {delay:.1f} s"
                self._set_state(state, detail, worker.gen)
                worker.stop.wait(delay)
        finally:
            self._thread_ended(worker)
            if self._loop is not None and worker.ended is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(worker.ended.set)

    def _thread_ended(self, worker: _Worker) -> None:
        if worker.gen == self._gen:
            if self._mailbox is not None:
                self._mailbox.close()
            detail = "stopped" if worker.stop.is_set() else self.last_error
            self._set_state(CameraState.STOPPED, detail or "stopped", worker.gen)

    def _attempt(self, worker: _Worker, backoff: Backoff) -> str | None:
        """One session. None: the source is done; "": start again at once; else why it ended."""
        try:
            if self._session(worker, backoff):
                self.last_error = "end of file"
                return None
            if worker.stop.is_set():
                return None
            return "" if self.kind == "file" and worker.session_frames else "end of stream"
        except SessionEnded as end:
            self.stalls += end.stall
            return str(end)
        except av.error.ExitError:
            # The interrupt callback fired outside the read loop (stream probe).
            self.stalls += 1
            return "timed out"
        except (av.FFmpegError, OSError, MediaError, ConfigError, ReadError) as err:
            return redact(err)
        except Exception as err:  # supervisor loop: log, count, back off
            logger.exception("camera %s: unexpected error in decode thread", self.name)
            return f"internal error: {type(err).__name__}"

    def _session(self, worker: _Worker, backoff: Backoff) -> bool:
        """Open, decode until the stream ends or fails. True when a file finished."""
        url, fmt, options = demuxer_options(self.cfg)
        container = self._open_watched(worker, url, fmt, options)
        try:
            if not container.streams.video:
                raise SourceError(f"{self.safe_url}: no video stream")
            threads = self.cfg.decode_threads
            stream = open_stream(container, "AUTO" if threads > 1 else "NONE", threads)
            rate = stream.average_rate or stream.guessed_rate
            if self.cfg.fps is None and rate:
                self.fps = float(rate)
            stall_s = self.stall_timeout()
            limits = Limits(stall_s, self.cfg.max_corrupt_in_row, stall_s + self.cfg.wedge_s)
            worker.session_frames = 0
            corrupt_before = self.corrupt
            ended = decode_worker(
                container,
                stream,
                state=self.state,
                deliver=functools.partial(self._deliver, worker, backoff),
                stop=worker.stop,
                pace=self.kind == "file" and self.cfg.realtime,
                limits=limits,
                watch=worker.watch,
            )
            self._log_corrupt(corrupt_before)
            return ended and self.kind == "file" and not self.cfg.loop
        finally:
            with worker.watch.call("close", self.cfg.wedge_s), contextlib.suppress(Exception):
                container.close()

    def _open_watched(
        self, worker: _Worker, url: str, fmt: str | None, options: dict[str, str]
    ) -> Any:
        open_timeout = self.cfg.open_timeout_s
        t_open = time.monotonic()
        try:
            with worker.watch.call("open", 2 * open_timeout + self.cfg.wedge_s):
                return self._open(url, fmt, options, (open_timeout, READ_POLL_S))
        except av.FFmpegError as err:
            # FFmpeg reports an interrupted open as ExitError or, for RTSP, as invalid data.
            if isinstance(err, av.error.ExitError) or (
                time.monotonic() - t_open >= 0.9 * open_timeout
            ):
                raise SessionEnded(
                    f"open timed out after {open_timeout:.1f} s", stall=True
                ) from err
            raise

    def _open(
        self, url: str, fmt: str | None, options: dict[str, str], timeout: tuple[float, float]
    ) -> Any:
        """Open with hardware decoding when configured; fall back to the CPU for good."""
        hwaccel = None if self.hwaccel_failed else self.cfg.hwaccel
        try:
            return self._opener(url, format=fmt, options=options, timeout=timeout, hwaccel=hwaccel)
        except av.FFmpegError as err:
            if not hwaccel:
                raise
            # Either the device is unusable or the source is: a software open tells which.
            container = self._opener(
                url, format=fmt, options=options, timeout=timeout, hwaccel=None
            )
            self.hwaccel_failed = True
            logger.warning(
                "camera %s: hardware decoding (%s) unavailable (%s); decoding on the CPU",
                self.name,
                hwaccel,
                redact(err),
            )
            return container

    def _deliver(self, worker: _Worker, backoff: Backoff, frame: Frame) -> bool:
        """Hand one good frame to the pipeline (latest-frame-wins unless lossless)."""
        assert self._mailbox is not None
        worker.session_frames += 1
        if worker.session_frames == 1:
            self._set_state(CameraState.ONLINE, "", worker.gen)
        if backoff.healthy():
            logger.info("camera %s: healthy again, backoff reset", self.name)
        return self._mailbox.put(frame, generation=worker.gen)

    def _log_corrupt(self, before: int) -> None:
        now = self.corrupt
        if now > before and (before == 0 or now // CORRUPT_LOG_EVERY > before // CORRUPT_LOG_EVERY):
            logger.warning(
                "camera %s: %d corrupt packet(s)/frame(s) skipped so far (%s)",
                self.name,
                now,
                self.state.damage.where(),
            )


def build_sources(
    cameras: list[CameraConfig],
    bus: EventBus | None = None,
    *,
    opener: Opener | None = None,
    analysis_fps: float | None = None,
) -> list[LiveSource]:
    """One :class:`LiveSource` per configured camera (``analysis_fps``: the default
    analysis rate, the config's ``analysis.fps``), their analysis grids spread over a slot
    (camera ``i`` of ``n``: phase ``i / n``) so that their due frames do not all come at
    once."""
    n = len(cameras)
    return [
        LiveSource(
            cam, bus, opener=opener, analysis_fps=analysis_fps, grid_phase=spread_phase(i, n)
        )
        for i, cam in enumerate(cameras)
    ]
