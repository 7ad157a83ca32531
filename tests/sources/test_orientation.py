"""Video as the viewer sees it: display rotation, several video streams, the pixel cap.

Issue 21, point 8 (a phone clip stored sideways with a display matrix was analysed
sideways: mean valence 0.297 against 0.533 upright, boxes in the raw orientation) and
point 11 (a second video stream dropped without a word; one pixel cap for videos and
images). The clips are built here with PyAV from the real single-face clip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from streamer.config import AppConfig
from streamer.errors import MediaError
from streamer.messages import Frame
from streamer.runtime.replay import ReplayOptions, run_replay
from streamer.sources.config import MAX_PIXELS, CameraConfig
from streamer.sources.file import FileSource
from streamer.sources.live import LiveSource

FRAMES = 24  # of the real clip: the face is there from the start

# The turn that stores an upright picture sideways, for a display rotation (degrees).
_STORE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, -90: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _encode(out: Any, stream: Any, picture: np.ndarray, like: av.VideoFrame) -> None:
    nf = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture, np.uint8), format="bgr24")
    nf.pts, nf.time_base = like.pts, like.time_base
    for p in stream.encode(nf.reformat(format="yuv420p")):
        out.mux(p)


def _h264(out: Any, rate: Any, width: int, height: int) -> Any:
    stream = out.add_stream("libx264", rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "12"}
    return stream


def write_clip(
    src: Path, dst: Path, rotation: int = 0, extra_stream: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """Re-encode the first FRAMES of ``src``: stored turned by ``rotation`` with a display
    matrix that shows it upright (as a phone does); optionally a second, first-listed
    video stream of size ``extra_stream`` (a small preview track). Returns the upright
    pictures of the source."""
    upright: list[np.ndarray] = []
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        small = _h264(out, ist.average_rate, *extra_stream) if extra_stream else None
        main = None
        for vf in inp.decode(ist):
            if len(upright) == FRAMES:
                break
            img = vf.to_ndarray(format="bgr24")
            upright.append(img)
            stored = cv2.rotate(img, _STORE[rotation]) if rotation else img
            if main is None:
                main = _h264(out, ist.average_rate, stored.shape[1], stored.shape[0])
                if rotation:
                    main.set_display_rotation(rotation)
            _encode(out, main, stored, vf)
            if small is not None:
                _encode(out, small, cv2.resize(img, (small.width, small.height)), vf)
        for stream in (main, small):
            for p in stream.encode(None) if stream is not None else []:
                out.mux(p)
    return upright


async def replay_frames(path: Path, **kw: object) -> list[Frame]:
    async with FileSource(path, "cam", **kw) as src:  # type: ignore[arg-type]
        return [f async for f in src]


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("rotation", [90, 180, -90])
async def test_frames_are_turned_upright_in_replay_and_live(
    rotation: int, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    clip = tmp_path / f"phone{rotation}.mp4"
    upright = write_clip(store_path("single_face.mp4"), clip, rotation)
    with av.open(str(clip)) as c:
        raw = next(c.decode(video=0))
    assert raw.rotation % 360 == rotation % 360  # stored sideways, shown upright
    if rotation != 180:
        assert (raw.height, raw.width) != upright[0].shape[:2]
    frames = await replay_frames(clip)
    cfg = CameraConfig(name="cam", url=str(clip), realtime=False)
    async with LiveSource(cfg) as cam:
        played = [f async for f in cam]
    for got in (frames, played):
        assert len(got) == FRAMES
        assert got[0].image.shape == upright[0].shape
        # Re-encoding costs a few grey levels; a wrong turn costs tens.
        assert max(_diff(f.image, u) for f, u in zip(got, upright, strict=True)) < 6


async def test_a_sideways_phone_clip_is_analysed_as_the_viewer_sees_it(
    models: None, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    """Boxes, t and VA of the rotated clip match those of the same clip stored upright."""
    src = store_path("single_face.mp4")
    plain, phone = tmp_path / "plain.mp4", tmp_path / "phone.mp4"
    write_clip(src, plain)
    write_clip(src, phone, 90)
    results = []
    for clip in (plain, phone):
        out = tmp_path / f"{clip.stem}.jsonl"
        await run_replay(AppConfig(), clip, ReplayOptions(camera="cam", out=out))
        import json

        recs = [json.loads(line) for line in out.read_text().splitlines()]
        results.append([r for r in recs if r["schema"] == "streamer.va/1"])
    upright, turned = results
    assert len(upright) == len(turned) > FRAMES // 2
    assert [r["t"] for r in upright] == [r["t"] for r in turned]
    for a, b in zip(upright, turned, strict=True):
        assert np.allclose(a["box"], b["box"], atol=6.0), (a["box"], b["box"])
    mean = [float(np.mean([r["valence"] for r in rs])) for rs in results]
    assert abs(mean[0] - mean[1]) < 0.05, mean


def test_annotated_video_is_upright(
    models: None, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    from streamer.cli import main

    phone = tmp_path / "phone.mp4"
    upright = write_clip(store_path("single_face.mp4"), phone, 90)
    out = tmp_path / "annotated.mp4"
    assert main(["-q", "replay", str(phone), "--annotate", str(out), "--out", "/dev/null"]) == 0
    with av.open(str(out)) as c:
        first = next(c.decode(video=0))
        assert first.rotation == 0
        image = first.to_ndarray(format="bgr24")
    assert image.shape == upright[0].shape
    # Boxes and bars are drawn on top; the picture underneath is the upright one.
    assert _diff(image, upright[0]) < _diff(image, cv2.rotate(upright[0], cv2.ROTATE_180))


async def test_of_several_video_streams_the_main_one_is_used_and_said(
    store_path: Callable[[str], Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A small preview track listed first was the one analysed, without a word."""
    clip = tmp_path / "two_streams.mp4"
    upright = write_clip(store_path("single_face.mp4"), clip, extra_stream=(160, 90))
    with av.open(str(clip)) as c:
        assert [s.width for s in c.streams.video] == [160, 640]
    caplog.set_level(logging.INFO, logger="streamer.sources")
    frames = await replay_frames(clip)
    assert frames[0].image.shape == upright[0].shape
    said = [r.getMessage() for r in caplog.records if "video streams" in r.getMessage()]
    assert said and "2 video streams; analysing stream #1 (h264 640x360), the largest" in said[0]


# ------------------------------------------------------------- one pixel cap (point 11)


async def test_frames_over_the_pixel_cap_are_refused_by_name(
    store_path: Callable[[str], Path],
) -> None:
    path = store_path("single_face.mp4")
    with pytest.raises(MediaError) as exc:
        await replay_frames(path, max_pixels=100_000)
    assert str(exc.value) == (
        f"{path}: frames are 640x360 (230,400 pixels), over the pixel cap of 100,000 (--max-pixels)"
    )
    assert len(await replay_frames(path, max_pixels=MAX_PIXELS)) > 50


def test_replay_and_predict_share_one_pixel_cap() -> None:
    """An 8000x8000 single-frame video was fine but predict on the same pixels was not."""
    from streamer.cli import build_parser

    assert MAX_PIXELS >= 8000 * 8000
    for argv in (["replay", "x.mp4"], ["predict", "x.jpg"]):
        assert build_parser(argv).parse_args(argv).max_pixels == MAX_PIXELS
    assert CameraConfig(name="c", url="x").max_pixels == MAX_PIXELS
