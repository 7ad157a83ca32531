"""Live video sources on PyAV: RTSP, HTTP(S)/HLS, V4L2 webcams, and files paced like cameras.

One :class:`LiveSource` per camera. Demuxing and decoding run in a worker thread that
owns the FFmpeg container; frames reach the asyncio pipeline through a one-slot,
latest-frame-wins :class:`~streamer.sources.mailbox.Mailbox`, so slow inference skips
frames (counted) instead of queueing them. The worker is its own supervisor::

    open (timeout=(open, read)) ──frames──▶ mailbox
      │   ▲                          │
      │   └── backoff (capped, jittered, reset after a healthy period)
      ▼                              │
    error / EOF / stall / N corrupt packets in a row ──▶ reconnecting | offline

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
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import av
import av.error

from streamer.backoff import Backoff
from streamer.bus import EventBus
from streamer.errors import ConfigError, MediaError, SourceError
from streamer.messages import CameraState, CameraStatus, Frame
from streamer.sources.config import CameraConfig
from streamer.sources.file import open_video
from streamer.sources.mailbox import Mailbox, MailboxClosed
from streamer.sources.redact import redact

logger = logging.getLogger(__name__)

STALL_MIN_FRAMES = 10  # a stall is never declared within fewer frame intervals than this
EAGAIN_RETRY_S = 0.005  # pause before re-reading after EAGAIN (seconds)
STOP_TIMEOUT_S = 3.0  # how long aclose() waits for the decode thread (seconds)
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


class _SessionEnded(Exception):
    """A stream session ended for a reason the supervisor reports and retries."""

    def __init__(self, reason: str, *, stall: bool = False) -> None:
        super().__init__(reason)
        self.stall = stall


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Counters of one source (monotonic over its lifetime)."""

    frames: int  # frames decoded and offered to the pipeline
    delivered: int  # frames the pipeline took
    skipped: int  # frames replaced in the mailbox before the pipeline took them
    reconnects: int  # reopen attempts after the first open
    stalls: int  # read timeouts and watchdog stalls
    corrupt: int  # packets that failed to decode and frames flagged corrupt
    eagain: int  # transient EAGAIN retries
    untimed: int  # packets without timestamps in a stream that had them
    errors: int  # failed opens and lost sessions


class LiveSource:
    """A camera (or a file played like one) as an async iterator of frames.

    Args:
        cfg: the camera's config.
        bus: where status changes are published (optional).
        opener: opens the container; tests inject faults by wrapping the real one.
        rng: random source for the backoff jitter.
    """

    def __init__(
        self,
        cfg: CameraConfig,
        bus: EventBus | None = None,
        *,
        opener: Opener | None = None,
        rng: random.Random | None = None,
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mailbox: Mailbox[Frame] | None = None
        self._status_lock = threading.Lock()
        self._status = CameraStatus(cfg.name, CameraState.STARTING, time.time())
        self.fps: float | None = cfg.fps
        self.hwaccel_failed = False  # set when cfg.hwaccel could not be used
        self.last_error = ""
        # Counters, written by the decode thread only.
        self.frames = 0
        self.reconnects = 0
        self.stalls = 0
        self.corrupt = 0
        self.eagain = 0
        self.untimed = 0
        self.errors = 0
        # Media-time bookkeeping across sessions (decode thread only).
        self._last_t = -1.0
        self._last_frame_mono: float | None = None
        self._session_frames = 0

    # ---- public state --------------------------------------------------------------

    @property
    def status(self) -> CameraStatus:
        """The current status with up-to-date counters."""
        with self._status_lock:
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

    @property
    def skipped(self) -> int:
        return self._mailbox.skipped if self._mailbox else 0

    def stats(self) -> SourceStats:
        """A snapshot of the counters."""
        delivered = self._mailbox.put_count - self._mailbox.skipped if self._mailbox else 0
        return SourceStats(
            frames=self.frames,
            delivered=delivered,
            skipped=self.skipped,
            reconnects=self.reconnects,
            stalls=self.stalls,
            corrupt=self.corrupt,
            eagain=self.eagain,
            untimed=self.untimed,
            errors=self.errors,
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
        return self._thread

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
        """Start the decode thread (from the event loop)."""
        if self._thread is not None:
            raise RuntimeError(f"source {self.name} already started")
        self._loop = asyncio.get_running_loop()
        lossless = self.kind == "file" and not self.cfg.realtime
        self._mailbox = Mailbox(self._loop, lossless=lossless)
        self._publish_status(self._status)
        self._thread = threading.Thread(
            target=self._worker, name=f"source-{self.name}", daemon=True
        )
        self._thread.start()

    async def aclose(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop decoding and wait (bounded) for the decode thread to exit."""
        self._stop.set()
        if self._mailbox is not None:
            self._mailbox.close()
        thread = self._thread
        if thread is not None:
            deadline = time.monotonic() + timeout_s
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if thread.is_alive():
                logger.warning(
                    "camera %s: decode thread still blocked in FFmpeg after %.1f s; it ends "
                    "at its read timeout",
                    self.name,
                    timeout_s,
                )
        await asyncio.sleep(0)  # let status callbacks queued by the thread reach the bus
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

    def _set_state(self, state: CameraState, detail: str = "") -> None:
        detail = redact(detail)
        with self._status_lock:
            if self._status.state is state and self._status.detail == detail:
                return
            if self._status.state is CameraState.STOPPED:
                return  # final
            changed = self._status.state is not state
            self._status = CameraStatus(self.name, state, time.time(), detail)
        if changed:
            log = (
                logger.info
                if state in (CameraState.ONLINE, CameraState.STOPPED)
                else (logger.warning)
            )
            log(
                "camera %s (%s): %s%s",
                self.name,
                self.safe_url,
                state.value,
                f": {detail}" if detail else "",
            )
        self._publish_status(self.status)

    # ---- decode thread --------------------------------------------------------------

    def _worker(self) -> None:
        backoff = Backoff(self.cfg.backoff, self._rng)
        attempt = 0
        try:
            while not self._stop.is_set():
                if attempt:
                    self.reconnects += 1
                attempt += 1
                try:
                    finished = self._session(backoff)
                    if finished:
                        self.last_error = "end of file"
                        return
                    if self._stop.is_set():
                        return
                    if self.kind == "file" and self._session_frames:
                        continue  # loop: start again at once, not an error
                    reason = "end of stream"
                    self.errors += 1
                except _SessionEnded as end:
                    reason = str(end)
                    self.errors += 1
                    if end.stall:
                        self.stalls += 1
                except av.error.ExitError:
                    # The interrupt callback fired outside the read loop (stream probe).
                    reason = "timed out"
                    self.errors += 1
                    self.stalls += 1
                except (av.FFmpegError, OSError, MediaError, ConfigError) as err:
                    reason = redact(err)
                    self.errors += 1
                except Exception as err:  # supervisor loop: log, count, back off
                    logger.exception("camera %s: unexpected error in decode thread", self.name)
                    reason = f"internal error: {type(err).__name__}"
                    self.errors += 1
                if self._stop.is_set():
                    return
                was_online = self._status.state is CameraState.ONLINE
                backoff.interrupted()
                delay = backoff.next_delay()
                self.last_error = reason
                state = CameraState.RECONNECTING if was_online else CameraState.OFFLINE
                self._set_state(state, f"{reason}; retry {attempt} in {delay:.1f} s")
                self._stop.wait(delay)
        finally:
            if self._mailbox is not None:
                self._mailbox.close()
            detail = "stopped" if self._stop.is_set() else self.last_error
            self._set_state(CameraState.STOPPED, detail or "stopped")

    def _session(self, backoff: Backoff) -> bool:
        """Open, decode until the stream ends or fails. True when a file finished."""
        url, fmt, options = demuxer_options(self.cfg)
        open_timeout = self.cfg.open_timeout_s
        t_open = time.monotonic()
        try:
            container = self._open(url, fmt, options, (open_timeout, READ_POLL_S))
        except av.FFmpegError as err:
            # FFmpeg reports an interrupted open as ExitError or, for RTSP, as invalid data.
            if isinstance(err, av.error.ExitError) or (
                time.monotonic() - t_open >= 0.9 * open_timeout
            ):
                raise _SessionEnded(
                    f"open timed out after {open_timeout:.1f} s", stall=True
                ) from err
            raise
        try:
            if not container.streams.video:
                raise SourceError(f"{self.safe_url}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            if self.cfg.fps is None and rate:
                self.fps = float(rate)
            stall_s = self.stall_timeout()
            self._decode_loop(container, stream, stall_s, backoff)
            return self.kind == "file" and not self.cfg.loop
        finally:
            with contextlib.suppress(Exception):
                container.close()

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

    def _packets(self, container: Any, stream: Any) -> Iterator[Any]:
        return iter(container.demux(stream))

    def _decode_loop(self, container: Any, stream: Any, stall_s: float, backoff: Backoff) -> None:
        assert self._mailbox is not None
        mailbox = self._mailbox
        time_base = stream.time_base
        packets = self._packets(container, stream)
        session_start = time.monotonic()
        last_progress = session_start
        corrupt_in_row = 0
        first_pts: int | None = None
        base_t = self._session_base_t()
        pace_wall0: float | None = None
        pace = self.kind == "file" and self.cfg.realtime
        session_frames = self._session_frames = 0
        timed_stream = False
        untimed_in_row = 0
        while not self._stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                return
            except BlockingIOError:
                # Devices (V4L2) may report EAGAIN when no frame is ready yet: retry soon.
                self.eagain += 1
                if time.monotonic() - last_progress > stall_s:
                    raise _SessionEnded(
                        f"no frame for {stall_s:.1f} s (EAGAIN)", stall=True
                    ) from None
                self._stop.wait(EAGAIN_RETRY_S)
                packets = self._packets(container, stream)
                continue
            except av.error.ExitError:
                # No packet within READ_POLL_S: the watchdog decides, the stream may go on.
                if time.monotonic() - last_progress > stall_s:
                    raise _SessionEnded(
                        f"no frame for {stall_s:.1f} s (read timed out)", stall=True
                    ) from None
                packets = self._packets(container, stream)
                continue
            if packet.size:
                if packet.pts is None and packet.dts is None:
                    if timed_stream:
                        # A stream that had timestamps lost them: broken muxing. Frames
                        # still decode (timed by the clock); a long run of it restarts.
                        self.untimed += 1
                        untimed_in_row += 1
                        if untimed_in_row >= self.cfg.max_corrupt_in_row:
                            raise _SessionEnded(
                                f"{untimed_in_row} packets without timestamps in a row"
                            )
                else:
                    timed_stream = True
                    untimed_in_row = 0
            bad_packet = bool(packet.is_corrupt)
            try:
                frames = [] if bad_packet else packet.decode()
            except av.error.EOFError:
                return
            except av.FFmpegError:
                # The decoder rejected the packet (corrupt bitstream): skip it.
                bad_packet = True
                frames = []
            if bad_packet:
                corrupt_in_row += 1
                self._count_corrupt()
                if corrupt_in_row >= self.cfg.max_corrupt_in_row:
                    raise _SessionEnded(f"{corrupt_in_row} corrupt packets in a row")
            for vframe in frames:
                if vframe.is_corrupt:
                    # Error-concealed picture: do not feed garbage to the face detector.
                    corrupt_in_row += 1
                    self._count_corrupt()
                    continue
                corrupt_in_row = 0
                now = time.monotonic()
                last_progress = now
                pts = vframe.pts
                if pts is not None and first_pts is None:
                    first_pts = pts
                if pts is not None and first_pts is not None:
                    t = base_t + float((pts - first_pts) * time_base)
                else:
                    t = base_t + (now - session_start)
                if t <= self._last_t:
                    # Media time never goes backwards (timestamp resets, bad pts).
                    t = self._last_t + 1e-3
                if pace:
                    if pace_wall0 is None:
                        pace_wall0 = now - (t - base_t)
                    delay = pace_wall0 + (t - base_t) - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                image = vframe.to_ndarray(format="bgr24")
                frame = Frame(self.name, self.frames, t, image, wall_time=time.time())
                self._last_t = t
                self._last_frame_mono = time.monotonic()
                self.frames += 1
                session_frames += 1
                self._session_frames = session_frames
                if session_frames == 1:
                    self._set_state(CameraState.ONLINE, "")
                if backoff.healthy(now):
                    logger.info("camera %s: healthy again, backoff reset", self.name)
                if not mailbox.put(frame):
                    return
            if time.monotonic() - last_progress > stall_s:
                raise _SessionEnded(f"no decoded frame for {stall_s:.1f} s", stall=True)

    def _session_base_t(self) -> float:
        """Media time of a new session's first frame: continues across reconnects."""
        if self._last_frame_mono is None:
            return 0.0
        gap = max(time.monotonic() - self._last_frame_mono, 1e-3)
        return self._last_t + gap

    def _count_corrupt(self) -> None:
        self.corrupt += 1
        if self.corrupt == 1 or self.corrupt % CORRUPT_LOG_EVERY == 0:
            logger.warning(
                "camera %s: %d corrupt packet(s)/frame(s) skipped so far", self.name, self.corrupt
            )


def build_sources(
    cameras: list[CameraConfig],
    bus: EventBus | None = None,
    *,
    opener: Opener | None = None,
) -> list[LiveSource]:
    """One :class:`LiveSource` per configured camera."""
    return [LiveSource(cam, bus, opener=opener) for cam in cameras]
