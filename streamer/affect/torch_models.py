"""The VA networks in PyTorch (optional extra ``torch``).

:class:`FaceChannelV1` is the FaceChannel network written out layer by layer as in the
reference (pablovin/FaceChannel ``FaceChannelV1.py``), with the Keras layer names, so
that weights map by name. :class:`GraphModule` runs any imported
:class:`~streamer.affect.graph.Graph` (used for the fer mini-Xception, whose architecture
comes from its file's JSON).

Weights are loaded from the imported graph (the Keras HDF5 reader is the one code path
for both networks); :meth:`FaceChannelV1.keras_weights` writes them back in Keras layout
for round trips.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamer.affect.facechannel import (
    CONV_BLOCKS,
    DENSE_UNITS,
    INHIBITION_DECAY,
    INPUT_SHAPE,
    keras_layer_names,
)
from streamer.affect.graph import Graph, Kernel, Node, interpret

__all__ = ["TORCH_KERNELS", "FaceChannelV1", "GraphModule"]


class FaceChannelV1(nn.Module):
    """FaceChannel V1, dimensional: (N, 1, 64, 64) gray/255 -> (arousal, valence).

    Args:
        flatten_channels_last: flatten in HWC order (Keras >= 2.2 channels_first Flatten
            permutes to channels-last first); set from the weights file's JSON.
        bn_eps: BatchNorm epsilon (Keras default 1e-3).
    """

    def __init__(self, flatten_channels_last: bool = True, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.flatten_channels_last = flatten_channels_last
        c_in = INPUT_SHAPE[0]
        self.blocks: list[tuple[str, bool, bool]] = []
        for i, (name, filters, bn, pool) in enumerate(CONV_BLOCKS):
            self.add_module(name, nn.Conv2d(c_in, filters, 3, padding=1))
            if bn:
                self.add_module(f"bn{i + 1}", nn.BatchNorm2d(filters, eps=bn_eps))
            self.blocks.append((name, bn, pool))
            c_in = filters
        self.conv10 = nn.Conv2d(c_in, 256, 3, padding=1)
        self.conv10_inhibition = nn.Conv2d(c_in, 256, 3, padding=1)
        flat = 256 * (INPUT_SHAPE[1] // 16) * (INPUT_SHAPE[2] // 16)
        self.denseLayer = nn.Linear(flat, DENSE_UNITS)
        self.arousal_output = nn.Linear(DENSE_UNITS, 1)
        self.valence_output = nn.Linear(DENSE_UNITS, 1)
        self.dropout = nn.Dropout(0.25)  # as in the reference; identity in eval()
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i, (name, bn, pool) in enumerate(self.blocks):
            x = getattr(self, name)(x)
            if bn:
                x = F.relu(getattr(self, f"bn{i + 1}")(x))
            if pool:
                x = self.dropout(F.max_pool2d(x, 2))
        v = F.relu(self.conv10(x))
        inh = F.relu(self.conv10_inhibition(x))
        x = self.dropout(F.max_pool2d(v / (INHIBITION_DECAY + inh), 2))
        if self.flatten_channels_last:
            x = x.permute(0, 2, 3, 1)
        x = F.relu(self.denseLayer(x.reshape(x.shape[0], -1)))
        return torch.tanh(self.arousal_output(x)), torch.tanh(self.valence_output(x))

    @classmethod
    def from_graph(cls, graph: Graph) -> FaceChannelV1:
        """Build the module with the weights of an imported (unfolded) FaceChannel graph."""
        flat = next(n for n in graph.nodes if n.op == "flatten")
        bns = [n for n in graph.nodes if n.op == "bn"]
        net = cls(
            flatten_channels_last=bool(flat.attrs.get("channels_last")),
            bn_eps=float(bns[0].attrs["eps"]) if bns else 1e-3,
        )
        by_input = {n.inputs[0]: n for n in bns}
        with torch.no_grad():
            for i, (name, bn, _) in enumerate(net.blocks):
                node = graph.node(name)
                _set_conv(getattr(net, name), node)
                if bn:
                    b = by_input[name]
                    mod = getattr(net, f"bn{i + 1}")
                    mod.eps = float(b.attrs["eps"])
                    for attr, key in (
                        ("weight", "gamma"),
                        ("bias", "beta"),
                        ("running_mean", "mean"),
                        ("running_var", "var"),
                    ):
                        getattr(mod, attr).copy_(torch.from_numpy(b.params[key]))
            _set_conv(net.conv10, graph.node("conv10"))
            _set_conv(net.conv10_inhibition, graph.node("conv10_inhibition"))
            for head in ("denseLayer", "arousal_output", "valence_output"):
                node = graph.node(head)
                lin = getattr(net, head)
                lin.weight.copy_(torch.from_numpy(node.params["W"].T.copy()))
                lin.bias.copy_(torch.from_numpy(node.params["b"]))
        net.eval()
        return net

    def keras_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """The weights in Keras HDF5 layout (HWIO kernels, (in, out) dense kernels)."""
        out: dict[str, dict[str, np.ndarray]] = {}
        bn_names = keras_layer_names()

        def conv(mod: nn.Conv2d) -> dict[str, np.ndarray]:
            assert mod.bias is not None  # every FaceChannel conv has a bias
            return {
                "kernel": mod.weight.detach().numpy().transpose(2, 3, 1, 0).copy(),
                "bias": mod.bias.detach().numpy().copy(),
            }

        for i, (name, bn, _) in enumerate(self.blocks):
            out[name] = conv(getattr(self, name))
            if bn:
                m = getattr(self, f"bn{i + 1}")
                out[bn_names[name]] = {
                    "gamma": m.weight.detach().numpy().copy(),
                    "beta": m.bias.detach().numpy().copy(),
                    "moving_mean": m.running_mean.numpy().copy(),
                    "moving_variance": m.running_var.numpy().copy(),
                }
        out["conv10"] = conv(self.conv10)
        out["conv10_inhibition"] = conv(self.conv10_inhibition)
        for head in ("denseLayer", "arousal_output", "valence_output"):
            lin = getattr(self, head)
            out[head] = {
                "kernel": lin.weight.detach().numpy().T.copy(),
                "bias": lin.bias.detach().numpy().copy(),
            }
        return out


def _set_conv(mod: nn.Conv2d, node: Node) -> None:
    assert mod.bias is not None  # every FaceChannel conv has a bias
    mod.weight.copy_(torch.from_numpy(node.params["W"]))
    mod.bias.copy_(torch.from_numpy(node.params["b"]))


class GraphModule(nn.Module):
    """Runs an imported :class:`Graph` with torch ops (any network the importer reads)."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph
        self.params = nn.ParameterDict()
        for n in graph.nodes:
            for k, v in n.params.items():
                key = f"{n.name}.{k}".replace(".", "__").replace("/", "_")
                self.params[key] = nn.Parameter(torch.from_numpy(v.copy()), requires_grad=False)
        self.eval()

    def _p(self, n: Node, k: str) -> torch.Tensor:
        param: torch.Tensor = self.params[f"{n.name}.{k}".replace(".", "__").replace("/", "_")]
        return param

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        vals = interpret(self.graph, self, x, TORCH_KERNELS, "torch")
        return [vals[src] for src, _ in self.graph.outputs]


def _pad(x: torch.Tensor, n: Node, value: float = 0.0) -> torch.Tensor:
    t, left, b, r = n.attrs["pads"]
    return F.pad(x, (left, r, t, b), value=value) if any(n.attrs["pads"]) else x


def _conv(m: GraphModule, n: Node, ins: list[torch.Tensor]) -> torch.Tensor:
    return F.conv2d(
        _pad(ins[0], n),
        m._p(n, "W"),
        m._p(n, "b") if "b" in n.params else None,
        stride=tuple(n.attrs["strides"]),
        groups=int(n.attrs["group"]),
    )


def _bn(m: GraphModule, n: Node, ins: list[torch.Tensor]) -> torch.Tensor:
    mean, var, gamma, beta = (m._p(n, k) for k in ("mean", "var", "gamma", "beta"))
    return F.batch_norm(ins[0], mean, var, gamma, beta, False, 0.0, n.attrs["eps"])


def _maxpool(m: GraphModule, n: Node, ins: list[torch.Tensor]) -> torch.Tensor:
    z = _pad(ins[0], n, float("-inf"))
    return F.max_pool2d(z, tuple(n.attrs["kernel"]), tuple(n.attrs["strides"]))


def _add(m: GraphModule, n: Node, ins: list[torch.Tensor]) -> torch.Tensor:
    y = ins[0]
    for other in ins[1:]:
        y = y + other
    return y


def _flatten(m: GraphModule, n: Node, ins: list[torch.Tensor]) -> torch.Tensor:
    z = ins[0].permute(0, 2, 3, 1) if n.attrs.get("channels_last") else ins[0]
    return z.reshape(z.shape[0], -1)


TORCH_KERNELS: dict[str, Kernel[GraphModule, torch.Tensor]] = {
    "conv": _conv,
    "bn": _bn,
    "relu": lambda m, n, ins: F.relu(ins[0]),
    "tanh": lambda m, n, ins: torch.tanh(ins[0]),
    "sigmoid": lambda m, n, ins: torch.sigmoid(ins[0]),
    "softmax": lambda m, n, ins: F.softmax(ins[0], dim=1),
    "maxpool": _maxpool,
    "add": _add,
    "shunt": lambda m, n, ins: ins[0] / (n.attrs["decay"] + ins[1]),
    "gap": lambda m, n, ins: ins[0].mean(dim=(2, 3)),
    "flatten": _flatten,
    "dense": lambda m, n, ins: ins[0] @ m._p(n, "W") + m._p(n, "b"),
}
"""The torch column of :data:`~streamer.affect.graph.OPS`."""
