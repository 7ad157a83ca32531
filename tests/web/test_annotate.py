"""``streamer replay --annotate``: a real replay re-encoded with boxes and VA bars."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.annotate import FaceOverlay, draw_overlays, track_colour, write_annotated
from streamer.errors import MediaError
from tests.helpers.cli import read_jsonl, run_streamer


def decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
        times = []
        for f in frames:
            assert f.pts is not None and f.time_base is not None
            times.append(float(f.pts * f.time_base))
        return [f.to_ndarray(format="rgb24") for f in frames], times


@pytest.fixture(scope="module")
def annotated(
    models: None, face_video: Path, replay_jsonl: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("annotate")
    out, video = d / "with.jsonl", d / "annotated.mp4"
    proc = run_streamer(
        "replay", str(face_video), "--out", str(out), "--annotate", str(video), "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr
    return out, video


def test_jsonl_is_byte_identical_with_annotate(
    annotated: tuple[Path, Path], replay_jsonl: Path
) -> None:
    out, _ = annotated
    assert out.read_bytes() == replay_jsonl.read_bytes()


def test_annotated_video_keeps_frames_size_and_timestamps(
    annotated: tuple[Path, Path], face_video: Path
) -> None:
    _, video = annotated
    src, src_t = decode(face_video)
    ann, ann_t = decode(video)
    assert len(ann) == len(src)
    assert ann[0].shape == src[0].shape
    assert ann_t == pytest.approx(src_t, abs=1e-3)
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_annotated_video_differs_inside_boxes_not_far_outside(
    annotated: tuple[Path, Path], face_video: Path, replay_jsonl: Path
) -> None:
    _, video = annotated
    src, _ = decode(face_video)
    ann, _ = decode(video)
    boxes: dict[int, list[list[float]]] = {}
    for rec in read_jsonl(replay_jsonl):
        if rec["schema"] == "streamer.va/1":
            boxes.setdefault(rec["frame"], []).append(rec["box"])
    assert boxes, "the replay found no face"
    checked = 0
    for index, frame_boxes in boxes.items():
        a, s = ann[index].astype(np.int16), src[index].astype(np.int16)
        diff = np.abs(a - s).max(axis=2)
        h, w = diff.shape
        near = np.zeros((h, w), bool)
        for x1, y1, x2, y2 in frame_boxes:
            # the drawing: the box outline, the id above it, two bars below it
            mx, my = 0.1 * (x2 - x1) + 24, 0.1 * (y2 - y1) + 30
            near[
                max(0, int(y1 - my)) : min(h, int(y2 + my)),
                max(0, int(x1 - mx)) : min(w, int(x2 + mx)),
            ] = True
            x1i, y1i = max(0, int(x1)), max(0, int(y1))
            edge = diff[y1i : y1i + 2, x1i : int(x2)]
            assert edge.mean() > 40, f"frame {index}: no box drawn at {x1, y1, x2, y2}"
        # re-encoding changes every pixel a little; a drawing changes some a lot
        far = diff[~near]
        assert far.mean() < 6.0 and (far > 48).mean() < 0.001, (
            f"frame {index}: pixels changed far from the faces"
        )
        checked += 1
    assert checked == len(boxes)


def test_annotate_refuses_to_overwrite_the_input(models: None, face_video: Path) -> None:
    proc = run_streamer("replay", str(face_video), "--annotate", str(face_video), "--no-progress")
    assert proc.returncode == 1
    assert f"--annotate {face_video}: is the input" in proc.stderr


def test_track_colours_are_stable_and_distinct() -> None:
    assert track_colour(3) == track_colour(3)
    assert len({track_colour(i) for i in range(1, 9)}) == 8


def test_draw_overlays_checks_the_image_shape() -> None:
    with pytest.raises(ValueError, match=r"expected a BGR image of shape \(H, W, 3\)"):
        draw_overlays(np.zeros((10, 10), np.uint8), [FaceOverlay(1, (1, 1, 5, 5), 0.0, 0.0)])


def test_a_long_label_stays_near_its_box() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    label = "a very long description that would run far across the picture " * 3
    draw_overlays(image, [FaceOverlay(2, (100.0, 60.0, 160.0, 140.0), 0.5, -0.5, label)])
    ys, xs = np.nonzero(image.max(axis=2))
    assert xs.min() >= 90 and xs.max() <= 175, (xs.min(), xs.max())
    assert ys.min() >= 40 and ys.max() <= 165, (ys.min(), ys.max())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # a missing folder is created, as for --out; a directory, /proc, the input:
        # tests/cli/test_output_rule.py
        ("out.avi", "expected a .mp4, .mkv or .mov file name"),
    ],
)
def test_bad_annotate_paths_are_refused_before_any_work(
    face_video: Path,
    tmp_path: Path,
    name: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streamer.cli import main

    out = tmp_path / name
    assert main(["replay", str(face_video), "--annotate", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"--annotate {out}" in err and message in err
    assert not out.exists()


def test_recorder_keeps_boxes_per_frame_and_the_latest_description() -> None:
    from streamer.annotate import ROWS_PER_CHUNK, AnnotationRecorder
    from streamer.messages import Description, VASample

    rec = AnnotationRecorder()
    n = ROWS_PER_CHUNK + 5  # more than one packed chunk
    for f in range(n):
        rec.add(VASample("c", f, f / 10, 1, (1, 2, 30, 40), 0.5, -0.2, 0.5, -0.2, (0, 0), "m"))
        if f % 2 == 0:
            rec.add(
                VASample("c", f, f / 10, 2, (50, 5, 90, 45), -0.3, 0.4, None, None, (0, 0), "m")
            )

    def desc(t: float, text: str, source: str) -> Description:
        return Description("d", "c", 2, t, 0.0, 0.0, "happy", ("glad",), text, source, "m")

    rec.add(desc(1.0, "fallback at 1 s", "fallback"))
    rec.add(desc(1.0, "llm at 1 s", "llm"))  # the LLM's update of the same moment
    rec.add(desc(0.5, "", "fallback"))  # no text: its categories are shown
    assert [o.track_id for o in rec.overlays(0)] == [1, 2]
    last_even = n - 1 if (n - 1) % 2 == 0 else n - 2
    assert [o.track_id for o in rec.overlays(last_even)] == [1, 2]
    assert [o.track_id for o in rec.overlays(last_even - 1)] == [1]
    assert rec.overlays(n) == []
    assert rec.overlays(2)[1].label == ""
    assert rec.overlays(6)[1].label == "happy, glad"
    assert rec.overlays(12)[1].label == "llm at 1 s"
    first = rec.overlays(0)[0]
    assert first.box == (1, 2, 30, 40) and (first.valence, first.arousal) == (0.5, -0.2)


# ---- timestamps: every clip setup fetches, and clips with duplicated / missing pts ------

VIDEOS = ["single_face.mp4", "carphone_pristine.mp4", "no_face.mp4"]
VIDEOS += ["face_noface.mov", "noface_face.mov"]  # variable frame rate, edit lists
STILLS = ["single_face.jpg", "multi_face.jpg"]


def _pts_and_times(path: Path) -> tuple[list[int | None], list[float]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        tb = float(s.time_base) if s.time_base else 0.0
    return [f.pts for f in frames], [float(f.pts or 0) * tb for f in frames]


def _assert_muxed_like(video: Path, annotated: Path, n: int) -> None:
    src_pts, src_t = _pts_and_times(video)
    out_pts, out_t = _pts_and_times(annotated)
    assert n == len(src_pts) == len(out_pts), "one output frame per decoded frame"
    assert all(p is not None for p in out_pts)
    assert all(b > a for a, b in itertools.pairwise(out_t)), "times increase"
    # where the input's own timestamps increase, the output keeps them
    last = None
    for p, t_in, t_out in zip(src_pts, src_t, out_t, strict=True):
        if p is not None and (last is None or p > last):
            assert t_out == pytest.approx(t_in - src_t[0], abs=1e-3)
        last = p if p is not None and (last is None or p > last) else last


@pytest.fixture(scope="module")
def odd_clips(face_video: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """single_face.mp4's first second made by ffmpeg with (a) three frames on one pts and
    two pts left out, (b) no timestamps at all (a raw H.264 stream)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg program is not installed (tools/setup.sh installs it)")
    d = tmp_path_factory.mktemp("odd-pts")
    dup = d / "dup_pts.mkv"
    raw = d / "no_pts.h264"
    common = [ffmpeg, "-v", "error", "-y", "-i", str(face_video), "-t", "1", "-an"]
    setpts = "setpts='if(between(N,10,12),10/(FRAME_RATE*TB),PTS)'"
    subprocess.run(
        [*common, "-vf", setpts, "-fps_mode", "passthrough", "-c:v", "libx264", str(dup)],
        check=True,
        timeout=120,
    )
    subprocess.run([*common, "-c:v", "libx264", str(raw)], check=True, timeout=120)
    pts, _ = _pts_and_times(dup)
    assert len(pts) != len(set(pts)), "the clip has duplicated timestamps"
    assert set(_pts_and_times(raw)[0]) == {None}, "the clip has no timestamps"
    return {"dup": dup, "raw": raw}


def _box(n: int) -> list[FaceOverlay]:
    return [FaceOverlay(1, (10.0, 10.0, 60.0, 60.0), 0.5, -0.5, f"frame {n}")]


@pytest.mark.parametrize("name", VIDEOS)
def test_annotated_video_of_every_fetched_clip(
    store_path: Callable[[str], Path], tmp_path: Path, name: str
) -> None:
    video = store_path(name)
    out = tmp_path / "annotated.mp4"
    n = write_annotated(video, out, _box)
    _assert_muxed_like(video, out, n)


@pytest.mark.parametrize("name", STILLS)
def test_annotating_a_still_image_is_refused_cleanly(
    store_path: Callable[[str], Path], tmp_path: Path, name: str
) -> None:
    with pytest.raises(MediaError, match="is a still image"):
        write_annotated(store_path(name), tmp_path / "annotated.mp4", _box)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("clip", ["dup", "raw"])
def test_annotated_video_of_clips_with_duplicated_or_missing_pts(
    odd_clips: dict[str, Path], tmp_path: Path, clip: str
) -> None:
    out = tmp_path / "annotated.mp4"
    n = write_annotated(odd_clips[clip], out, _box)
    _assert_muxed_like(odd_clips[clip], out, n)


def test_replay_annotate_keeps_the_records_media_time_untouched(
    models: None, odd_clips: dict[str, Path], tmp_path: Path
) -> None:
    """JSON lines on stdout, as in the failing report: the run succeeds, and its records
    are those of a replay without --annotate (the fix-up is the video file's only)."""
    video = odd_clips["dup"]
    plain = run_streamer("replay", str(video), "--no-progress")
    assert plain.returncode == 0, plain.stderr
    out = tmp_path / "annotated.mkv"
    proc = run_streamer("replay", str(video), "--no-progress", "--annotate", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain.stdout, "the records' media time t is untouched"
    assert any(json.loads(line)["schema"] == "streamer.va/1" for line in proc.stdout.splitlines())
    _assert_muxed_like(video, out, len(_pts_and_times(video)[0]))
