"""Temporal behaviour of a stylized video: flicker measured on the fly, and the optional :class:`Stabilizer`.

Flicker is the mean absolute difference of consecutive stylized frames divided by that of the source frames
(1.0 = the stylization changes exactly as much as the footage does). :class:`Stabilizer` (``stabilize=True``)
lowers it by holding the previous result where the footage did not change; ``benchmarks/video.py`` measures
what it gains and that it leaves no trails next to moving objects.
"""

from __future__ import annotations

import torch

__all__ = ["FlickerMeter", "Stabilizer"]


class FlickerMeter:
    """Sum of mean |frame_t - frame_{t-1}| over consecutive frames, for the stylized and the source video."""

    def __init__(self):
        self.prev_y = self.prev_x = None
        self.sum_y = self.sum_x = 0.0
        self.pairs = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The next frames of the source (``x``) and the output (``y``), (N, 3, H, W); callers do not modify
        them afterwards (the last frame is kept as a view, not copied)."""
        if self.prev_y is not None:  # the pair across batches, without concatenating them
            self._pairs(x[:1], self.prev_x, y[:1], self.prev_y)
        if x.shape[0] > 1:
            self._pairs(x[1:], x[:-1], y[1:], y[:-1])
        self.prev_x, self.prev_y = x[-1:], y[-1:]

    def _pairs(self, x1: torch.Tensor, x0: torch.Tensor, y1: torch.Tensor, y0: torch.Tensor) -> None:
        self.sum_x += float(torch.sub(x1, x0).abs_().mean(dim=(1, 2, 3)).double().sum())
        self.sum_y += float(torch.sub(y1, y0).abs_().mean(dim=(1, 2, 3)).double().sum())
        self.pairs += x1.shape[0]

    def result(self) -> dict[str, float | None]:
        if not self.pairs:
            return {"flicker": None, "stylized_mad": None, "source_mad": None}
        sx, sy = self.sum_x / self.pairs, self.sum_y / self.pairs
        return {"flicker": (sy / sx) if sx > 1e-9 else None, "stylized_mad": sy * 255, "source_mad": sx * 255}


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
        self.prev_x: torch.Tensor | None = None
        self.prev_y: torch.Tensor | None = None

    def still(self, x: torch.Tensor, prev_x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) weight in [0, 1]: 1 where nothing within ``radius`` pixels changed."""
        import torch.nn.functional as F

        d = (x - prev_x).abs().mean(1, keepdim=True)
        r = self.radius
        if r:  # max is separable: two 1-D pools instead of one (2r+1)² window
            d = F.max_pool2d(F.max_pool2d(d, (1, 2 * r + 1), 1, (0, r)), (2 * r + 1, 1), 1, (r, 0))
        return (1 - d / self.threshold).clamp_(0, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Source frames ``x`` and their stylization ``y``, both (N, 3, H, W), next in the video."""
        out = []
        for xi, yi in zip(x.split(1), y.split(1)):
            if self.prev_y is not None:
                m = self.still(xi, self.prev_x).to(yi.dtype)
                yi = yi + self.alpha * m * (self.prev_y - yi)
            self.prev_x, self.prev_y = xi, yi
            out.append(yi)
        return torch.cat(out)

