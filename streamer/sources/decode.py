"""One decoding core for files and cameras: packet pump, media time, damaged frames.

:func:`decode_worker` is the only place where packets are read, decoded, timed and judged;
:class:`~streamer.sources.file.FileSource` (replay) and
:class:`~streamer.sources.live.LiveSource` (cameras, files played like cameras) both run
it in their decode thread. What differs between them is passed in: the hand-off of a good
frame (``deliver``: a bounded lossless queue, or a latest-frame-wins mailbox), pacing
(``pace``), and the limits that end a session (``stall_s``, ``max_bad_in_row``).

Damaged frames. FFmpeg conceals decoding errors and flags the concealed picture
(``frame.is_corrupt``), but the pictures predicted from it carry the damage on unflagged
until the next keyframe (checked against a clean decode of the same clip). With
``err_detect=explode`` a detected bitstream error fails the packet instead of being
concealed. So a packet that fails to decode or a flagged picture taints every picture
from there to the next clean keyframe, and the B-frames shown before it but decoded after
it (they are held back until the next reference picture is out, then judged). Tainted
pictures are skipped and counted, with where they were (:class:`DamageReport`). Damage
that FFmpeg does not detect (a flipped bit in residual data may decode without error)
cannot be seen here: containers carry no checksum of the picture data.

Orientation and size. A picture is handed on as the viewer sees it: the stream's display
rotation (a phone clip stored sideways with a display matrix) is applied before anything
else sees the pixels (:func:`upright`, quarter turns as FFmpeg's own autorotation; a flip
in the matrix is not applied). A picture larger than the pixel cap (``max_pixels``, the
same cap ``streamer predict`` applies to images) is never converted: it is skipped and
counted as damage. Of several video streams the main one is used (the largest pictures
that are not cover art or thumbnails: :func:`video_stream`), and the log says which.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from streamer.errors import ReadError, SessionEnded
from streamer.messages import Frame
from streamer.sources.config import MAX_PIXELS
from streamer.sources.rate import AnalysisGrid

logger = logging.getLogger(__name__)

# Decoder options: detected bitstream errors fail the packet instead of being concealed.
DECODER_OPTIONS = {"err_detect": "explode"}
EAGAIN_RETRY_S = 0.005  # pause before re-reading after EAGAIN (seconds)
MAX_SPANS = 100  # runs of skipped pictures whose place a damage report keeps
HOLD_MAX = 32  # never hold more pictures than this waiting for their reference (frames)
_B_PICTURE = 3  # AVPictureType B


@dataclass
class DamageSpan:
    """A run of consecutive pictures not passed on (frame indices and media times)."""

    first_frame: int
    last_frame: int
    first_t: float
    last_t: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "from_frame": self.first_frame,
            "to_frame": self.last_frame,
            "from_t": round(self.first_t, 6),
            "to_t": round(self.last_t, 6),
        }


@dataclass
class DamageReport:
    """Counters of one source's damaged data, and where it was.

    Where is kept for the first :data:`MAX_SPANS` runs of skipped pictures and the first
    100 rejected packets; the counts go on: a live camera sending damaged packets for
    months holds bounded memory.
    """

    frames: int = 0  # pictures passed on as good
    corrupt_frames: int = 0  # pictures skipped: flagged by FFmpeg or predicted from damage
    bad_packets: int = 0  # packets the decoder rejected (no picture came out)
    bad_packet_t: list[float] = field(default_factory=list)  # their media times (first 100)
    spans: list[DamageSpan] = field(default_factory=list)  # the first MAX_SPANS runs
    span_count: int = 0  # runs of skipped pictures, all of them
    _last_skipped: int = field(default=-2, repr=False)

    def skip(self, index: int, t: float) -> None:
        self.corrupt_frames += 1
        if self.span_count and self._last_skipped == index - 1:
            if len(self.spans) == self.span_count:  # the run being extended is kept
                last = self.spans[-1]
                last.last_frame, last.last_t = index, t
        else:
            self.span_count += 1
            if len(self.spans) < MAX_SPANS:
                self.spans.append(DamageSpan(index, index, t, t))
        self._last_skipped = index

    def bad_packet(self, t: float) -> None:
        self.bad_packets += 1
        if len(self.bad_packet_t) < 100:
            self.bad_packet_t.append(round(t, 6))

    @property
    def damaged(self) -> bool:
        return bool(self.corrupt_frames or self.bad_packets)

    def where(self, limit: int = 5) -> str:
        """Human-readable places of the damage: ``frames 33-71 (1.10-2.37 s), ...``."""
        parts = [
            f"frames {s.first_frame}-{s.last_frame} ({s.first_t:.2f}-{s.last_t:.2f} s)"
            for s in self.spans[:limit]
        ]
        if self.span_count > limit:
            parts.append(f"{self.span_count - limit} more")
        return ", ".join(parts) or "no picture"

    def as_dict(self) -> dict[str, object]:
        return {
            "corrupt_frames_skipped": self.corrupt_frames,
            "undecodable_packets": self.bad_packets,
            "undecodable_packet_t": self.bad_packet_t,
            "skipped_spans": [s.as_dict() for s in self.spans],
            "skipped_span_count": self.span_count,
        }


@dataclass
class DecodeState:
    """What one source carries from session to session: media time, frame index, counters.

    Args:
        camera: name put in every :class:`~streamer.messages.Frame`.
        wall_untimed: time frames without timestamps by the wall clock (live streams) rather
            than by the frame rate (files).
        grid: which good frames are analysed (the camera's analysis rate); the others
            are counted in ``skipped_by_rate`` and never handed over.
        skip_nonref: pass packets whose non-reference picture is sure to be off the grid
            to the decoder with ``skip_frame = NONREF`` (not decoded at all).
    """

    camera: str
    wall_untimed: bool = False
    grid: AnalysisGrid = field(default_factory=lambda: AnalysisGrid(None))
    skip_nonref: bool = True
    next_index: int = 0  # index of the next picture (good or skipped)
    last_t: float = -1.0
    last_mono: float | None = None  # monotonic time of the last picture
    packets: int = 0  # video packets read (with data)
    untimed: int = 0  # packets without timestamps in a stream that had them
    eagain: int = 0
    decode_s: float = 0.0
    damage: DamageReport = field(default_factory=DamageReport)
    skipped_by_rate: int = 0  # good frames off the analysis grid (never handed over)
    not_decoded: int = 0  # of those, non-reference pictures the decoder skipped

    @property
    def pictures(self) -> int:
        """Good pictures of the stream: decoded, or passed over undecoded by rate."""
        return self.damage.frames + self.not_decoded

    max_pixels: int = MAX_PIXELS  # larger pictures are skipped (counted as damage)
    oversize: int = 0  # pictures skipped for their size


class CallWatch:
    """What FFmpeg call the decode thread is in, since when, and its bound (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._call: tuple[str, float, float] | None = None  # (what, since, bound_s)

    @contextlib.contextmanager
    def call(self, what: str, bound_s: float) -> Iterator[None]:
        with self._lock:
            self._call = (what, time.monotonic(), bound_s)
        try:
            yield
        finally:
            with self._lock:
                self._call = None

    def current(self) -> str | None:
        """The FFmpeg call the thread is in now (``open``, ``read``, ...), or None."""
        with self._lock:
            return self._call[0] if self._call is not None else None

    def overdue(self, now: float | None = None) -> tuple[str, float] | None:
        """``(what, seconds in it)`` when the current call has run past its bound."""
        now = time.monotonic() if now is None else now
        with self._lock:
            call = self._call
        if call is None:
            return None
        what, since, bound_s = call
        return (what, now - since) if now - since > bound_s else None


class MediaClock:
    """Media time of a session's pictures: ``base_t + (pts - origin) * time_base``.

    ``origin`` is the stream's start time (or the first picture's pts); a session after a
    reconnect starts at the previous session's last time plus the wall-clock gap. Time
    never goes backwards. Pictures without a pts are timed by the frame rate (files) or
    the wall clock (live streams).
    """

    def __init__(self, stream: Any, state: DecodeState) -> None:
        self.state = state
        self.time_base: Fraction | None = stream.time_base
        self.origin: int | None = stream.start_time
        rate = stream.average_rate or stream.guessed_rate
        self.frame_s = 1.0 / float(rate) if rate else 0.0
        self.session_mono = time.monotonic()
        if state.last_mono is None:
            self.base_t = 0.0
        else:
            self.base_t = state.last_t + max(self.session_mono - state.last_mono, 1e-3)

    def t(self, pts: int | None) -> float:
        state = self.state
        if pts is not None and self.time_base:
            if self.origin is None:
                self.origin = pts
            t = self.base_t + float((pts - self.origin) * self.time_base)
        elif state.wall_untimed or not self.frame_s:
            t = self.base_t + (time.monotonic() - self.session_mono)
        else:
            t = max(state.last_t, self.base_t - self.frame_s) + self.frame_s
        if t <= state.last_t:
            t = state.last_t + 1e-3
        state.last_t = t
        state.last_mono = time.monotonic()
        return t


class DamagePolicy:
    """Judges decoded pictures: passes on only those no detected damage reaches."""

    def __init__(self) -> None:
        self.tainted = False
        self.bad_in_row = 0  # rejected packets and flagged pictures since the last good one
        self._held: deque[tuple[Any, bool]] = deque()

    def packet_failed(self) -> None:
        self._taint()
        self.bad_in_row += 1

    def _taint(self) -> None:
        self.tainted = True
        self._held = deque((vf, False) for vf, _ in self._held)

    def add(self, vf: Any) -> list[tuple[Any, bool]]:
        """Take one decoded picture; returns the pictures now judged, ``(frame, good)``."""
        if vf.is_corrupt:
            self._taint()
            self.bad_in_row += 1
        elif vf.key_frame:
            self.tainted = False
        self._held.append((vf, not self.tainted))
        if vf.pict_type == _B_PICTURE and len(self._held) < HOLD_MAX:
            return []  # a B-picture's later reference may still turn out damaged
        judged = list(self._held)
        self._held.clear()
        if judged[-1][1]:
            self.bad_in_row = 0
        return judged

    def flush(self) -> list[tuple[Any, bool]]:
        judged = list(self._held)
        self._held.clear()
        return judged


@dataclass(frozen=True)
class Limits:
    """What ends a session early (None: never)."""

    stall_s: float | None = None  # no good picture for this long (seconds)
    max_bad_in_row: int | None = None  # this many rejected packets / flagged pictures
    call_bound_s: float = 3600.0  # bound of one read or decode call for the watchdog (s)


def decode_worker(
    container: Any,
    stream: Any,
    *,
    state: DecodeState,
    deliver: Callable[[Frame], bool],
    stop: threading.Event,
    pace: bool = False,
    limits: Limits = Limits(),
    watch: CallWatch | None = None,
) -> bool:
    """Decode ``stream`` of ``container`` and hand every good picture to ``deliver``.

    Runs in the source's decode thread (blocking). Returns True at the end of the stream,
    False when ``stop`` was set or ``deliver`` refused a frame (the consumer is gone).

    Raises:
        SessionEnded: a stall or a run of bad packets (``limits``).
        ReadError: the demuxer failed mid-stream.
    """
    pump = _Pump(container, stream, state, stop, limits, watch or CallWatch())
    policy = DamagePolicy()
    clock = MediaClock(stream, state)
    pacer = _Pacer(stop) if pace else None
    skipper = _NonRefSkipper(stream, state, clock)
    bgr = VideoReformatter()
    for packet in pump:
        skipper.before(packet)
        with pump.watch.call("decode", limits.call_bound_s):
            pictures = pump.decode(packet, policy, clock)
        skipper.after()
        if stop.is_set():
            return False  # stopped (or abandoned) while in FFmpeg: touch nothing more
        for vf, good in [judged for p in pictures for judged in policy.add(p)]:
            if not _hand_over(vf, good, state, clock, pacer, deliver, bgr):
                return False
            pump.progress(good)
        if limits.max_bad_in_row and policy.bad_in_row >= limits.max_bad_in_row:
            raise SessionEnded(f"{policy.bad_in_row} corrupt packets in a row")
    if stop.is_set():
        return False
    for vf, good in policy.flush():
        if not _hand_over(vf, good, state, clock, pacer, deliver, bgr):
            return False
    if pump.finished:
        _passed_over(state, state.grid.discarded_before(None))
    return pump.finished


def _hand_over(
    vf: Any,
    good: bool,
    state: DecodeState,
    clock: MediaClock,
    pacer: _Pacer | None,
    deliver: Callable[[Frame], bool],
    bgr: VideoReformatter,
) -> bool:
    """Time one judged picture; deliver it when good and on the analysis grid (converted
    by ``bgr``), else record where it was (damage) or count it (off the grid)."""
    if vf.pts is not None and state.grid.pending:
        _passed_over(state, state.grid.discarded_before(vf.pts))
    index = state.next_index
    state.next_index += 1
    t = clock.t(vf.pts)
    if not good:
        state.damage.skip(index, t)
        return True
    if not state.grid.due(t):
        state.damage.frames += 1
        state.skipped_by_rate += 1
        return True
    if pacer is not None and not pacer.wait(t):
        return False
    if vf.width * vf.height > state.max_pixels:  # never converted: a size bomb costs nothing
        state.oversize += 1
        if state.oversize == 1:
            logger.warning(
                "%s: picture %d is %dx%d, over the pixel cap of %d: skipped (counted as damage)",
                state.camera,
                index,
                vf.width,
                vf.height,
                state.max_pixels,
            )
        state.damage.skip(index, t)
        return True
    t0 = time.perf_counter()
    image = upright(vf, bgr)
    state.decode_s += time.perf_counter() - t0
    state.damage.frames += 1
    return deliver(Frame(state.camera, index, t, image, wall_time=time.time()))


def _passed_over(state: DecodeState, n: int) -> None:
    """``n`` pictures the decoder discarded (``skip_frame``): off the grid, not decoded;
    they keep their frame indices."""
    if n:
        state.next_index += n
        state.skipped_by_rate += n
        state.not_decoded += n


class _NonRefSkipper:
    """Sets ``skip_frame`` packet by packet: NONREF for a packet whose picture is sure to
    be off the analysis grid, DEFAULT for every other (see :mod:`streamer.sources.rate`)."""

    def __init__(self, stream: Any, state: DecodeState, clock: MediaClock) -> None:
        self.grid = state.grid
        self.damage = state.damage
        self.clock = clock
        self.active = state.skip_nonref and not self.grid.every_frame
        self.ctx: Any = stream.codec_context if self.active else None
        self.skipping = False
        self.pts: int | None = None
        self.bad = 0
        self.grid.new_session()  # stamps of an earlier session mean nothing in this one

    def before(self, packet: Any) -> None:
        if not self.active:
            return
        clock = self.clock
        skip = False
        self.pts = packet.pts
        if packet.pts is not None and packet.size and clock.time_base and clock.origin is not None:
            t = clock.base_t + float((packet.pts - clock.origin) * clock.time_base)
            skip = self.grid.packet_off_grid(packet.pts, t)
        if skip != self.skipping:
            self.ctx.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip
        if not skip:
            self.pts = None
        self.bad = self.damage.bad_packets

    def after(self) -> None:
        """The packet went through the decoder: its picture, if discarded, is pending."""
        if self.pts is not None and self.damage.bad_packets == self.bad:
            self.grid.sent_nonref(self.pts)
        self.pts = None


class _Pacer:
    """Waits until a picture's media time is due (files played like cameras)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.wall0: float | None = None
        self.t0 = 0.0

    def wait(self, t: float) -> bool:
        now = time.monotonic()
        if self.wall0 is None:
            self.wall0, self.t0 = now, t
        delay = self.wall0 + (t - self.t0) - now
        return not (delay > 0 and self.stop.wait(delay))


class _Pump:
    """The packet pump: reads packets, retries transient errors, watches for stalls."""

    def __init__(
        self,
        container: Any,
        stream: Any,
        state: DecodeState,
        stop: threading.Event,
        limits: Limits,
        watch: CallWatch,
    ) -> None:
        self.container, self.stream, self.state = container, stream, state
        self.stop, self.limits, self.watch = stop, limits, watch
        self.packets = iter(container.demux(stream))
        self.last_good = time.monotonic()
        self.timed_stream = False
        self.untimed_in_row = 0
        self.finished = False

    def progress(self, good: bool) -> None:
        if good:
            self.last_good = time.monotonic()

    def _stalled(self, why: str) -> None:
        stall_s = self.limits.stall_s
        if stall_s is not None and time.monotonic() - self.last_good > stall_s:
            raise SessionEnded(f"no frame for {stall_s:.1f} s ({why})", stall=True)

    def __iter__(self) -> Iterator[Any]:
        while not self.stop.is_set():
            packet = self._read()
            if packet is None or self.stop.is_set():
                continue
            if packet is _END:
                self.finished = True
                return
            self._check_timestamps(packet)
            yield packet
            self._stalled("no decoded frame")

    def _read(self) -> Any:
        try:
            with self.watch.call("read", self.limits.call_bound_s):
                return next(self.packets)
        except StopIteration:
            return _END
        except BlockingIOError:
            # Devices (V4L2) may report EAGAIN when no frame is ready yet: retry soon.
            self.state.eagain += 1
            self._stalled("EAGAIN")
            self.stop.wait(EAGAIN_RETRY_S)
        except av.error.ExitError:
            # No packet within the read timeout: the stall watchdog decides.
            self._stalled("read timed out")
        except av.error.EOFError:
            return _END
        except av.FFmpegError as err:
            raise ReadError(max(self.state.last_t, 0.0), err) from err
        self.packets = iter(self.container.demux(self.stream))
        return None

    def _check_timestamps(self, packet: Any) -> None:
        if not packet.size:
            return
        self.state.packets += 1
        if packet.pts is not None or packet.dts is not None:
            self.timed_stream, self.untimed_in_row = True, 0
        elif self.timed_stream:
            # A stream that had timestamps lost them: broken muxing. Frames still decode
            # (timed by the clock); a long run of it ends the session.
            self.state.untimed += 1
            self.untimed_in_row += 1
            limit = self.limits.max_bad_in_row
            if limit and self.untimed_in_row >= limit:
                raise SessionEnded(f"{self.untimed_in_row} packets without timestamps in a row")

    def decode(self, packet: Any, policy: DamagePolicy, clock: MediaClock) -> list[Any]:
        if packet.is_corrupt:
            return self._failed(packet, policy, clock)
        try:
            return list(packet.decode())
        except av.error.EOFError:
            return []
        except av.FFmpegError:
            return self._failed(packet, policy, clock)

    def _failed(self, packet: Any, policy: DamagePolicy, clock: MediaClock) -> list[Any]:
        policy.packet_failed()
        t = self.state.last_t
        if packet.pts is not None and clock.time_base and clock.origin is not None:
            t = clock.base_t + float((packet.pts - clock.origin) * clock.time_base)
        self.state.damage.bad_packet(max(t, 0.0))
        return []


_END = object()


_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def quarter_turns(vf: Any) -> int:
    """Counter-clockwise quarter turns that show ``vf`` upright (its display matrix;
    0 without one). An angle between quarter turns is rounded to the nearest."""
    try:
        degrees = vf.rotation
    except (AttributeError, ValueError):  # no side data, or a matrix PyAV cannot read
        return 0
    return round(float(degrees or 0) / 90) % 4


def upright(vf: Any, reformatter: VideoReformatter) -> np.ndarray:
    """A decoded picture as BGR uint8 (H, W, 3), turned as the viewer sees it.

    ``reformatter`` is the caller's own, one per decode session. PyAV's
    ``to_ndarray(format=...)`` keeps one per thread in a ``threading.local`` (since
    18.1.1); a process forked while such a thread lives frees it in the child, where
    its swscale worker threads are not, and the child waits for them forever.
    """
    image: np.ndarray = reformatter.reformat(vf, format="bgr24").to_ndarray()
    turns = quarter_turns(vf)
    return cv2.rotate(image, _TURNS[turns]) if turns else image


_NOT_VIDEO = ("attached_pic", "still_image", "timed_thumbnails")  # cover art, thumbnails


def video_stream(container: Any, what: str = "") -> Any:
    """The main video stream: of the streams that are not cover art or thumbnails, the
    one with the largest pictures (of equal sizes the first). When there are several,
    one log line says which is used.

    Raises:
        IndexError: no video stream.
    """
    streams = list(container.streams.video)
    if not streams:
        raise IndexError("no video stream")

    def is_video(s: Any) -> bool:
        return not any(s.disposition & getattr(av.stream.Disposition, d) for d in _NOT_VIDEO)

    candidates = [s for s in streams if is_video(s)] or streams
    best = max(candidates, key=lambda s: s.codec_context.width * s.codec_context.height)
    if len(streams) > 1:
        logger.info(
            "%s: %d video streams; analysing stream #%d (%s %dx%d), the largest",
            what or container.name,
            len(streams),
            best.index,
            best.codec_context.name,
            best.codec_context.width,
            best.codec_context.height,
        )
    return best


def open_stream(container: Any, threads: str = "AUTO", count: int = 0, stream: Any = None) -> Any:
    """The video stream of ``container`` (``stream``, else :func:`video_stream`), set up
    for decoding.

    Args:
        container: the open input.
        threads: FFmpeg thread type: ``AUTO`` (frame and slice threads: decoding overlaps
            itself, the most frames per second, a few frames of latency), ``NONE``.
        count: decoder threads (0: FFmpeg picks, about the CPU count).
    """
    stream = stream if stream is not None else video_stream(container)
    stream.thread_type = threads
    stream.thread_count = count
    with contextlib.suppress(Exception):  # a codec without these options decodes as is
        stream.codec_context.options = {**stream.codec_context.options, **DECODER_OPTIONS}
    return stream
