"""Palette transfer: move an output's colours part of the way to the style image's (mean and covariance in RGB).

The meta network takes a style's texture well but only part of its colours (docs/BENCHMARKS.md, quality). The
classic linear colour transfer (the mean and covariance matching of Gatys et al., "Controlling Perceptual Factors
in Neural Style Transfer", 2017) fixes that after the network: y' = A (y − μ_y) + μ_s with A = Σ_s^½ Σ_y^−½, mixed
with y by ``strength``. It is an affine map of RGB per image, so the photo's light and dark layout is kept.
Colours are carried as raw moments (mean, E[ppᵀ]: 12 numbers), which blend linearly like the style codes do.
Numpy only (imported when used, so the CLI can read the default): the torch-free CPU path (netcache) uses it
as the engine does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

_BLOCK = 1 << 20  # pixels per block of work on a big picture
PALETTE_STRENGTH = 0.5  # dev set, 36 pairs: palette 3.46 → 2.41 at 0.5 (1.85 at 1), tone unchanged, retrieval 1.00 → 0.97


def moments(pixels: np.ndarray) -> np.ndarray:
    """(3, N) RGB pixels → (12,) float64 raw moments: mean (3) and E[p pᵀ] (9)."""
    import numpy as np

    from .memory import drop_spilled

    p = np.asarray(pixels, dtype=np.float32)
    n = max(1, p.shape[1])
    total, outer = np.zeros(3), np.zeros((3, 3))
    for c in range(0, p.shape[1], _BLOCK):  # in blocks: a spilled picture stays out of memory
        block = p[:, c:c + _BLOCK]
        total += block.sum(1, dtype=np.float64)
        outer += block @ block.T
        drop_spilled()
    return np.concatenate([total / n, outer.ravel() / n])


def affine(source: np.ndarray, target: np.ndarray, strength: float = PALETTE_STRENGTH) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) such that ``A @ p + b`` moves pixels with ``source`` moments ``strength`` of the way to ``target``."""
    import numpy as np

    def mean_cov(m):
        mu = m[:3]
        return mu, m[3:].reshape(3, 3) - np.outer(mu, mu) + 1e-5 * np.eye(3)

    def sqrtm(c, inverse=False):
        e, v = np.linalg.eigh(c)
        e = np.clip(e, 1e-8, None)
        return (v * (e ** (-0.5 if inverse else 0.5))) @ v.T

    mu_y, cov_y = mean_cov(np.asarray(source, np.float64))
    mu_s, cov_s = mean_cov(np.asarray(target, np.float64))
    full = sqrtm(cov_s) @ sqrtm(cov_y, inverse=True)
    a = (1 - strength) * np.eye(3) + strength * full
    b = strength * (mu_s - full @ mu_y)
    return a.astype(np.float32), b.astype(np.float32)


def transfer(chw: np.ndarray, target: np.ndarray, strength: float = PALETTE_STRENGTH) -> np.ndarray:
    """A (3, H, W) float32 RGB image in [0, 1], moved in place towards ``target`` moments and clipped to [0, 1]."""
    import numpy as np

    p = chw.reshape(3, -1)
    if not np.shares_memory(p, chw):
        raise ValueError("transfer() needs a contiguous (3, H, W) array")
    return apply(chw, *affine(moments(p), target, strength))


def apply(chw: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A @ p + b`` on every pixel of a contiguous (3, H, W) float32 array, in place, clipped to [0, 1]."""
    import numpy as np

    from .memory import drop_spilled

    p = chw.reshape(3, -1)
    for c in range(0, p.shape[1], _BLOCK):  # in blocks: no second copy of a big frame
        p[:, c:c + _BLOCK] = np.clip(a @ p[:, c:c + _BLOCK] + b[:, None], 0, 1)
        drop_spilled()
    return chw
