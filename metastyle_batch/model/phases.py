"""A generated network in polyphase form, in numpy (both runtimes use it; no torch).

Each full-resolution layer is rewritten as a convolution on the half-resolution grid whose output channels are
the four phases (row parity p, column parity q) of the full-resolution map, reassembled by pixel shuffle
(channel c * 4 + p * 2 + q → pixel (2i + p, 2j + q)). The arithmetic is the same up to float rounding, but there
is no upsampled tensor, no reflect pad at full resolution, and 8- or 3-channel convolutions become 32- and
12-channel ones, which SIMD kernels run far better (ONNX Runtime pads output channels to 16): 1.5x faster on the
CPU in both PyTorch and ONNX Runtime (see docs/BENCHMARKS.md). Training keeps the plain form.
"""

from __future__ import annotations

import numpy as np

# UP_TAPS[p, t, u]: after nearest-x2 upsampling and reflect pad 1, tap u of a 3x3 kernel at output row 2i + p
# reads low-res row i - 1 + t of the replicate-padded input (upsampled row -1 reflects to row 1, i.e. low-res 0).
UP_TAPS = np.array([[[1., 0, 0], [0, 1, 1], [0, 0, 0]],
                    [[0., 0, 0], [1, 1, 0], [0, 0, 1]]], np.float32)
# full-res row 2i - 1 + u read by a stride-2 3x3 kernel = phase p of half-res row i - 1 + a (top row replicated)
_DOWN_TAPS = {0: (0, 1), 1: (1, 0), 2: (1, 1)}  # u -> (a, p)


def upsample_phases(w: np.ndarray) -> np.ndarray:
    """(…, O, I, 3, 3) → (…, 4O, I, 3, 3) on the replicate-padded low-res input."""
    k = np.einsum("ptu,...oiuv,qsv->...opqits", UP_TAPS.astype(w.dtype), w, UP_TAPS.astype(w.dtype))
    return k.reshape(*w.shape[:-4], -1, *w.shape[-3:])


def stride2_phases(w: np.ndarray) -> np.ndarray:
    """(…, O, I, k, k) → (…, 4O, I, k+1, k+1): a stride-2 conv on the padded input giving the 4 output phases."""
    *lead, o, i, k, _ = w.shape
    out = np.zeros((*lead, o, 2, 2, i, k + 1, k + 1), w.dtype)
    for p in range(2):
        for q in range(2):
            out[..., p, q, :, p:p + k, q:q + k] = w
    return out.reshape(*lead, 4 * o, i, k + 1, k + 1)


def down_phases(w: np.ndarray) -> np.ndarray:
    """(…, O, I, 3, 3) stride 2 → (…, O, 4I, 2, 2) stride 1 on the phases, padded by one row/column top-left."""
    *lead, o, i, _, _ = w.shape
    out = np.zeros((*lead, o, i, 2, 2, 2, 2), w.dtype)  # …, O, I, p, q, a, b
    for u, (a, p) in _DOWN_TAPS.items():
        for v, (b, q) in _DOWN_TAPS.items():
            out[..., p, q, a, b] = w[..., u, v]
    return out.reshape(*lead, o, 4 * i, 2, 2)


def polyphase(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rewrite a generated network's arrays for the polyphase form (same outputs, cheap: ~1 ms)."""
    pp = dict(params)
    pp["conv_in.weight"] = stride2_phases(params["conv_in.weight"])
    pp["conv_in.bias"] = np.repeat(params["conv_in.bias"], 4, axis=-1)
    pp["down1.weight"] = down_phases(params["down1.weight"])
    for name in ("up1", "up2"):
        pp[f"{name}.weight"] = upsample_phases(params[f"{name}.weight"])
    pp["conv_out.weight"] = stride2_phases(params["conv_out.weight"])
    pp["conv_out.bias"] = np.repeat(params["conv_out.bias"], 4, axis=-1)
    return pp
