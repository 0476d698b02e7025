"""A generated TransformNet as an ONNX graph, written node by node (no torch, no ``onnx``: :mod:`.onnxgraph`).

The graph takes ``image`` (N, 3, H, W) float32 RGB in [0, 1] with H and W multiples of 4 (pad and crop around
it as the engines do) and returns ``stylized`` (N, 3, H, W) float32, **unclamped**, exactly like
:func:`~metastyle_batch.model.transform.transform`. Batch, height and width are dynamic axes. Running it is
:mod:`metastyle_batch.ort` (re-exported here).

Two forms: the weights baked in (what ``export``, the network cache and a fixed style run), or the generated
layers' weights as inputs (:func:`network_feed`), so that one session runs every frame of a video whose style
moves between keyframes, each with its own network.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from .model.phases import polyphase
from .onnxgraph import Graph, as_array
from .ort import INPUT_NAME, OUTPUT_NAME, OrtNetwork

_FIXED = ("conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias")  # trained, not generated


def one_network(params) -> dict[str, np.ndarray]:
    """Float32 arrays of one network (a leading group dim of 1 dropped; G > 1 is an error), every gain present."""
    out = {}
    for name, value in params.items():
        value = np.asarray(as_array(value), np.float32)
        generated = name not in _FIXED
        if generated and value.ndim == (5 if name.endswith(".weight") else 2):
            if value.shape[0] != 1:
                raise ValueError(f"one network is needed, but {name} holds {value.shape[0]} (G != 1)")
            value = value[0]
        out[name] = value
    for name in [n for n in out if n.endswith(".bias") and n not in _FIXED]:  # format 2, fine-tuned nets: gain 1
        out.setdefault(name.replace(".bias", ".gain"), np.ones_like(out[name]))
    return out


def network_feed(params) -> dict[str, np.ndarray]:
    """The generated layers of ``params`` (one network) as the inputs of a ``weights_as_inputs`` graph."""
    pp = polyphase(one_network(params))
    return {k: np.ascontiguousarray(v) for k, v in pp.items() if k not in _FIXED}


def export_onnx_bytes(params, base: int, opset: int = 17, weights_as_inputs: bool = False) -> bytes:
    """The generated network ``params`` (numpy arrays or torch tensors, G == 1) as a serialized ONNX model,
    built from its polyphase form (mirroring :func:`~metastyle_batch.model.transform.transform_polyphase` op for
    op): no tracing, so it takes milliseconds. With ``weights_as_inputs`` only the trained layers are baked in."""
    pp = polyphase(one_network(params))
    g = Graph("metastyle_transform_net")
    g.input(INPUT_NAME, ["batch", 3, "height", "width"])

    def tensor(name: str) -> str:
        if weights_as_inputs and name not in _FIXED:
            return g.input(name, list(pp[name].shape))
        return g.const(pp[name])

    def pad(h: str, top_left: int, bottom_right: int, mode: str) -> str:
        pads = np.array([0, 0, top_left, top_left, 0, 0, bottom_right, bottom_right], np.int64)
        return g.op("Pad", h, g.const(pads), mode=mode)

    def conv(h: str, name: str, stride: int = 1, bias: bool = False) -> str:
        w = pp[f"{name}.weight"]
        inputs = [h, tensor(f"{name}.weight")] + ([tensor(f"{name}.bias")] if bias else [])
        return g.op("Conv", *inputs, strides=[stride, stride], kernel_shape=list(w.shape[-2:]))

    def norm(h: str, name: str, relu: bool = True, phases: bool = False) -> str:
        """instance norm, the generated gain and bias (a per-style scale and shift), ReLU. ``phases``: ``h``
        holds the 4 phases of each channel of a full-res map, normalised together as one instance
        (``F.group_norm`` in PyTorch; those layers are not generated and have no gain)."""
        if phases:
            x = g.op("Reshape", h, g.const(np.array([0, base, -1], np.int64)))
            x = g.op("InstanceNormalization", x, g.const(np.ones(base, np.float32)),
                     g.const(np.zeros(base, np.float32)), epsilon=1e-5)
            bias = g.const(pp[f"{name}.bias"].reshape(1, -1, 1, 1))
            x = g.op("Add", g.op("Reshape", x, g.op("Shape", h)), bias)
        else:
            x = g.op("InstanceNormalization", h, tensor(f"{name}.gain"), tensor(f"{name}.bias"), epsilon=1e-5)
        return g.op("Relu", x) if relu else x

    h = norm(conv(pad(INPUT_NAME, 4, 4, "reflect"), "conv_in", 2), "conv_in", phases=True)
    h = norm(conv(pad(h, 1, 0, "edge"), "down1"), "down1")
    h = norm(conv(pad(h, 1, 1, "reflect"), "down2", 2), "down2")
    for i in range(1, 6):
        r = norm(conv(pad(h, 1, 1, "reflect"), f"res{i}a"), f"res{i}a")
        h = g.op("Add", h, norm(conv(pad(r, 1, 1, "reflect"), f"res{i}b"), f"res{i}b", relu=False))
    for name in ("up1", "up2"):
        h = norm(g.op("DepthToSpace", conv(pad(h, 1, 1, "edge"), name), blocksize=2, mode="CRD"), name)
    g.op("DepthToSpace", conv(pad(h, 4, 4, "reflect"), "conv_out", 2, bias=True), blocksize=2, mode="CRD",
         out=OUTPUT_NAME)
    return g.model([(OUTPUT_NAME, ["batch", 3, "height", "width"])], opset)


def export_onnx(params, base: int, path: str | os.PathLike | BinaryIO, opset: int = 17) -> None:
    """Write the generated network ``params`` (G == 1) as an ONNX graph to a file path or a binary stream."""
    data = export_onnx_bytes(params, base, opset)
    if isinstance(path, (str, os.PathLike)):
        with open(path, "wb") as f:
            f.write(data)
    else:
        path.write(data)


__all__ = ["export_onnx", "export_onnx_bytes", "network_feed", "OrtNetwork", "INPUT_NAME",
           "OUTPUT_NAME"]
