"""The op table: every graph op runs the same in the numpy reference, ONNX and torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnxruntime as ort
import pytest

from streamer.affect.graph import NUMPY_KERNELS, OPS, Graph, Node, missing_kernels, run_numpy
from streamer.affect.onnx_export import INPUT_NAME, ONNX_KERNELS, build_onnx
from streamer.errors import ModelError

Runner = Callable[[Graph, np.ndarray], dict[str, np.ndarray]]


def _run_onnx(graph: Graph, x: np.ndarray, fold_bn: bool) -> dict[str, np.ndarray]:
    model = build_onnx(graph, fold_bn=fold_bn)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {INPUT_NAME: x.astype(np.float32)}), strict=True))


def _run_torch(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    from streamer.affect.torch_models import GraphModule

    with torch.inference_mode():
        outs = GraphModule(graph)(torch.from_numpy(x.astype(np.float32)))
    return {name: t.numpy() for (_, name), t in zip(graph.outputs, outs, strict=True)}


def _torch_kernels() -> Mapping[str, object]:
    from streamer.affect.torch_models import TORCH_KERNELS

    return TORCH_KERNELS


BACKENDS = [
    pytest.param("numpy", run_numpy, lambda: NUMPY_KERNELS, id="numpy"),
    pytest.param("ONNX", lambda g, x: _run_onnx(g, x, False), lambda: ONNX_KERNELS, id="onnx"),
    pytest.param("torch", _run_torch, _torch_kernels, id="torch", marks=pytest.mark.torch),
]


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 0.5, shape).astype(np.float32)


def every_op_graph(seed: int = 0) -> Graph:
    """A small graph with every op of the table: a plain and a depthwise conv with
    asymmetric ``same`` pads, BatchNorm, a padded max pool, an n-ary add, the shunt,
    global pooling, both flatten orders, dense heads and each activation."""
    rng = np.random.default_rng(seed)
    c = 3

    def bn(name: str, src: Node) -> Node:
        ch = src.shape[0]
        params = {
            "gamma": rng.uniform(0.5, 1.5, ch).astype(np.float32),
            "beta": _rand(rng, ch),
            "mean": _rand(rng, ch),
            "var": rng.uniform(0.5, 2.0, ch).astype(np.float32),
        }
        return Node("bn", name, (src.name,), src.shape, {"eps": 1e-3}, params)

    inp = Node("input", "x", (), (c, 9, 9))
    conv = Node(
        "conv",
        "conv",
        ("x",),
        (4, 9, 9),
        {"strides": (1, 1), "pads": (1, 1, 1, 1), "group": 1},
        {"W": _rand(rng, 4, c, 3, 3), "b": _rand(rng, 4)},
    )
    norm = bn("bn", conv)
    relu = Node("relu", "relu", ("bn",), norm.shape)
    dw = Node(  # depthwise, multiplier 2, stride 2, TensorFlow's odd pixel bottom/right
        "conv",
        "dw",
        ("relu",),
        (8, 5, 5),
        {"strides": (2, 2), "pads": (1, 1, 2, 2), "group": 4},
        {"W": _rand(rng, 8, 1, 4, 4)},
    )
    pool = Node(
        "maxpool",
        "pool",
        ("dw",),
        (8, 3, 3),
        {"kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 1, 1)},
    )
    pw = Node(
        "conv",
        "pw",
        ("pool",),
        (8, 3, 3),
        {"strides": (1, 1), "pads": (0, 0, 0, 0), "group": 1},
        {"W": _rand(rng, 8, 8, 1, 1), "b": _rand(rng, 8)},
    )
    added = Node("add", "add", ("pool", "pw", "pool"), (8, 3, 3))
    sig = Node("sigmoid", "sig", ("pw",), (8, 3, 3))
    shunt = Node("shunt", "shunt", ("add", "sig"), (8, 3, 3), {"decay": 0.5})
    gap = Node("gap", "gap", ("shunt",), (8,))
    flat_hwc = Node("flatten", "flat_hwc", ("shunt",), (72,), {"channels_last": True})
    flat_chw = Node("flatten", "flat_chw", ("shunt",), (72,), {"channels_last": False})
    nodes = [inp, conv, norm, relu, dw, pool, pw, added, sig, shunt, gap, flat_hwc, flat_chw]
    heads = [("gap", 8, "tanh"), ("flat_hwc", 72, "softmax"), ("flat_chw", 72, "relu")]
    outputs = []
    for src, width, act in heads:
        dense = Node(
            "dense",
            f"{src}/dense",
            (src,),
            (3,),
            {},
            {"W": _rand(rng, width, 3), "b": _rand(rng, 3)},
        )
        nodes += [dense, Node(act, f"{src}/{act}", (dense.name,), (3,))]
        outputs.append((f"{src}/{act}", f"out_{act}"))
    nodes.append(bn("bn1d", nodes[-2]))  # BatchNorm on an (N, K) tensor
    outputs.append(("bn1d", "out_bn1d"))
    return Graph("every-op", nodes, outputs)


def test_the_test_graph_uses_every_op() -> None:
    assert {n.op for n in every_op_graph().nodes} == set(OPS)


@pytest.mark.parametrize(("backend", "run", "kernels"), BACKENDS)
def test_every_backend_has_a_kernel_for_every_op(
    backend: str, run: Runner, kernels: Callable[[], Mapping[str, object]]
) -> None:
    table = kernels()
    assert missing_kernels(table) == set()
    assert set(table) <= set(OPS)


@pytest.mark.parametrize(("backend", "run", "kernels"), BACKENDS)
def test_backends_agree_with_the_numpy_reference_on_every_op(
    backend: str, run: Runner, kernels: Callable[[], Mapping[str, object]]
) -> None:
    graph = every_op_graph()
    x = np.random.default_rng(1).normal(0.0, 1.0, (3, *graph.input.shape))
    ref = run_numpy(graph, x)
    got = run(graph, x)
    assert set(got) == {name for _, name in graph.outputs}
    for name, want in ref.items():
        assert got[name].shape == want.shape
        np.testing.assert_allclose(got[name], want, atol=1e-4, err_msg=name)


def test_onnx_with_folded_batchnorm_matches_the_reference() -> None:
    graph = every_op_graph(seed=2)
    x = np.random.default_rng(3).normal(0.0, 1.0, (2, *graph.input.shape))
    ref = run_numpy(graph, x)
    got = _run_onnx(graph, x, fold_bn=True)
    for name, want in ref.items():
        np.testing.assert_allclose(got[name], want, atol=1e-4, err_msg=name)


@pytest.mark.parametrize(("backend", "run", "kernels"), BACKENDS)
def test_unknown_op_is_one_error_naming_op_and_backend(
    backend: str, run: Runner, kernels: Callable[[], Mapping[str, object]]
) -> None:
    graph = Graph(
        "odd",
        [Node("input", "x", (), (1, 2, 2)), Node("gelu", "g", ("x",), (1, 2, 2))],
        [("g", "out")],
    )
    with pytest.raises(ModelError, match=f"graph op 'gelu' has no {backend} translation"):
        run(graph, np.zeros((1, 1, 2, 2)))
