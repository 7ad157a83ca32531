"""``streamer replay --annotate``: a real replay re-encoded with boxes and VA bars."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from streamer.annotate import FaceOverlay, draw_overlays, track_colour
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
    assert "is the input video" in proc.stderr


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
        ("missing/out.mp4", "does not exist"),
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
