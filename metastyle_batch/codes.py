"""Style codes: points in the meta network's hidden space, and their blends (numpy only: both runtimes use them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class StyleCode:
    """The meta network's hidden state for a style (ReLU output, 128 numbers per generated layer).

    Generated weights are linear in the hidden state, so mixing codes mixes networks.
    """

    hidden: np.ndarray  # (D,) float32
    colors: np.ndarray | None = None  # (12,) float64 raw colour moments of the style image (metastyle_batch.color)

    def __post_init__(self):
        object.__setattr__(self, "hidden", _numpy(self.hidden, np.float32))
        if self.colors is not None:
            object.__setattr__(self, "colors", _numpy(self.colors, np.float64))

    def __add__(self, other: "StyleCode") -> "StyleCode":
        colors = None if self.colors is None or other.colors is None else self.colors + other.colors
        return StyleCode(self.hidden + other.hidden, colors)

    def __mul__(self, weight: float) -> "StyleCode":
        return StyleCode(self.hidden * np.float32(weight), None if self.colors is None else self.colors * weight)

    __rmul__ = __mul__


def _numpy(value, dtype) -> np.ndarray:
    """An array, or a torch tensor (from training code) as a CPU array, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


def mix(codes: list[StyleCode], weights: list[float] | None = None) -> StyleCode:
    """Weighted blend of style codes; weights are normalised to sum to one."""
    if not codes:
        raise ValueError("mix() needs at least one style code")
    weights = list(weights) if weights is not None else [1.0] * len(codes)
    if len(weights) != len(codes):
        raise ValueError(f"{len(codes)} styles but {len(weights)} mix weights")
    _check_weights(weights)
    total = float(sum(weights))
    out = codes[0] * (weights[0] / total)
    for code, w in zip(codes[1:], weights[1:]):
        out = out + code * (w / total)
    return out


def normalized(weights: list[float]) -> list[float]:
    """Mix weights scaled to sum to one and rounded to 12 digits, so 7,3 and 0.7,0.3 give the same pixels (what
    every shell passes on); ValueError unless they are finite, non-negative and not all zero."""
    _check_weights(weights)
    total = sum(weights)
    return [round(w / total, 12) for w in weights]


def _check_weights(weights: list[float]) -> None:
    if not all(np.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("mix weights must be finite, non-negative and not all zero")
