"""Annotated video: faces boxed in a colour stable per track, with id, VA bars and label.

The pipeline never carries pixels on the bus, so annotation is done in two steps:

1. :class:`AnnotationRecorder` subscribes to the bus (lossless, numbers and text only)
   and keeps, per frame index, the boxes and smoothed VA of the tracks seen there, plus
   every description with its media time;
2. :func:`write_annotated` decodes the input file again, draws those numbers onto each
   frame and re-encodes it with PyAV (H.264, same size, same frame count, same
   timestamps).

The JSONL output of the run is untouched (the recorder is one more bus subscriber).
:func:`draw_overlays` is shared with the dashboard's preview snapshots.
"""

from __future__ import annotations

import bisect
import colorsys
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from streamer.bus import Subscription
from streamer.errors import ConfigError, MediaError
from streamer.messages import Description, Message, VASample
from streamer.output import OutputFile
from streamer.sources.decode import upright, video_stream
from streamer.sources.file import open_video

logger = logging.getLogger(__name__)

GOLDEN_RATIO = 0.618033988749895
BAR_H_PX = 6  # height of one VA bar
LABEL_MAX_CHARS = 40  # a description is cut to this many characters on the frame
FONT = cv2.FONT_HERSHEY_SIMPLEX
ENCODE_CRF = "20"  # x264 quality: visually lossless outside the drawings


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright BGR colour, the same for a track id in every run and every view."""
    hue = (track_id * GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def track_colour_hex(track_id: int) -> str:
    b, g, r = track_colour(track_id)
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True, slots=True)
class FaceOverlay:
    """What is drawn for one face in one frame.

    Attributes:
        track_id: the track's id (its colour follows from it).
        box: (x1, y1, x2, y2) pixels.
        valence: smoothed valence in [-1, 1].
        arousal: smoothed arousal in [-1, 1].
        label: the latest description or category, or "".
    """

    track_id: int
    box: tuple[float, float, float, float]
    valence: float
    arousal: float
    label: str = ""


def _bar(image: np.ndarray, x: int, y: int, w: int, value: float, colour: tuple[int, ...]) -> None:
    """A horizontal bar centred at zero: filled right for positive, left for negative."""
    cv2.rectangle(image, (x, y), (x + w, y + BAR_H_PX), (40, 40, 40), -1)
    mid = x + w // 2
    end = round(mid + value * (w // 2))
    cv2.rectangle(image, (min(mid, end), y + 1), (max(mid, end), y + BAR_H_PX - 1), colour, -1)
    cv2.line(image, (mid, y), (mid, y + BAR_H_PX), (255, 255, 255), 1)


def _text(
    image: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, ...]
) -> None:
    cv2.putText(image, text, org, FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, FONT, scale, colour, 1, cv2.LINE_AA)


def _fit(text: str, scale: float, width_px: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width_px`` at font ``scale``."""
    if cv2.getTextSize(text, FONT, scale, 1)[0][0] <= width_px:
        return text
    while text and cv2.getTextSize(text + "...", FONT, scale, 1)[0][0] > width_px:
        text = text[:-1]
    return text.rstrip() + "..."


def draw_overlays(image: np.ndarray, faces: list[FaceOverlay]) -> np.ndarray:
    """Draw ``faces`` onto ``image`` in place and return it.

    Args:
        image: BGR uint8 array of shape (H, W, 3).
        faces: one overlay per face.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    for face in faces:
        colour = track_colour(face.track_id)
        x1, y1, x2, y2 = (round(v) for v in face.box)
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        if x2 <= x1 or y2 <= y1:
            continue
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        scale = max(0.35, min(0.6, (x2 - x1) / 250))
        _text(image, f"#{face.track_id}", (x1 + 3, max(12, y1 - 5)), scale, colour)
        bar_w = max(24, (x2 - x1) - 18)
        bx = x1 + 14
        by = min(h - 2 * BAR_H_PX - 4, y2 + 4)
        _text(image, "V", (x1, by + BAR_H_PX), 0.3, (255, 255, 255))
        _bar(image, bx, by, bar_w, face.valence, colour)
        _text(image, "A", (x1, by + 2 * BAR_H_PX + 2), 0.3, (255, 255, 255))
        _bar(image, bx, by + BAR_H_PX + 2, bar_w, face.arousal, colour)
        if face.label:
            text = _fit(face.label[:LABEL_MAX_CHARS], scale * 0.8, max(x2 - x1 - 6, 60))
            _text(image, text, (x1 + 3, min(h - 2, y1 + 16)), scale * 0.8, (255, 255, 255))
    return image


def description_label(desc: Description) -> str:
    """The text shown for a description: its free text, else its categories."""
    return desc.text.strip() or ", ".join([desc.basic, *desc.complex])


ROWS_PER_CHUNK = 8192  # VA samples collected before they are packed into an array


class AnnotationRecorder:
    """Collects, from the bus, what :func:`write_annotated` draws (numbers and text only).

    Give it a lossless subscription made before the pipeline starts publishing
    (accepting :meth:`accept`) and run :meth:`consume` on it as a task. VA samples are
    packed into float64 arrays of (frame, track, x1, y1, x2, y2, valence, arousal, t),
    72 bytes each: an hour of video with five faces at 30 fps takes about 40 MB.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[float, ...]] = []
        self._chunks: list[np.ndarray] = []
        self._table: np.ndarray | None = None  # (N, 9), sorted by frame
        self._cameras: dict[int, str] = {}  # per track (a replay has one camera)
        # per (camera, track): media times and labels of its descriptions, in time order
        self._desc_t: dict[tuple[str, int], list[float]] = {}
        self._desc: dict[tuple[str, int], list[str]] = {}

    def add(self, msg: Message) -> None:
        if isinstance(msg, VASample):
            self._rows.append((msg.frame, msg.track_id, *msg.box, msg.valence, msg.arousal, msg.t))
            self._cameras.setdefault(msg.track_id, msg.camera)
            self._table = None
            if len(self._rows) >= ROWS_PER_CHUNK:
                self._chunks.append(np.asarray(self._rows, np.float64))
                self._rows.clear()
        elif isinstance(msg, Description):
            key = (msg.camera, msg.track_id)
            times = self._desc_t.setdefault(key, [])
            labels = self._desc.setdefault(key, [])
            i = bisect.bisect_right(times, msg.t)
            # an LLM update of the same moment replaces the fallback shown before it
            if i and times[i - 1] == msg.t:
                labels[i - 1] = description_label(msg)
            else:
                times.insert(i, msg.t)
                labels.insert(i, description_label(msg))

    @staticmethod
    def accept(msg: Message) -> bool:
        """What it records: VA samples and descriptions."""
        return isinstance(msg, VASample | Description)

    async def consume(self, sub: Subscription) -> None:
        async for msg in sub:
            self.add(msg)

    def label(self, camera: str, track_id: int, t: float) -> str:
        """The latest description of a track at media time ``t``, or ""."""
        key = (camera, track_id)
        times = self._desc_t.get(key)
        if not times:
            return ""
        i = bisect.bisect_right(times, t + 1e-9)
        return self._desc[key][i - 1] if i else ""

    def _rows_table(self) -> np.ndarray:
        if self._table is None:
            parts = [*self._chunks]
            if self._rows:
                parts.append(np.asarray(self._rows, np.float64))
            table = np.concatenate(parts) if parts else np.empty((0, 9), np.float64)
            self._table = table[np.argsort(table[:, 0], kind="stable")]
        return self._table

    def overlays(self, frame_index: int) -> list[FaceOverlay]:
        """What to draw on frame ``frame_index`` (0-based decode order)."""
        table = self._rows_table()
        lo, hi = np.searchsorted(table[:, 0], [frame_index, frame_index + 1])
        out = []
        for row in table[lo:hi]:
            track = int(row[1])
            box = (float(row[2]), float(row[3]), float(row[4]), float(row[5]))
            label = self.label(self._cameras[track], track, float(row[8]))
            out.append(FaceOverlay(track, box, float(row[6]), float(row[7]), label))
        return out


FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # suffix -> FFmpeg muxer


def annotate_output(video: Path, out: Path, *, others: tuple[Path, ...] = ()) -> OutputFile:
    """The ``--annotate`` output, checked before any work (see :mod:`streamer.output`).

    Raises:
        OutputError: the path is the input video, a directory, or cannot be written.
        ConfigError: the name's suffix is not .mp4, .mkv or .mov.
    """
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--annotate {out}: expected a .mp4, .mkv or .mov file name")
    output = OutputFile(out, flag="--annotate", inputs=[video, *others])
    output.check()
    return output


class OutputClock:
    """Strictly increasing presentation times for the encoder, in the input's time base.

    A decoded picture keeps its own pts when it is later than the previous one; a picture
    without a pts, or whose pts repeats or goes back, is placed one frame duration (one
    tick at least) after the previous. Only the annotated file's timestamps are fixed up:
    the replay's records keep their media time ``t`` as decoded.

    Args:
        step: one frame's duration in time-base ticks (at least 1).
    """

    def __init__(self, step: int) -> None:
        self.step = max(1, step)
        self.last: int | None = None
        self.fixed = 0  # pictures whose pts was missing or out of order

    def pts(self, pts: int | None) -> int:
        if self.last is None:
            out = pts if pts is not None else 0
        elif pts is not None and pts > self.last:
            out = pts
        else:
            out = self.last + (self.step if pts is None else 1)
            self.fixed += 1
        self.last = out
        return out


def _frame_step(stream: Any) -> int:
    """One frame's duration in ``stream``'s time-base ticks (from its frame rate)."""
    rate, tb = stream.average_rate or stream.guessed_rate, stream.time_base
    if not rate or not tb:
        return 1
    return max(1, round(1 / (float(rate) * float(tb))))


def write_annotated(
    video: Path,
    out: Path | OutputFile,
    overlays: Callable[[int], list[FaceOverlay]],
    *,
    on_frame: Callable[[int], None] | None = None,
) -> int:
    """Decode ``video``, draw ``overlays(frame_index)`` on each frame, encode H.264 to ``out``.

    Frame indices count decoded frames from 0, as the replay source does, so the
    overlays of frame k land on frame k. Size and timestamps are kept (a missing,
    repeated or backward timestamp is fixed up: :class:`OutputClock`). ``out`` follows
    the output rule of :mod:`streamer.output` (a regular file is replaced atomically, a
    device or FIFO written in place).

    Returns:
        The number of frames written.

    Raises:
        OutputError: the output cannot be written (full disk, refused path).
        MediaError: FFmpeg failed to encode or mux.
    """
    output = out if isinstance(out, OutputFile) else OutputFile(out)
    fmt = FORMATS.get(output.path.suffix.lower(), "mp4")
    options = {}
    if not output.atomic and fmt in ("mp4", "mov"):
        # written in place to a FIFO or device, which may not seek back to the header
        options["movflags"] = "frag_keyframe+empty_moov"
    n = 0
    with output.writing_path() as target:
        try:
            n = _encode(video, target, fmt, options, overlays, on_frame)
        except av.error.FFmpegError as err:
            if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
                raise output.error(err) from err
            raise MediaError(f"{output.label}: cannot write the annotated video: {err}") from err
    logger.info("annotated video: %s (%d frames)", output.path, n)
    return n


_WRITE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EPIPE, errno.EROFS}


def _encode(
    video: Path,
    target: Path,
    fmt: str,
    options: dict[str, str],
    overlays: Callable[[int], list[FaceOverlay]],
    on_frame: Callable[[int], None] | None,
) -> int:
    n = 0
    with (
        open_video(video) as inp,
        av.open(str(target), mode="w", format=fmt, options=options) as dst,
    ):
        istream = video_stream(inp)
        istream.thread_type = "AUTO"
        ostream: Any = None  # made at the first picture: its size is the upright one
        clock = OutputClock(_frame_step(istream))
        reformatter = VideoReformatter()  # ours, not PyAV's per-thread one (see upright)
        for packet in inp.demux(istream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                # the replay reported (and skipped) the damage; draw what decodes
                continue
            for vf in frames:
                image = upright(vf, reformatter)  # as the replay analysed it: boxes line up
                if ostream is None:
                    ostream = dst.add_stream("libx264", rate=istream.average_rate or 30)
                    ostream.width, ostream.height = image.shape[1], image.shape[0]
                    ostream.pix_fmt = "yuv420p"
                    # The encoder counts in the input's time base: a coarser one (1 / frame
                    # rate) would round two close timestamps of a variable-rate file onto one.
                    ostream.codec_context.time_base = istream.time_base
                    ostream.time_base = istream.time_base
                    ostream.options = {"crf": ENCODE_CRF, "preset": "veryfast"}
                draw_overlays(image, overlays(n))
                nf = av.VideoFrame.from_ndarray(image, format="bgr24")
                nf.pts = clock.pts(vf.pts)
                nf.time_base = istream.time_base
                for p in ostream.encode(reformatter.reformat(nf, format="yuv420p")):
                    dst.mux(p)
                n += 1
                if on_frame is not None:
                    on_frame(n)
        if ostream is None:
            raise MediaError(f"{video}: no decodable video frame to annotate")
        for p in ostream.encode(None):
            dst.mux(p)
    if clock.fixed:
        logger.info(
            "%s: %d frame(s) without an increasing timestamp; placed after the previous "
            "frame in the annotated video",
            video,
            clock.fixed,
        )
    return n
