"""``streamer replay`` end to end on real videos (through the model store), and bad input."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer.messages import VA_SCHEMA
from streamer.sources.file import EXIT_CORRUPT
from tests.sources.test_decode_core import flip_bytes

# Hard cuts seen by looking at the frames: face_noface.mov shows the face up to frame 71
# and a black/cartoon frame from frame 72 (t = 2.400 s); noface_face.mov shows the face
# from frame 96 (t = 3.945 s).
FACE_LEAVES_T = 2.400
FACE_ENTERS_T = 3.945
TOLERANCE_S = 0.5


def replay(video: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", "replay", str(video), "--no-progress", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "160"},
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def va_records(path: Path) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["schema"] == VA_SCHEMA]


ReplayRun = tuple[Path, subprocess.CompletedProcess[str]]  # output file, finished process


@pytest.fixture(scope="module")
def single_face_run(
    store_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> ReplayRun:
    out = tmp_path_factory.mktemp("replay") / "single.jsonl"
    proc = replay(store_path("single_face.mp4"), "--out", str(out))
    return out, proc


def test_single_face_one_track_and_valence_rises(single_face_run: ReplayRun) -> None:
    out, proc = single_face_run
    assert proc.returncode == 0, proc.stderr
    va = va_records(out)
    assert {r["track_id"] for r in va} == {1}, "one person must keep one track id"
    first = [r["valence"] for r in va if r["t"] < 1.0]
    last_t = max(r["t"] for r in va)
    last = [r["valence"] for r in va if r["t"] > last_t - 1.0]
    assert first and last
    assert statistics.mean(last) > statistics.mean(first) + 0.2, (first, last)


def test_records_have_the_documented_fields(single_face_run: ReplayRun) -> None:
    out, _ = single_face_run
    rec = va_records(out)[0]
    for key in (
        "schema",
        "camera",
        "frame",
        "t",
        "track_id",
        "box",
        "valence",
        "arousal",
        "valence_raw",
        "arousal_raw",
        "variance",
        "model",
    ):
        assert key in rec
    assert rec["camera"] == "single_face"
    assert "approx" in rec["model"], "the embedded default model must say it is approximate"
    assert len(rec["box"]) == 4 and rec["box"][0] < rec["box"][2]
    for r in va_records(out):
        assert -1.0 <= r["valence"] <= 1.0 and -1.0 <= r["arousal"] <= 1.0
    frames = [r["frame"] for r in va_records(out)]
    assert frames == sorted(frames)


def test_replay_is_byte_identical(
    single_face_run: ReplayRun, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    out, _ = single_face_run
    again = tmp_path / "again.jsonl"
    proc = replay(store_path("single_face.mp4"), "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == out.read_bytes()


def test_summary_table_on_stderr(single_face_run: ReplayRun) -> None:
    _, proc = single_face_run
    assert "mean valence" in proc.stderr
    assert "excited" in proc.stderr  # smiling man: positive valence (V+A+) dominates


def test_stdout_mode_prints_jsonl(store_path: Callable[[str], Path]) -> None:
    proc = replay(store_path("carphone_pristine.mp4"))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert any(r["schema"] == VA_SCHEMA for r in lines)


def test_no_face_video_has_no_track(store_path: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "none.jsonl"
    proc = replay(store_path("no_face.mp4"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert records(out) == []
    assert "no face tracked" in proc.stderr


def test_track_ends_when_face_leaves(store_path: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "fnf.jsonl"
    proc = replay(store_path("face_noface.mov"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    va = va_records(out)
    assert {r["track_id"] for r in va} == {1}
    last_seen = max(r["t"] for r in va)
    lost = [r for r in records(out) if r.get("event") == "lost"]
    assert len(lost) == 1
    assert abs(last_seen - FACE_LEAVES_T) <= TOLERANCE_S
    assert 0 <= lost[0]["t"] - FACE_LEAVES_T <= TOLERANCE_S


def test_track_starts_when_face_enters(store_path: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "nff.jsonl"
    proc = replay(store_path("noface_face.mov"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    va = va_records(out)
    assert {r["track_id"] for r in va} == {1}
    first_seen = min(r["t"] for r in va)
    assert 0 <= first_seen - FACE_ENTERS_T <= TOLERANCE_S
    appeared = [r for r in records(out) if r.get("event") == "appeared"]
    assert len(appeared) == 1 and abs(appeared[0]["t"] - first_seen) < 1e-6


# ---- bad input ---------------------------------------------------------------------------


def _truncated(src: Path, dst: Path) -> Path:
    """A 'faststart' copy (index first) cut in half: opens, then runs out of data."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        s_in = inp.streams.video[0]
        s_out = o.add_stream_from_template(s_in)
        for pkt in inp.demux(s_in):
            if pkt.dts is None:
                continue
            pkt.stream = s_out
            o.mux(pkt)
    data = dst.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


BAD_INPUTS: dict[str, Callable[[Path, Path], Path]] = {
    "missing": lambda src, d: d / "missing.mp4",
    "empty": lambda src, d: _written(d / "empty.mp4", b""),
    "not-video": lambda src, d: _written(d / "notes.mp4", b"hello\n" * 50),
    "moov-cut": lambda src, d: _written(d / "cut.mp4", src.read_bytes()[:5000]),
    "truncated": lambda src, d: _truncated(src, d / "trunc.mp4"),
    "jpeg-named-mp4": lambda src, d: _written(
        d / "photo.mp4", src.with_suffix(".jpg").read_bytes()
    ),
    "directory": lambda src, d: _directory(d / "adir.mp4"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_clear_error_nothing_written(
    case: str, store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    bad = BAD_INPUTS[case](store_path("single_face.mp4"), tmp_path)
    out = tmp_path / "out" / "result.jsonl"
    proc = replay(bad, "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0], proc.stderr
    assert not out.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


@pytest.mark.parametrize("share", [0.001, 0.01])
def test_flipped_bytes_are_skipped_reported_and_exit_3(
    share: float,
    single_face_run: tuple[Path, subprocess.CompletedProcess[str]],
    store_path: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """No damaged frame is analysed as if clean; the summary says how many and where."""
    clean_out, _ = single_face_run
    bad = flip_bytes(store_path("single_face.mp4"), tmp_path / "bad.mp4", share)
    out = tmp_path / "result.jsonl"
    proc = replay(bad, "--out", str(out))
    assert proc.returncode == EXIT_CORRUPT, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "corrupt frame(s)" in proc.stderr or "undecodable packet(s)" in proc.stderr
    assert "exit 3" in proc.stderr
    clean = {(r["frame"], r["track_id"]): r for r in va_records(clean_out)}
    damaged = va_records(out)
    assert damaged, "the frames before the damage are still analysed"
    for r in damaged:  # every analysed frame is the clean file's frame, same numbers
        ref = clean[(r["frame"], r["track_id"])]
        assert (r["t"], r["valence_raw"], r["arousal_raw"]) == (
            ref["t"],
            ref["valence_raw"],
            ref["arousal_raw"],
        )
    accepted = tmp_path / "accepted.jsonl"
    proc = replay(bad, "--out", str(accepted), "--skip-corrupt")
    assert proc.returncode == 0, proc.stderr
    assert accepted.read_bytes() == out.read_bytes()


def test_skip_corrupt_keeps_what_a_truncated_file_decoded(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    bad = _truncated(store_path("single_face.mp4"), tmp_path / "trunc.mp4")
    out = tmp_path / "result.jsonl"
    proc = replay(bad, "--out", str(out), "--skip-corrupt")
    assert proc.returncode == 0, proc.stderr
    assert "truncated" in proc.stderr
    assert va_records(out), "what decoded is written"


def test_damage_in_the_bench_json(store_path: Callable[[str], Path], tmp_path: Path) -> None:
    bad = flip_bytes(store_path("single_face.mp4"), tmp_path / "bad.mp4", 0.001)
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "bench", "replay", str(bad), "--repeat", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    damage = json.loads(proc.stdout)["damage"]
    assert damage["corrupt_frames_skipped"] > 0
    assert damage["skipped_spans"] and damage["skipped_spans"][0]["from_t"] > 0


def test_help_documents_the_exit_codes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "replay", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    text = " ".join(proc.stdout.split())
    assert "Exit codes: 0" in text and f"{EXIT_CORRUPT} finished" in text


def test_run_with_a_file_camera_gives_replays_t(
    single_face_run: tuple[Path, subprocess.CompletedProcess[str]],
    store_path: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """One decoding core: ``run`` over a file camera (as fast as possible) times every
    frame exactly as ``replay`` does."""
    replay_out, _ = single_face_run
    cfg = tmp_path / "file_camera.yaml"
    cfg.write_text(
        f"cameras:\n  - name: single_face\n    url: {store_path('single_face.mp4')}\n"
        "    realtime: false\n"
    )
    out = tmp_path / "run.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "run", "--config", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    replayed = {r["frame"]: r["t"] for r in va_records(replay_out)}
    run = {r["frame"]: r["t"] for r in va_records(out)}
    assert len(run) > 30
    assert run == {f: replayed[f] for f in run}


def test_a_short_replay_loads_no_library_it_does_not_use(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    """Start-up: a replay of a clip without a confirmed track imports neither the VA
    smoothing's filterpy (scipy), the model importer's onnx and h5py, the LLM, MQTT and
    HTTP clients, the schema checker, nor the other commands' modules: each loads where
    it is used. Quiet, clean and on the embedded defaults, it draws no bar or table and
    reads no YAML: neither rich's progress and table nor PyYAML loads."""
    from streamer.bench.startup import one_frame_clip

    store_path("fer")
    store_path("yunet")
    clip = one_frame_clip(store_path("single_face.mp4"), tmp_path / "one.mp4")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "streamer", "-q", "replay", str(clip),
         "--no-progress", "--out", str(tmp_path / "out.jsonl")],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    unused = ("filterpy", "scipy", "onnx", "h5py", "ollama", "httpx", "aiomqtt", "jsonschema")
    assert not [m for m in unused if m in imported]
    assert not [m for m in ("rich.progress", "rich.table", "yaml") if m in imported]
    assert "urllib.request" not in imported  # the store downloads nothing here
    assert not [m for m in imported if m.startswith(("streamer.bench", "streamer.testing"))]


def test_frames_that_never_decode_without_damage_claim_no_flag(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    """no_face.mp4 announces 98 frames and decodes 95 (its edit list drops 3): nothing
    is damaged or skipped, so exit 0 and a message that names no flag not given."""
    out = tmp_path / "out.jsonl"
    proc = replay(store_path("no_face.mp4"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stderr.split())
    assert "3 of 98 frames announced by the container did not decode" in flat, proc.stderr
    assert "no frame was damaged or skipped: exit 0" in flat
    assert "--skip-corrupt" not in proc.stderr


def test_accepted_damage_says_the_flag_was_given(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    bad = flip_bytes(store_path("single_face.mp4"), tmp_path / "bad.mp4", 0.001)
    proc = replay(bad, "--out", str(tmp_path / "out.jsonl"), "--skip-corrupt")
    assert proc.returncode == 0, proc.stderr
    assert "accepted with --skip-corrupt: exit 0" in " ".join(proc.stderr.split())
