"""The GPU path: VA networks on onnxruntime-CUDA and TensorRT FP16, YuNet on
onnxruntime-CUDA, NVDEC decoding. Each test compares with the CPU result of the same
input. They skip with the reason on machines without an NVIDIA GPU or without the
package they need; ``tools/gpu_check.sh`` installs the packages and runs them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.affect.config import OnnxRuntimeConfig, TensorRtRuntimeConfig
from streamer.affect.facechannel import keras_model_config, random_keras_weights
from streamer.affect.keras_h5 import write_keras_h5
from streamer.affect.models import FaceChannelModel, FerVAModel, build_source
from streamer.affect.runtimes import ModelSource, make_runtime

pytestmark = pytest.mark.gpu


def _no_gpu_reason() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU here (nvidia-smi not found)"
    proc = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or "GPU" not in proc.stdout:
        return f"no NVIDIA GPU here (nvidia-smi -L: {proc.stdout.strip() or proc.stderr.strip()})"
    return None


NO_GPU = _no_gpu_reason()


def _needs_ort_cuda() -> None:
    if NO_GPU:
        pytest.skip(NO_GPU)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")


def _needs_tensorrt() -> None:
    if NO_GPU:
        pytest.skip(NO_GPU)
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt not installed (pip install 'streamer[tensorrt]')")


@pytest.fixture
def networks(
    fer_path: Path, tmp_path: Path
) -> dict[str, tuple[ModelSource, type[FerVAModel] | type[FaceChannelModel]]]:
    if NO_GPU:
        pytest.skip(NO_GPU)
    fc = tmp_path / "fc.h5"
    write_keras_h5(fc, random_keras_weights(seed=5), keras_model_config())
    return {
        "fer-va": (build_source("fer-va", fer_path, tmp_path / "derived")[0], FerVAModel),
        "facechannel": (
            build_source("facechannel", fc, tmp_path / "derived")[0],
            FaceChannelModel,
        ),
    }


@pytest.mark.parametrize("network", ["fer-va", "facechannel"])
def test_onnxruntime_cuda_matches_cpu(
    network: str,
    networks: dict[str, tuple[ModelSource, type[FerVAModel] | type[FaceChannelModel]]],
    single_face_crops: np.ndarray,
) -> None:
    _needs_ort_cuda()
    source, wrapper = networks[network]
    cpu = wrapper(make_runtime(OnnxRuntimeConfig(device="cpu"), source), source)
    gpu = wrapper(make_runtime(OnnxRuntimeConfig(device="cuda"), source), source)
    assert gpu.runtime.name == "onnxruntime-cuda"
    np.testing.assert_allclose(
        gpu.predict(single_face_crops), cpu.predict(single_face_crops), atol=1e-3
    )


@pytest.mark.parametrize("network", ["fer-va", "facechannel"])
def test_tensorrt_fp16_close_to_cpu(
    network: str,
    networks: dict[str, tuple[ModelSource, type[FerVAModel] | type[FaceChannelModel]]],
    single_face_crops: np.ndarray,
) -> None:
    _needs_tensorrt()
    source, wrapper = networks[network]
    cpu = wrapper(make_runtime(OnnxRuntimeConfig(device="cpu"), source), source)
    trt = wrapper(make_runtime(TensorRtRuntimeConfig(fp16=True), source), source)
    a, b = cpu.predict(single_face_crops), trt.predict(single_face_crops)
    assert np.isfinite(b).all()
    assert np.abs(a - b).max() <= 0.05  # FP16 kernels


def test_yunet_on_onnxruntime_cuda_matches_opencv(
    store_path: Callable[[str], Path], tmp_path: Path
) -> None:
    _needs_ort_cuda()
    import cv2

    from streamer.faces.yunet_ort import YuNetOnnx

    model = store_path("yunet")
    gpu = YuNetOnnx(model, tmp_path, 0.7, 0.3, 5000, device="cuda")
    assert gpu.provider == "CUDAExecutionProvider"
    with av.open(str(store_path("single_face.mp4"))) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k % 8:
                continue
            img = frame.to_ndarray(format="bgr24")
            h, w = img.shape[:2]
            _, ref = cv2.FaceDetectorYN.create(str(model), "", (w, h), 0.7, 0.3, 5000).detect(img)
            got = gpu.detect(img)
            assert len(got) == (0 if ref is None else len(ref))
            if len(got):
                np.testing.assert_allclose(got[:, :4], ref[:, :4], atol=1.0)
                np.testing.assert_allclose(got[:, 14], ref[:, 14], atol=1e-3)


async def test_nvdec_decodes_on_the_gpu(store_path: Callable[[str], Path]) -> None:
    if NO_GPU:
        pytest.skip(NO_GPU)
    from av.codec.hwaccel import hwdevices_available

    from streamer.sources.config import CameraConfig
    from streamer.sources.live import LiveSource

    if "cuda" not in hwdevices_available():
        pytest.skip("this FFmpeg build (PyAV wheel) has no CUDA hwaccel")
    clip = store_path("single_face.mp4")
    cfg = CameraConfig(name="nvdec", url=str(clip), hwaccel="cuda", realtime=False)
    frames = []
    async with LiveSource(cfg) as src:
        async for frame in src:
            frames.append(frame)
    assert not src.hwaccel_failed, "NVDEC was configured and a GPU is present: no fallback"
    assert len(frames) == 72
    assert frames[0].image.shape == (360, 640, 3)
