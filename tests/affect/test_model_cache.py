"""The ONNX model cache: keyed by the weights' sha256, verified on every lookup, and
what start-up skips on a hit (reading the HDF5 weights)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamer.affect.config import AffectConfig
from streamer.affect.facechannel import keras_model_config, random_keras_weights
from streamer.affect.keras_h5 import write_keras_h5
from streamer.affect.models import load_va_model
from streamer.errors import ModelMissingError
from streamer.store.derived import record_path
from streamer.store.fetch import sha256_file


class DirStore:
    """The store API load_va_model uses, over real files of this test."""

    def __init__(self, files: dict[str, Path], derived: Path) -> None:
        self.files = files
        self.derived_dir = derived

    def has(self, name: str) -> bool:
        return name in self.files

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise ModelMissingError(f"model {name!r} is not in the store")
        return self.files[name]


def _fc_weights(path: Path, seed: int) -> Path:
    write_keras_h5(path, random_keras_weights(seed=seed), keras_model_config())
    return path


def _model_files(derived: Path) -> list[Path]:
    return sorted(derived.glob("*.onnx"))


CROPS = np.random.default_rng(0).integers(0, 256, (4, 64, 64), dtype=np.uint8)


def test_cache_hit_does_not_read_the_weights(fer_path: Path, tmp_path: Path) -> None:
    store = DirStore({"fer": fer_path}, tmp_path / "derived")
    first = load_va_model(AffectConfig(model="fer-va"), store)
    expected = first.predict(CROPS)
    (model_file,) = _model_files(store.derived_dir)
    meta = json.loads(record_path(model_file).read_text())
    assert meta["source_sha256"] == sha256_file(fer_path)

    second = load_va_model(AffectConfig(model="fer-va"), store)
    assert not second._graph.graph_loaded  # type: ignore[attr-defined]
    np.testing.assert_allclose(second.predict(CROPS), expected, atol=1e-6)
    assert _model_files(store.derived_dir) == [model_file]


def test_changed_weights_rebuild_and_never_reuse_other_weights(tmp_path: Path) -> None:
    weights = _fc_weights(tmp_path / "DimensionalFaceChannel.h5", seed=1)
    store = DirStore({"facechannel": weights}, tmp_path / "derived")
    cfg = AffectConfig(model="facechannel")
    va1 = load_va_model(cfg, store).predict(CROPS)

    _fc_weights(weights, seed=2)  # the same file name, other weights
    model2 = load_va_model(cfg, store)
    assert model2._graph.graph_loaded  # type: ignore[attr-defined]  # rebuilt from the file
    va2 = model2.predict(CROPS)
    assert not np.allclose(va1, va2, atol=1e-4)
    assert len(_model_files(store.derived_dir)) == 2  # one entry per sha256

    # The same weights again elsewhere: the entry of seed 2 is used, giving its outputs.
    other = _fc_weights(tmp_path / "copy.h5", seed=2)
    model3 = load_va_model(AffectConfig(model="facechannel", weights=other), store)
    assert not model3._graph.graph_loaded  # type: ignore[attr-defined]
    np.testing.assert_allclose(model3.predict(CROPS), va2, atol=1e-6)


def test_entry_recorded_for_other_weights_is_not_used(tmp_path: Path) -> None:
    """A file under a weights' cache name but recorded for other weights is rebuilt."""
    a = _fc_weights(tmp_path / "a.h5", seed=1)
    b = _fc_weights(tmp_path / "b.h5", seed=2)
    derived = tmp_path / "derived"
    va_b = load_va_model(AffectConfig(model="facechannel", weights=b), DirStore({}, derived))
    expected_b = va_b.predict(CROPS)
    (b_file,) = _model_files(derived)
    load_va_model(AffectConfig(model="facechannel", weights=a), DirStore({}, derived))
    a_file = next(f for f in _model_files(derived) if f != b_file)
    # Put a's model (and record) under b's name, as a botched copy would.
    shutil.copyfile(a_file, b_file)
    shutil.copyfile(record_path(a_file), record_path(b_file))
    model = load_va_model(AffectConfig(model="facechannel", weights=b), DirStore({}, derived))
    assert model._graph.graph_loaded  # type: ignore[attr-defined]
    np.testing.assert_allclose(model.predict(CROPS), expected_b, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_record", "bad_record"])
def test_corrupt_cache_file_is_rebuilt_with_a_warning(
    fer_path: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = DirStore({"fer": fer_path}, tmp_path / "derived")
    expected = load_va_model(AffectConfig(model="fer-va"), store).predict(CROPS)
    (model_file,) = _model_files(store.derived_dir)
    data = model_file.read_bytes()
    if damage == "truncate":
        model_file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        model_file.write_bytes(b"not a model" * 100)
    elif damage == "no_record":
        record_path(model_file).unlink()
    else:
        record_path(model_file).write_text("{not json")
    caplog.set_level(logging.INFO, logger="streamer.store.derived")
    model = load_va_model(AffectConfig(model="fer-va"), store)
    np.testing.assert_allclose(model.predict(CROPS), expected, atol=1e-6)
    assert model_file.read_bytes() == data  # rebuilt, identical
    level = logging.INFO if damage == "no_record" else logging.WARNING
    assert any(
        r.levelno == level and str(model_file) in r.getMessage() and "rebuilding" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_corrupt_saved_session_is_remade_with_a_warning(
    fer_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DirStore({"fer": fer_path}, tmp_path / "derived")
    expected = load_va_model(AffectConfig(model="fer-va"), store).predict(CROPS)
    (saved,) = store.derived_dir.glob("*.opt")
    saved.write_bytes(b"garbage")
    caplog.set_level(logging.WARNING)
    model = load_va_model(AffectConfig(model="fer-va"), store)
    np.testing.assert_allclose(model.predict(CROPS), expected, atol=1e-6)
    assert any("remaking it" in r.getMessage() for r in caplog.records)
    assert saved.stat().st_size > 1000  # saved again
