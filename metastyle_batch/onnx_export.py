"""Export one generated TransformNet to ONNX and run it with ONNX Runtime.

The graph takes ``image`` (N, 3, H, W) float32 RGB in [0, 1] with H and W multiples of 4 (use
``pad_to_multiple``/``crop_back`` around it) and returns ``stylized`` (N, 3, H, W) float32, **unclamped**,
exactly like :func:`~metastyle_batch.model.transform.transform`. Batch, height and width are dynamic axes.
Running it is :mod:`metastyle_batch.ort` (re-exported here); ``onnx`` itself is never imported.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

import numpy as np
import torch

from .model.transform import Params, polyphase, single_network
from .ort import INPUT_NAME, OUTPUT_NAME, OrtNetwork, ort_available



# ---- a minimal protobuf writer for the few ONNX messages the graph needs (field numbers from onnx.proto) ----
# Writing the bytes directly keeps the ``onnx`` package out of the product: importing it costs ~0.6 s (its
# ml_dtypes dependency), more than ONNX Runtime saves on one 1024² image. tests/ check the result with onnx.

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 fields: negative numbers as two's complement
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _msg(*fields: tuple[int, int | float | str | bytes]) -> bytes:
    """A protobuf message: int → varint, float → fixed32, str/bytes (strings, sub-messages) → length-delimited."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        elif isinstance(value, float):
            out += _varint(number << 3 | 5) + struct.pack("<f", value)
        else:
            value = value.encode() if isinstance(value, str) else value
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return bytes(out)


def _attribute(name: str, value: int | float | str | list[int]) -> bytes:  # AttributeProto
    if isinstance(value, float):
        return _msg((1, name), (2, value), (20, 1))
    if isinstance(value, int):
        return _msg((1, name), (3, value), (20, 2))
    if isinstance(value, str):
        return _msg((1, name), (4, value), (20, 3))
    return _msg((1, name), *[(8, v) for v in value], (20, 7))


def _value_info(name: str, dims: list[int | str]) -> bytes:  # ValueInfoProto of a float tensor
    shape = _msg(*[(1, _msg((2, d) if isinstance(d, str) else (1, d))) for d in dims])
    return _msg((1, name), (2, _msg((1, _msg((1, 1), (2, shape))))))


class _Graph:
    """Collects nodes and constants; ``op`` adds one node and returns its output's name."""

    def __init__(self):
        self.nodes: list[bytes] = []
        self.constants: list[bytes] = []

    def const(self, value: np.ndarray | torch.Tensor) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float32).numpy()
        kind = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[value.dtype]  # TensorProto.DataType
        name = f"c{len(self.constants)}"
        raw = np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()
        self.constants.append(_msg(*[(1, d) for d in value.shape], (2, kind), (8, name), (9, raw)))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        out = out or f"t{len(self.nodes)}"
        self.nodes.append(_msg(*[(1, i) for i in inputs], (2, out), (4, op_type),
                               *[(5, _attribute(k, v)) for k, v in attrs.items()]))
        return out

    def model(self, opset: int) -> bytes:
        """ModelProto around the graph, with the IR version that goes with ``opset``."""
        dims = ["batch", 3, "height", "width"]
        graph = _msg(*[(1, n) for n in self.nodes], (2, "metastyle_transform_net"), *[(5, c) for c in self.constants],
                     (11, _value_info(INPUT_NAME, dims)), (12, _value_info(OUTPUT_NAME, dims)))
        ir = 7 if opset < 15 else 8 if opset < 19 else 9 if opset < 21 else 10
        return _msg((1, ir), (2, "metastyle-batch"), (7, graph), (8, _msg((2, opset))))


def export_onnx_bytes(params: Params, base: int, opset: int = 17) -> bytes:
    """The generated network ``params`` (G == 1) as a serialized ONNX model, built node by node from its
    polyphase form (mirroring :func:`~metastyle_batch.model.transform.transform_polyphase` op for op): no
    tracing, so it takes milliseconds, and batch, height and width are dynamic by construction."""
    pp = single_network(polyphase(params))
    g = _Graph()

    def pad(h: str, top_left: int, bottom_right: int, mode: str) -> str:
        pads = np.array([0, 0, top_left, top_left, 0, 0, bottom_right, bottom_right], np.int64)
        return g.op("Pad", h, g.const(pads), mode=mode)

    def conv(h: str, name: str, stride: int = 1, bias: bool = False) -> str:
        w = pp[f"{name}.weight"]
        inputs = [h, g.const(w)] + ([g.const(pp[f"{name}.bias"])] if bias else [])
        return g.op("Conv", *inputs, strides=[stride, stride], kernel_shape=list(w.shape[-2:]))

    def norm(h: str, name: str, relu: bool = True, phases: bool = False) -> str:
        """instance norm, the generated gain and bias (a per-style scale and shift), ReLU. ``phases``: ``h``
        holds the 4 phases of each channel of a full-res map, normalised together as one instance
        (``F.group_norm`` in PyTorch; those layers are not generated and have no gain)."""
        bias = pp[f"{name}.bias"]
        if phases:
            x = g.op("Reshape", h, g.const(np.array([0, base, -1], np.int64)))
            x = g.op("InstanceNormalization", x, g.const(np.ones(base, np.float32)),
                     g.const(np.zeros(base, np.float32)), epsilon=1e-5)
            x = g.op("Add", g.op("Reshape", x, g.op("Shape", h)), g.const(bias.reshape(1, -1, 1, 1)))
        else:
            gain = pp.get(f"{name}.gain")
            gain = np.ones(bias.numel(), np.float32) if gain is None else gain.reshape(-1)
            x = g.op("InstanceNormalization", h, g.const(gain), g.const(bias.reshape(-1)), epsilon=1e-5)
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
    return g.model(opset)


def export_onnx(params: Params, base: int, path: str | os.PathLike | BinaryIO, opset: int = 17) -> None:
    """Write the generated network ``params`` (G == 1) as an ONNX graph to a file path or a binary stream."""
    data = export_onnx_bytes(params, base, opset)
    if isinstance(path, (str, os.PathLike)):
        with open(path, "wb") as f:
            f.write(data)
    else:
        path.write(data)


__all__ = ["export_onnx", "export_onnx_bytes", "ort_available", "OrtNetwork", "INPUT_NAME", "OUTPUT_NAME"]
