"""A minimal ONNX writer: the few protobuf messages our graphs need (field numbers from onnx.proto), no ``onnx``.

Writing the bytes directly keeps the ``onnx`` package out of the product: importing it costs ~0.6 s (its
ml_dtypes dependency), more than ONNX Runtime saves on one 1024² image. tests/ check the results with onnx.
"""

from __future__ import annotations

import struct

import numpy as np

_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}  # TensorProto.DataType


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 fields: negative numbers as two's complement
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Parts(list):
    """A serialized message as its pieces, with their total size: nesting never copies a tensor's bytes; the
    model is joined once at the end."""

    size = 0


def _msg(*fields: tuple[int, int | float | str | bytes | memoryview | _Parts]) -> _Parts:
    """A protobuf message: int → varint, float → fixed32, str/bytes (strings, sub-messages) → length-delimited."""
    parts = _Parts()
    for number, value in fields:
        if isinstance(value, int):
            parts += (_varint(number << 3), _varint(value))
        elif isinstance(value, float):
            parts += (_varint(number << 3 | 5), struct.pack("<f", value))
        else:
            value = value.encode() if isinstance(value, str) else value
            n = value.size if isinstance(value, _Parts) else len(value)
            parts += (_varint(number << 3 | 2), _varint(n))
            parts += value if isinstance(value, _Parts) else (value,)
    parts.size = sum(len(p) for p in parts)  # flat: bytes and byte-memoryviews only
    return parts


def _attribute(name: str, value: int | float | str | list[int]) -> _Parts:  # AttributeProto
    if isinstance(value, float):
        return _msg((1, name), (2, value), (20, 1))
    if isinstance(value, int):
        return _msg((1, name), (3, value), (20, 2))
    if isinstance(value, str):
        return _msg((1, name), (4, value), (20, 3))
    return _msg((1, name), *[(8, v) for v in value], (20, 7))


_ELEM = {"float32": 1, "float16": 10}  # TensorProto.DataType


def _value_info(name: str, dims: list[int | str], elem: str = "float32") -> _Parts:  # ValueInfoProto of a tensor
    shape = _msg(*[(1, _msg((2, d) if isinstance(d, str) else (1, d))) for d in dims])
    return _msg((1, name), (2, _msg((1, _msg((1, _ELEM[elem]), (2, shape))))))


def as_array(value) -> np.ndarray:
    """A numpy array, or a torch tensor as a float32 CPU array (without importing torch)."""
    if hasattr(value, "detach"):
        return value.detach().cpu().float().numpy()
    return np.asarray(value)


class Graph:
    """Collects inputs, nodes and constants; ``op`` adds one node and returns its output's name."""

    def __init__(self, name: str):
        self.name = name
        self.inputs: list[_Parts] = []
        self.nodes: list[_Parts] = []
        self.constants: list[_Parts] = []

    def input(self, name: str, dims: list[int | str]) -> str:
        self.inputs.append(_value_info(name, dims))
        return name

    def const(self, value) -> str:
        value = as_array(value)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        name = f"c{len(self.constants)}"
        raw = memoryview(np.ascontiguousarray(value, value.dtype.newbyteorder("<"))).cast("B")  # no copy
        self.constants.append(_msg(*[(1, d) for d in value.shape], (2, _DTYPES[value.dtype]), (8, name), (9, raw)))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        out = out or f"t{len(self.nodes)}"
        self.nodes.append(_msg(*[(1, i) for i in inputs], (2, out), (4, op_type),
                               *[(5, _attribute(k, v)) for k, v in attrs.items()]))
        return out

    def model(self, outputs: list[tuple[str, list[int | str]]], opset: int = 17, elem: dict | None = None) -> bytes:
        """ModelProto around the graph, with the IR version that goes with ``opset``; outputs are float32 unless
        ``elem`` names another type for them."""
        elem = elem or {}
        graph = _msg(*[(1, n) for n in self.nodes], (2, self.name), *[(5, c) for c in self.constants],
                     *[(11, i) for i in self.inputs],
                     *[(12, _value_info(n, d, elem.get(n, "float32"))) for n, d in outputs])
        ir = 7 if opset < 15 else 8 if opset < 19 else 9 if opset < 21 else 10
        return b"".join(_msg((1, ir), (2, "metastyle-batch"), (7, graph), (8, _msg((2, opset)))))
