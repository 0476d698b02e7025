"""Temporal behaviour of a stylized video: flicker measured on the fly, and the optional :class:`Stabilizer`.

Flicker is the mean absolute difference of consecutive stylized frames divided by that of the source frames
(1.0 = the stylization changes exactly as much as the footage does). :class:`Stabilizer` (``stabilize=True``)
lowers it by holding the previous result where the footage did not change; ``benchmarks/video.py`` measures
what it gains and that it leaves no trails next to moving objects.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FlickerMeter", "Stabilizer"]


class FlickerMeter:
    """Sum of mean |frame_t - frame_{t-1}| over consecutive frames, for the stylized and the source video."""

    def __init__(self):
        self.prev_y = self.prev_x = None
        self.sum_y = self.sum_x = 0.0
        self.pairs = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """The next frames of the source (``x``) and the output (``y``), (N, 3, H, W); callers do not modify
        them afterwards (the last frame is kept as a view, not copied)."""
        if self.prev_y is not None:  # the pair across batches, without concatenating them
            self._pairs(x[:1], self.prev_x, y[:1], self.prev_y)
        if x.shape[0] > 1:
            self._pairs(x[1:], x[:-1], y[1:], y[:-1])
        self.prev_x, self.prev_y = x[-1:], y[-1:]

    def _pairs(self, x1: np.ndarray, x0: np.ndarray, y1: np.ndarray, y0: np.ndarray) -> None:
        self.sum_x += float(np.abs(x1 - x0).mean(axis=(1, 2, 3), dtype=np.float64).sum())
        self.sum_y += float(np.abs(y1 - y0).mean(axis=(1, 2, 3), dtype=np.float64).sum())
        self.pairs += x1.shape[0]

    def result(self) -> dict[str, float | None]:
        if not self.pairs:
            return {"flicker": None, "stylized_mad": None, "source_mad": None}
        sx, sy = self.sum_x / self.pairs, self.sum_y / self.pairs
        return {"flicker": (sy / sx) if sx > 1e-9 else None, "stylized_mad": sy * 255, "source_mad": sx * 255}


def _max_filter(d: np.ndarray, r: int, axis: int) -> np.ndarray:
    """The max over a window of 2r+1 along ``axis`` (edges: the window clipped), by doubling windows: O(log r)."""
    n = d.shape[axis]
    padded = np.concatenate([np.take(d, [0] * r, axis), d, np.take(d, [n - 1] * r, axis)], axis) if r else d
    out, width = padded, 1
    while width * 2 <= 2 * r + 1:  # out[i] = max of padded[i : i + width]
        out = np.maximum(out.take(range(out.shape[axis] - width), axis), out.take(range(width, out.shape[axis]), axis))
        width *= 2
    rest = 2 * r + 1 - width
    if rest:  # two overlapping windows of ``width`` cover 2r+1
        out = np.maximum(out.take(range(out.shape[axis] - rest), axis), out.take(range(rest, out.shape[axis]), axis))
    return out


class Stabilizer:
    """Temporal smoothing for still parts of a shot, where a feed-forward network shimmers frame to frame.

    Instance norm takes its statistics from the whole frame, so anything moving anywhere shifts every output
    pixel a little; so does sensor and codec noise. Where the source did not change (mean |Δ| over channels
    below ``threshold``), the output is pulled towards the previous output: ``y' = y + alpha·m·(y'_{t-1} - y)``
    with ``m = clamp(1 - maxpool_r(|Δx|) / threshold, 0, 1)``. The max-pool widens "moving" by ``radius``
    pixels, about the network's receptive field, so pixels whose stylization follows a moving object stay fresh
    (no trails); moving pixels themselves get exactly the network's output. Call it on consecutive batches.
    """

    def __init__(self, alpha: float = 0.7, radius: int = 16, threshold: float = 6 / 255) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha, self.radius, self.threshold = alpha, radius, threshold
        self.prev_x: np.ndarray | None = None
        self.prev_y: np.ndarray | None = None

    def still(self, x: np.ndarray, prev_x: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) weight in [0, 1]: 1 where nothing within ``radius`` pixels changed."""
        d = np.abs(x - prev_x).mean(1, keepdims=True)
        if self.radius:  # max is separable: two 1-D filters instead of one (2r+1)² window
            d = _max_filter(_max_filter(d, self.radius, 3), self.radius, 2)
        return np.clip(1 - d / np.float32(self.threshold), 0, 1)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Source frames ``x`` and their stylization ``y``, both (N, 3, H, W), next in the video."""
        out = []
        for i in range(x.shape[0]):
            xi, yi = x[i:i + 1], y[i:i + 1]
            if self.prev_y is not None:
                m = self.still(xi, self.prev_x)
                yi = yi + np.float32(self.alpha) * m * (self.prev_y - yi)
            self.prev_x, self.prev_y = xi, yi
            out.append(yi)
        return np.concatenate(out)
