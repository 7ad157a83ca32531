"""Recorded video files for replay: every frame, in order, decoded in a worker thread.

Decoding is :func:`~streamer.sources.decode.decode_worker`, the core live cameras use too,
and so is the hand-off: a :class:`~streamer.sources.mailbox.Mailbox`, here lossless with
room for ``queue_size`` frames: the decode thread runs ahead of the analysis by at most
that many frames and then waits (no frame is ever dropped).

A file that is missing, empty, a still image, not a video or has no decodable frame is a
:class:`~streamer.errors.MediaError` naming the file. Damaged frames (see
:mod:`streamer.sources.decode`) are never passed on: they are skipped, counted and located
in :attr:`FileSource.report`. A truncated file (it ends before the frames its container
announces) is an error unless ``skip_corrupt=True``, which keeps what did decode.

    async with FileSource(path) as src:
        async for frame in src:
            ...
    src.report  # FileReport: frames, skipped corrupt frames, where, truncation
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from streamer.errors import MailboxClosed, MediaError, ReadError
from streamer.messages import Frame
from streamer.sources.config import MAX_PIXELS
from streamer.sources.counters import SourceCounters
from streamer.sources.decode import (
    DamageReport,
    DecodeState,
    decode_worker,
    open_stream,
    video_stream,
)
from streamer.sources.mailbox import Mailbox
from streamer.sources.rate import AnalysisGrid

logger = logging.getLogger(__name__)

# Demuxers of still images: FFmpeg opens a JPEG or PNG as a one-frame "video".
STILL_IMAGE_FORMATS = ("image2", "_pipe")
# A file whose data ends more than this many frames before the count its container
# announces is truncated.
TRUNCATED_FRAMES = 2


def open_video(path: Path, max_pixels: int | None = None) -> Any:
    """Open a local media file that must hold a video stream; errors name the file.

    With ``max_pixels``, a video whose stream announces larger frames is refused (the
    decoder also skips any larger frame that comes later).
    """
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: not a readable video file ({err.strerror or err})") from err
    problem = ""
    if not container.streams.video:
        problem = "has no video stream"
    elif container.format.name.endswith(STILL_IMAGE_FORMATS):
        problem = f"is a still image ({container.streams.video[0].codec_context.name}), not a video"
    elif max_pixels is not None:
        ctx = max((s.codec_context for s in container.streams.video), key=_pixels)
        w, h = ctx.width, ctx.height
        if w * h > max_pixels:
            problem = (
                f"frames are {w}x{h} ({w * h:,} pixels), over the pixel cap of "
                f"{max_pixels:,} (--max-pixels)"
            )
    if problem:
        container.close()
        raise MediaError(f"{path}: {problem}")
    return container


def _pixels(ctx: Any) -> int:
    return int(ctx.width * ctx.height)


@dataclass
class FileReport:
    """How a file decoded: damage, where, and whether it ended early."""

    damage: DamageReport
    announced: int  # frames the container announces (0: unknown)
    seen: int  # pictures the decoder produced (good and skipped)
    truncated: str = ""  # why the file is considered truncated ("" when it is not)

    @property
    def missing(self) -> int:
        """Announced frames that never came out of the decoder."""
        return max(0, self.announced - self.seen - self.damage.bad_packets)

    @property
    def damaged(self) -> bool:
        return self.damage.damaged or bool(self.truncated)

    @property
    def clean(self) -> bool:
        """Nothing damaged, nothing missing: there is nothing to tell the user."""
        return not self.damaged and not self.missing

    def as_dict(self) -> dict[str, object]:
        return {
            "frames_announced": self.announced,
            "frames_decoded": self.damage.frames,
            **self.damage.as_dict(),
            "frames_missing": self.missing,
            "truncated": self.truncated or None,
        }

    def lines(self, path: Path) -> list[str]:
        """What to tell the user, one line each (empty for a clean file)."""
        out = []
        d = self.damage
        if d.corrupt_frames:
            out.append(f"{path}: skipped {d.corrupt_frames} corrupt frame(s): {d.where()}")
        if d.bad_packets:
            at = ", ".join(f"{t:.2f}" for t in d.bad_packet_t[:5])
            out.append(f"{path}: {d.bad_packets} undecodable packet(s) near {at} s")
        if self.truncated:
            out.append(f"{path}: {self.truncated}")
        elif self.missing:
            out.append(
                f"{path}: {self.missing} of {self.announced} frames announced by the "
                "container did not decode"
            )
        return out


def count_frames(path: Path) -> int:
    """Decode ``path`` and count its good frames (blocking; the decoder alone, for benches)."""
    return decode_count(path)[0]


def decode_count(
    path: Path, analysis_fps: float | None = None, skip_nonref: bool = True
) -> tuple[int, DecodeState]:
    """Decode ``path`` as a :class:`FileSource` at ``analysis_fps`` would (blocking; the
    decoder alone, for benches): the frames it would hand over (converted to BGR), and
    the decoding's counters (``skipped_by_rate``, ``not_decoded``)."""
    count = 0

    def keep(frame: Frame) -> bool:
        nonlocal count
        count += 1
        return True

    state = DecodeState("bench", grid=AnalysisGrid(analysis_fps), skip_nonref=skip_nonref)
    container = open_video(path)
    try:
        decode_worker(
            container,
            open_stream(container),
            state=state,
            deliver=keep,
            stop=threading.Event(),
        )
    finally:
        container.close()
    return count, state


class FileSource:
    """A recorded file as an async iterator of frames (bounded read-ahead, lossless).

    Args:
        path: the video file.
        camera: camera name in the frames (default: the file's stem).
        realtime: pace frames at their media time.
        queue_size: how many frames the decoder may run ahead.
        skip_corrupt: accept damage: a truncated file ends where its data ends instead
            of being an error (skipped frames are counted either way).
        analysis_fps: hand over at most this many frames per second of media time (the
            first of each slot, :mod:`streamer.sources.rate`); None: every frame.
        skip_nonref: leave undecoded the non-reference pictures that are sure to be off
            the analysis grid (only with ``analysis_fps``).
        max_pixels: frames larger than this are refused (announced) or skipped.
    """

    def __init__(
        self,
        path: str | Path,
        camera: str | None = None,
        *,
        realtime: bool = False,
        queue_size: int = 8,
        skip_corrupt: bool = False,
        analysis_fps: float | None = None,
        skip_nonref: bool = True,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.path = Path(path)
        self.camera = camera or self.path.stem
        self.realtime = realtime
        self.skip_corrupt = skip_corrupt
        self.state = DecodeState(
            self.camera,
            grid=AnalysisGrid(analysis_fps),
            skip_nonref=skip_nonref,
            max_pixels=max_pixels,
        )
        self.decode_stats: dict[str, float] = {"decode_s": 0.0}
        self.queue_size = queue_size
        self.delivered = 0  # frames handed to the analysis
        self._mailbox: Mailbox[Frame] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info: dict[str, float] = {}
        self._stream: Any = None
        self.report = FileReport(self.state.damage, 0, 0)

    @property
    def fps(self) -> float:
        return self._info.get("fps", 0.0)

    @property
    def frame_count(self) -> int:
        return int(self._info.get("frames", 0))

    async def __aenter__(self) -> FileSource:
        self._loop = asyncio.get_running_loop()
        self._mailbox = Mailbox(self._loop, lossless=True, capacity=self.queue_size)
        # Opened before the thread starts: a bad file fails before any output is produced.
        container = await asyncio.to_thread(open_video, self.path, self.state.max_pixels)
        s = video_stream(container, str(self.path))
        self._stream = s
        self._info = {"fps": float(s.average_rate or 0.0), "frames": float(s.frames or 0)}
        self.report.announced = int(s.frames or 0)
        self._thread = threading.Thread(
            target=self._decode_loop, args=(container,), name=f"decode-{self.camera}", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._mailbox is not None:
            self._mailbox.close()  # wakes a producer waiting for room
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    def _deliver(self, frame: Frame) -> bool:
        assert self._mailbox is not None
        self.decode_stats["decode_s"] = self.state.decode_s
        self.decode_stats["skipped_by_rate"] = self.state.skipped_by_rate
        return not self._stop.is_set() and self._mailbox.put(frame)

    def _decode_loop(self, container: Any) -> None:
        assert self._mailbox is not None
        try:
            stream = open_stream(container, stream=self._stream)
            try:
                ended = decode_worker(
                    container,
                    stream,
                    state=self.state,
                    deliver=self._deliver,
                    stop=self._stop,
                    pace=self.realtime,
                )
            except ReadError as err:
                ended, self.report.truncated = True, f"read error: {err}"
            if ended:
                self._finish()
            self._mailbox.close()
        except MediaError as err:
            self._mailbox.close(err)
        except Exception as err:  # supervisor of the decode thread: never die silently
            logger.exception("%s: decoder failed", self.path)
            self._mailbox.close(MediaError(f"{self.path}: decoder failed: {err}"))
        finally:
            self._mailbox.close()
            container.close()

    def _finish(self) -> None:
        """Judge the file once decoded: raises MediaError when nothing usable came out."""
        report = self.report
        report.seen = self.state.next_index
        self.decode_stats["decode_s"] = self.state.decode_s
        self.decode_stats["skipped_by_rate"] = self.state.skipped_by_rate
        packets = self.state.packets
        if not report.truncated and packets + TRUNCATED_FRAMES < report.announced:
            report.truncated = (
                f"truncated: the data ends after {packets} of {report.announced} frames "
                f"(at {max(self.state.last_t, 0.0):.2f} s)"
            )
        if report.damage.frames == 0:
            raise MediaError(f"{self.path}: no decodable video frame")
        if report.truncated and not self.skip_corrupt:
            raise MediaError(
                f"{self.path}: {report.truncated}; use --skip-corrupt to keep what decoded"
            )
        for line in report.lines(self.path):
            logger.warning("%s", line)

    def __aiter__(self) -> FileSource:
        return self

    async def __anext__(self) -> Frame:
        if self._mailbox is None:
            raise RuntimeError("use 'async with source:' before iterating")
        try:
            frame = await self._mailbox.get()
        except MailboxClosed:
            raise StopAsyncIteration from None
        self.delivered += 1
        return frame

    def counters(self) -> SourceCounters:
        """The counters the dashboard and ``/metrics`` show (frames handed to the analysis
        and skipped by rate, corrupt frames and undecodable packets skipped)."""
        damage = self.state.damage
        return SourceCounters(
            decoded=self.delivered + self.state.skipped_by_rate,
            corrupt=damage.corrupt_frames + damage.bad_packets,
            skipped_by_rate=self.state.skipped_by_rate,
        )


EXIT_CORRUPT = 3  # replay finished, but corrupt frames were skipped


def print_damage(console: Any, report: FileReport, path: Path, accept: bool) -> int:
    """Print where a replayed file was damaged (stderr); returns the exit code.

    0 for a clean file, for accepted damage (``--skip-corrupt``) and for frames the
    container announces that never came out of the decoder without any damage (an edit
    list drops some: nothing was skipped); :data:`EXIT_CORRUPT` when corrupt frames were
    skipped. The message names ``--skip-corrupt`` only as what it did or would do.
    """
    if report.clean:
        return 0
    d = report.damage
    if not report.damaged:
        console.print(
            f"{path}: {report.missing} of {report.announced} frames announced by the "
            "container did not decode; no frame was damaged or skipped: exit 0",
            markup=False,
            highlight=False,
        )
        return 0
    verdict = (
        "accepted with --skip-corrupt: exit 0"
        if accept
        else f"exit {EXIT_CORRUPT}; --skip-corrupt would accept it"
    )
    console.print(
        f"{path}: {d.corrupt_frames} corrupt frame(s) skipped ({d.where()}), "
        f"{d.bad_packets} undecodable packet(s), {report.missing} frame(s) missing"
        f"{', truncated' if report.truncated else ''}: {verdict}",
        markup=False,
        highlight=False,
    )
    return 0 if accept else EXIT_CORRUPT
