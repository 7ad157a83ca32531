"""The one decoding core: replay and cameras time frames alike; damaged frames never pass."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.errors import MediaError
from streamer.messages import Frame
from streamer.sources.config import CameraConfig
from streamer.sources.decode import MAX_SPANS, DamageReport
from streamer.sources.file import FileSource
from streamer.sources.live import LiveSource


def flip_bytes(src: Path, dst: Path, share: float, seed: int = 0, where: float = 0.5) -> Path:
    """Copy ``src`` with ``share`` of its bytes bit-flipped around ``where`` (seeded)."""
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    n = max(1, int(len(data) * share))
    span = min(len(data), n * 20)
    lo = max(0, min(len(data) - span, int(len(data) * where) - span // 2))
    for _ in range(n):
        i = rng.randrange(lo, lo + span)
        data[i] ^= 1 << rng.randrange(8)
    dst.write_bytes(bytes(data))
    return dst


async def replay_frames(path: Path, **kw: object) -> tuple[list[Frame], FileSource]:
    src = FileSource(path, "cam", **kw)  # type: ignore[arg-type]
    async with src:
        return [f async for f in src], src


async def camera_frames(path: Path) -> list[Frame]:
    cfg = CameraConfig(name="cam", url=str(path), realtime=False)
    async with LiveSource(cfg) as src:
        return [f async for f in src]


def clean_pictures(path: Path) -> dict[int, np.ndarray]:
    """pts -> picture of a plain PyAV decode (no policy)."""
    with av.open(str(path)) as c:
        return {int(f.pts or 0): f.to_ndarray(format="bgr24") for f in c.decode(video=0)}


@pytest.mark.parametrize("name", ["single_face.mp4", "face_noface.mov", "no_face.mp4"])
async def test_replay_and_a_file_camera_give_the_same_t(
    name: str, store_path: Callable[[str], Path]
) -> None:
    path = store_path(name)
    replayed, _ = await replay_frames(path)
    played = await camera_frames(path)
    assert len(replayed) > 50
    assert [(f.index, f.t) for f in played] == [(f.index, f.t) for f in replayed]


async def test_same_t_on_a_damaged_file(store_path: Callable[[str], Path], tmp_path: Path) -> None:
    bad = flip_bytes(store_path("single_face.mp4"), tmp_path / "bad.mp4", 0.001)
    replayed, _ = await replay_frames(bad)
    played = await camera_frames(bad)
    assert replayed and [(f.index, f.t) for f in played] == [(f.index, f.t) for f in replayed]


@pytest.mark.parametrize("share", [0.001, 0.01])
async def test_damaged_frames_are_skipped_counted_and_located(
    share: float, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    """Every frame passed on is pixel-identical to the clean decode; the rest is reported."""
    clean_path = store_path("single_face.mp4")
    bad = flip_bytes(clean_path, tmp_path / "bad.mp4", share)
    frames, src = await replay_frames(bad)
    clean = await replay_frames(clean_path)
    clean_by_t = {f.t: f.image for f in clean[0]}
    assert frames, "the frames before the damage are still delivered"
    for f in frames:
        assert np.array_equal(f.image, clean_by_t[f.t]), f"frame {f.index} passed on damaged"
    report = src.report
    assert report.damaged
    assert report.damage.corrupt_frames + report.damage.bad_packets > 0
    skipped = {i for s in report.damage.spans for i in range(s.first_frame, s.last_frame + 1)}
    assert skipped and not skipped & {f.index for f in frames}
    # Nothing lost without a word: good + skipped + rejected + missing = announced.
    assert (
        len(frames) + report.damage.corrupt_frames + report.damage.bad_packets + report.missing
        == report.announced
    )


async def test_damage_flagged_frames_would_pass_without_the_policy(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    """The point of the policy: a plain decode of the damaged file passes damaged pictures."""
    clean_path = store_path("single_face.mp4")
    bad = flip_bytes(clean_path, tmp_path / "bad.mp4", 0.001)
    clean, plain = clean_pictures(clean_path), clean_pictures(bad)
    unflagged_damage = [p for p, img in plain.items() if not np.array_equal(img, clean[p])]
    assert len(unflagged_damage) > 10  # FFmpeg flags only a few of them itself
    frames, _ = await replay_frames(bad)
    assert len(frames) < len(plain) - len(unflagged_damage) + 1


async def test_a_jpeg_named_mp4_is_not_a_video(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    fake = tmp_path / "photo.mp4"
    fake.write_bytes(store_path("single_face.jpg").read_bytes())
    with pytest.raises(MediaError, match="still image"):
        await replay_frames(fake)


def test_damage_report_keeps_bounded_places_and_exact_counts() -> None:
    """A camera sending damaged packets for months: the places of the first runs of
    skipped pictures are kept, the counts go on, memory stays bounded."""
    report = DamageReport()
    for run in range(MAX_SPANS * 10):
        first = run * 10
        for index in range(first, first + 3):  # a run of three skipped pictures
            report.skip(index, index / 30.0)
    assert len(report.spans) == MAX_SPANS
    assert report.span_count == MAX_SPANS * 10
    assert report.corrupt_frames == MAX_SPANS * 30
    assert (report.spans[-1].first_frame, report.spans[-1].last_frame) == (990, 992)
    assert report.where(limit=2).endswith(f"{MAX_SPANS * 10 - 2} more")
    assert report.as_dict()["skipped_span_count"] == MAX_SPANS * 10
