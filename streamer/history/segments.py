"""Packed minutes of VA bins and room moods: how the bulk of the history stays small.

A camera with three faces makes 259,200 one-second VA bins a day; a row per bin would
cost about 15 MB a camera-day in SQLite (more in PostgreSQL). So each track's bins of
one segment (:data:`SEGMENT_S` seconds of wall time) share one row whose ``data`` is a
packed, compressed block, and likewise each camera's moods of a segment. A segment row
is rewritten (upserted) at each commit while it fills, so a crash loses at most the
last commit interval, as for any other row.

Block layout (little endian), after a version byte ``1``, zlib-compressed, column by
column (so similar values sit together and compress):

* VA: ``k`` bins: ``slot`` u16 (bin index within the segment), ``n`` u16 (samples),
  ``valence mean, min, max`` and ``arousal mean, min, max`` as i16 (value x 32767).
* mood: ``k`` entries: ``offset`` u16 (ms from the segment start), ``t`` f8 (media
  seconds), ``frame`` u32, ``count`` u16, ``quadrant`` u8 (:data:`QUADRANTS`),
  ``valence, arousal, valence_spread, arousal_spread`` as i16 (x 32767; -32768 = null).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.errors import HistoryError

SEGMENT_S = 60  # wall seconds of one segment row
FORMAT = 1  # the version byte of a block
SCALE = 32767.0  # VA units -> i16
NULL = -32768  # i16 of a null VA value
QUADRANTS = ("none", "neutral", "excited", "tense", "sad", "calm")
_QUADRANT_CODE = {q: i for i, q in enumerate(QUADRANTS)}
_VA_COLUMNS = (
    ("slot", "<u2"),
    ("n", "<u2"),
    ("valence_mean", "<i2"),
    ("valence_min", "<i2"),
    ("valence_max", "<i2"),
    ("arousal_mean", "<i2"),
    ("arousal_min", "<i2"),
    ("arousal_max", "<i2"),
)
_MOOD_COLUMNS = (
    ("offset_ms", "<u2"),
    ("t", "<f8"),
    ("frame", "<u4"),
    ("count", "<u2"),
    ("quadrant", "u1"),
    ("valence", "<i2"),
    ("arousal", "<i2"),
    ("valence_spread", "<i2"),
    ("arousal_spread", "<i2"),
)


def _q(x: float) -> int:
    return round(max(-1.0, min(1.0, x)) * SCALE)


def _uq(x: int) -> float:
    return round(int(x) / SCALE, 4)


def _pack(columns: tuple[tuple[str, str], ...], values: dict[str, list[float]]) -> bytes:
    parts = [np.asarray(values[name], dtype=dtype).tobytes() for name, dtype in columns]
    return bytes([FORMAT]) + zlib.compress(b"".join(parts), 6)


def _unpack(columns: tuple[tuple[str, str], ...], blob: bytes, what: str) -> dict[str, np.ndarray]:
    if not blob or blob[0] != FORMAT:
        raise HistoryError(f"a {what} block of an unknown format ({blob[:1]!r})")
    try:
        raw = zlib.decompress(blob[1:])
    except zlib.error as err:
        raise HistoryError(f"a damaged {what} block: {err}") from err
    width = sum(np.dtype(dtype).itemsize for _, dtype in columns)
    if len(raw) % width:
        raise HistoryError(f"a damaged {what} block: {len(raw)} bytes")
    k = len(raw) // width
    out: dict[str, np.ndarray] = {}
    at = 0
    for name, dtype in columns:
        size = np.dtype(dtype).itemsize * k
        out[name] = np.frombuffer(raw, dtype=dtype, count=k, offset=at)
        at += size
    return out


def segment_start(wall: float) -> float:
    """The start (wall seconds) of the segment holding ``wall``."""
    return float(math.floor(wall / SEGMENT_S) * SEGMENT_S)


@dataclass
class VASegment:
    """One track's VA bins within one segment, filled sample by sample.

    Attributes:
        start: wall seconds of the segment's start.
        bin_s: width of a bin (1 / va_hz).
        bins: per bin index, [n, v sum, v min, v max, a sum, a min, a max].
    """

    start: float
    bin_s: float
    bins: dict[int, list[float]] = field(default_factory=dict)

    def add(self, wall: float, valence: float, arousal: float) -> None:
        slot = min(int((wall - self.start) / self.bin_s), 65535)
        acc = self.bins.get(slot)
        if acc is None:
            self.bins[slot] = [1, valence, valence, valence, arousal, arousal, arousal]
            return
        acc[0] += 1
        acc[1] += valence
        acc[4] += arousal
        if valence < acc[2]:
            acc[2] = valence
        elif valence > acc[3]:
            acc[3] = valence
        if arousal < acc[5]:
            acc[5] = arousal
        elif arousal > acc[6]:
            acc[6] = arousal

    def summary(self) -> tuple[int, int, float, float]:
        """(bins, samples, mean valence, mean arousal) over the segment."""
        n = sum(int(b[0]) for b in self.bins.values())
        v = sum(b[1] for b in self.bins.values())
        a = sum(b[4] for b in self.bins.values())
        return len(self.bins), n, v / max(n, 1), a / max(n, 1)

    def pack(self) -> bytes:
        slots = sorted(self.bins)
        cols: dict[str, list[float]] = {name: [] for name, _ in _VA_COLUMNS}
        for slot in slots:
            n, vs, vmin, vmax, as_, amin, amax = self.bins[slot]
            cols["slot"].append(slot)
            cols["n"].append(min(int(n), 65535))
            cols["valence_mean"].append(_q(vs / n))
            cols["valence_min"].append(_q(vmin))
            cols["valence_max"].append(_q(vmax))
            cols["arousal_mean"].append(_q(as_ / n))
            cols["arousal_min"].append(_q(amin))
            cols["arousal_max"].append(_q(amax))
        return _pack(_VA_COLUMNS, cols)


@dataclass(frozen=True, slots=True)
class VABin:
    """One bin as read back: its start (wall seconds), samples, mean/min/max of each."""

    start: float
    n: int
    valence: tuple[float, float, float]
    arousal: tuple[float, float, float]


def unpack_va(start: float, bin_s: float, blob: bytes) -> list[VABin]:
    """The bins of a VA segment row."""
    c = _unpack(_VA_COLUMNS, blob, "VA")
    return [
        VABin(
            start + int(c["slot"][i]) * bin_s,
            int(c["n"][i]),
            (_uq(c["valence_mean"][i]), _uq(c["valence_min"][i]), _uq(c["valence_max"][i])),
            (_uq(c["arousal_mean"][i]), _uq(c["arousal_min"][i]), _uq(c["arousal_max"][i])),
        )
        for i in range(len(c["slot"]))
    ]


@dataclass
class MoodSegment:
    """One camera's moods within one segment."""

    start: float
    entries: list[tuple[Any, ...]] = field(default_factory=list)

    def add(
        self,
        wall: float,
        t: float,
        frame: int,
        count: int,
        quadrant: str,
        va: tuple[float | None, float | None, float | None, float | None],
    ) -> None:
        self.entries.append((wall, t, frame, count, quadrant, *va))

    def pack(self) -> bytes:
        cols: dict[str, list[float]] = {name: [] for name, _ in _MOOD_COLUMNS}
        for wall, t, frame, count, quadrant, *va in self.entries:
            cols["offset_ms"].append(min(65535, max(0, round((wall - self.start) * 1000))))
            cols["t"].append(t)
            cols["frame"].append(min(max(int(frame), 0), 2**32 - 1))
            cols["count"].append(min(int(count), 65535))
            cols["quadrant"].append(_QUADRANT_CODE.get(str(quadrant), 0))
            for name, x in zip(
                ("valence", "arousal", "valence_spread", "arousal_spread"), va, strict=True
            ):
                cols[name].append(NULL if x is None else _q(float(x)))
        return _pack(_MOOD_COLUMNS, cols)


@dataclass(frozen=True, slots=True)
class MoodEntry:
    """One room mood as read back."""

    wall: float
    t: float
    frame: int
    count: int
    quadrant: str
    valence: float | None
    arousal: float | None
    valence_spread: float | None
    arousal_spread: float | None


def unpack_mood(start: float, blob: bytes) -> list[MoodEntry]:
    """The moods of a mood segment row."""
    c = _unpack(_MOOD_COLUMNS, blob, "mood")

    def opt(x: int) -> float | None:
        return None if int(x) == NULL else _uq(int(x))

    out = []
    for i in range(len(c["t"])):
        code = int(c["quadrant"][i])
        out.append(
            MoodEntry(
                round(start + int(c["offset_ms"][i]) / 1000.0, 3),
                float(c["t"][i]),
                int(c["frame"][i]),
                int(c["count"][i]),
                QUADRANTS[code] if code < len(QUADRANTS) else "none",
                opt(c["valence"][i]),
                opt(c["arousal"][i]),
                opt(c["valence_spread"][i]),
                opt(c["arousal_spread"][i]),
            )
        )
    return out
