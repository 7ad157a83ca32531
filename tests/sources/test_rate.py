"""The analysis rate: which frames a source hands over, in media time, and skip_frame.

A source at ``analysis_fps`` hands over the first good frame of each ``1/fps`` slot of
media time, keeps every frame's index and time as a full decode gives them, and counts
the rest as skipped by rate. Leaving non-reference pictures undecoded (``skip_frame``)
must change nothing of what is handed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.sources.config import CameraConfig
from streamer.sources.file import FileSource, decode_count
from streamer.sources.live import build_sources
from streamer.sources.rate import AnalysisGrid
from streamer.testing.sources import corrupt_packets, make_clip


def _due(grid: AnalysisGrid, times: list[float]) -> list[int]:
    return [i for i, t in enumerate(times) if grid.due(t)]


@pytest.mark.parametrize(
    ("fps", "rate", "expected"),
    [
        (15.0, 5.0, [0, 3, 6, 9, 12]),  # every third frame
        (30.0, 10.0, [0, 3, 6, 9, 12]),
        (30000 / 1001, 5.0, [0, 6, 12]),  # NTSC: slots start just before frames 6, 12
        (24.0, 5.0, [0, 5, 10]),  # 24 / 5: a frame at or after each 0.2 s
        (15.0, 15.0, list(range(15))),  # the camera's own rate: every frame
        (15.0, 30.0, list(range(15))),  # faster than the camera: every frame
    ],
)
def test_the_first_frame_of_each_slot_is_due(fps: float, rate: float, expected: list[int]) -> None:
    times = [k / fps for k in range(15)]
    assert _due(AnalysisGrid(rate), times) == expected


def test_a_frame_a_rounding_error_before_its_slot_belongs_to_it() -> None:
    # 0.6 s computed as 3 * 0.2 is 0.6000000000000001; 0.3 * 2 = 0.6; 0.1 * 6 = 0.6000000000000001
    grid = AnalysisGrid(5.0)
    assert grid.due(0.0) and not grid.due(0.1) and grid.due(0.19999999999) and grid.due(0.4)


def test_without_a_rate_every_frame_is_due_and_a_bad_rate_is_refused() -> None:
    grid = AnalysisGrid(None)
    assert grid.every_frame and all(grid.due(t) for t in (0.0, 0.0, 0.01))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="analysis fps"):
            AnalysisGrid(bad)


def test_a_phase_shifts_the_slots_and_keeps_one_frame_per_slot() -> None:
    times = [k / 15 for k in range(15)]
    # Slots start at 0.1, 0.3, 0.5, ...: frame 0 is in the slot before the first.
    assert _due(AnalysisGrid(5.0, phase=0.5), times) == [0, 2, 5, 8, 11, 14]
    assert _due(AnalysisGrid(5.0, phase=1 / 3), times) == [0, 1, 4, 7, 10, 13]
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="phase"):
            AnalysisGrid(5.0, phase=bad)


def test_cameras_started_together_spread_their_analysis_over_each_slot() -> None:
    # Cameras whose media clocks start together would otherwise all have the same frame
    # due, and queue for the analysis at once (32 cameras at 5 fps: p95 179 ms, not 52).
    cams = [CameraConfig(name=f"cam{i}", url=f"rtsp://127.0.0.1/{i}") for i in range(3)]
    sources = build_sources(cams, analysis_fps=5.0)
    times = [k / 15 for k in range(30)]  # a 15 fps camera, 2 s
    due = [[k for k in _due(src.state.grid, times) if k >= 3] for src in sources]
    assert [len(d) for d in due] == [9, 9, 9]  # each still analyses 5 frames a second
    # ... at different frames, 1/15 s apart across the 0.2 s slot
    assert [{k % 3 for k in d} for d in due] == [{0}, {1}, {2}]
    one = build_sources(cams[:1], analysis_fps=5.0)[0]
    assert one.state.grid.phase == 0.0  # a single camera keeps the replay's grid


def test_a_gap_in_media_time_makes_the_next_frame_due() -> None:
    grid = AnalysisGrid(5.0)
    assert grid.due(0.0) and not grid.due(0.05)
    assert grid.due(7.31)  # a reconnect: media time jumps ahead
    assert not grid.due(7.35) and grid.due(7.4)


def test_only_a_later_picture_of_a_slot_is_ever_off_the_grid() -> None:
    grid = AnalysisGrid(5.0)
    # Decode order of I0 P3 B1 B2 at 15 fps (pts in frames): slot 0 holds 0, 1, 2.
    assert not grid.packet_off_grid(0, 0.0)
    assert not grid.packet_off_grid(3, 0.2)  # the first of slot 1
    assert grid.packet_off_grid(1, 1 / 15) and grid.packet_off_grid(2, 2 / 15)
    # A B-picture shown before the slot's first packet read is its earliest: decoded.
    assert not grid.packet_off_grid(6, 0.4 + 1 / 15) and not grid.packet_off_grid(5, 0.4 - 1e-9)


def test_pictures_the_decoder_dropped_are_counted_where_they_were() -> None:
    grid = AnalysisGrid(5.0)
    for pts in (2, 1, 5):
        grid.sent_nonref(pts)
    assert grid.discarded_before(1) == 0  # pts 1 came out: it was a reference picture
    assert grid.discarded_before(3) == 1  # pts 2 never came out before 3
    assert grid.discarded_before(None) == 1  # pts 5, at the end of the stream


async def _frames(path: Path, **kw: object) -> tuple[list[tuple[int, float, int]], FileSource]:
    out = []
    async with FileSource(path, **kw) as src:  # type: ignore[arg-type]
        async for f in src:
            out.append((f.index, f.t, int(f.image[::8, ::8].sum())))
    return out, src


@pytest.mark.parametrize("rate", [5.0, 12.0])
def test_a_file_at_a_rate_hands_over_the_due_frames_of_a_full_decode(
    store_path: Callable[[str], Path], rate: float
) -> None:
    video = store_path("single_face.mp4")  # H.264 with B-frames, 30 fps
    full, _ = asyncio.run(_frames(video))
    grid = AnalysisGrid(rate)
    expected = [f for f in full if grid.due(f[1])]
    got, src = asyncio.run(_frames(video, analysis_fps=rate))
    # Same frames, same indices, times and pixels: non-reference pictures left undecoded
    # changed nothing.
    assert got == expected
    assert src.state.not_decoded > 0, "single_face.mp4 has non-reference B-pictures"
    counters = src.counters()
    assert counters.skipped_by_rate == len(full) - len(got)
    assert counters.decoded == len(full) and counters.skipped == 0
    assert src.report.clean
    undecoded, src2 = asyncio.run(_frames(video, analysis_fps=rate, skip_nonref=False))
    assert undecoded == got and src2.state.not_decoded == 0


def test_a_damaged_frame_passes_its_turn_to_the_next_good_one(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", 2.0, 15, gop=5)
    corrupt_packets(clip, [3])  # frame 3 and what is predicted from it, up to keyframe 5
    every, _ = asyncio.run(_frames(clip, skip_corrupt=True))
    grid = AnalysisGrid(5.0)
    expected = [f for f in every if grid.due(f[1])]
    got, src = asyncio.run(_frames(clip, analysis_fps=5.0, skip_corrupt=True))
    assert got == expected
    assert src.report.damage.damaged
    # Slot 1 (0.2 to 0.4 s) lost its first frames to the damage: a later one stood in.
    assert any(0.2 < t < 0.4 for _, t, _ in got)


def test_decode_count_says_what_a_replay_at_a_rate_decodes(
    store_path: Callable[[str], Path],
) -> None:
    video = store_path("single_face.mp4")
    every, state = decode_count(video)
    assert state.skipped_by_rate == 0 and state.not_decoded == 0
    handed, state = decode_count(video, 5.0)
    assert handed + state.skipped_by_rate == every == state.next_index
    assert 0 < state.not_decoded < state.skipped_by_rate
