"""Quality measures that agree with the eye: the style's palette, the photo's tone, the style's texture.

The VGG losses alone mislead (a muddy output can have a low mean/std style loss), so evaluation also reports:

- palette: sliced Wasserstein distance between the CIE-Lab pixel distributions of output and style (lower:
  the style's colours);
- tone: Pearson correlation of the coarse luminance of output and content (higher: the photo's light and dark
  layout survives);
- style retrieval: is the nearest style, by VGG Gram matrices, the output's own style (higher: its texture).

All are differentiable where that makes sense, so training can use the first two as losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])  # D65
GRAM_LAYERS = ("relu2_2", "relu3_3")


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB (…, 3, H, W) in [0, 1] → CIE-Lab (L in [0, 100], a and b roughly ±100)."""
    x = x.float().clamp(0, 1)
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055).clamp_min(1e-8) ** 2.4, x / 12.92)
    xyz = torch.einsum("ij,...jhw->...ihw", _RGB_TO_XYZ.to(x), lin) / _WHITE.to(x).view(3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-8) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -3)


def lab_points(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) RGB → (B, size², 3) Lab pixels of the image resized to size × size."""
    small = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return rgb_to_lab(small).flatten(2).transpose(1, 2)


def directions(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``n`` random unit vectors in 3-D (Lab), (3, n)."""
    d = torch.randn(3, n, generator=generator)
    return (d / d.norm(dim=0, keepdim=True)).to(device)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Mean 1-D Wasserstein-1 distance over the projections on ``dirs`` of point sets (B, N, 3) and (B, M, 3) → (B,).

    ``b`` may hold a different number of points; its sorted projections are resampled to ``a``'s count.
    """
    pa = torch.sort(a @ dirs, dim=1).values
    pb = torch.sort(b @ dirs, dim=1).values
    if pb.shape[1] != pa.shape[1]:
        pb = F.interpolate(pb.transpose(1, 2), size=pa.shape[1], mode="linear", align_corners=True).transpose(1, 2)
    return (pa - pb).abs().mean(dim=(1, 2))


def palette_distance(out: torch.Tensor, style: torch.Tensor, size: int = 96, n_dirs: int = 64, seed: int = 0) -> torch.Tensor:
    """Sliced Wasserstein distance (Lab units) between the colours of ``out`` (B, 3, H, W) and ``style`` (B or 1,
    3, H', W': any size, both are resized to size × size) → (B,)."""
    dirs = directions(n_dirs, torch.Generator().manual_seed(seed), out.device)
    points = lab_points(out, size)
    return sliced_wasserstein(points, lab_points(style, size).expand_as(points), dirs)


def luminance(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) RGB → (B, size²) BT.601 luminance, bilinearly resized."""
    r, g, b = x.float().unbind(1)
    y = (0.299 * r + 0.587 * g + 0.114 * b)[:, None]
    return F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False, antialias=True).flatten(1)


def tone_correlation(out: torch.Tensor, content: torch.Tensor, size: int = 24) -> torch.Tensor:
    """Pearson correlation of the size × size luminance of ``out`` and ``content`` (B, 3, H, W) → (B,)."""
    a, b = luminance(out, size), luminance(content, size)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


def gram(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C) normalised by C·H·W."""
    b, c, h, w = feat.shape
    f = feat.float().flatten(2)
    return f @ f.transpose(1, 2) / (c * h * w)


@torch.no_grad()
def gram_signature(vgg, x: torch.Tensor, size: int = 256, feats: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Gram matrices of VGG-16 relu2_2 and relu3_3 of ``x`` resized to size × size; ``feats``: the VGG features
    of ``x`` already at hand (used when ``x`` is size × size, saving a second VGG pass)."""
    if feats is None or tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        feats = vgg(x, GRAM_LAYERS)
    return [gram(feats[name]) for name in GRAM_LAYERS]


def gram_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Relative Frobenius distance summed over layers: a (1, C, C) signature against b (N, C, C) → (N,)."""
    return sum((ga - gb).flatten(1).norm(dim=1) / gb.flatten(1).norm(dim=1).clamp_min(1e-12) for ga, gb in zip(a, b))


def retrieval_hits(outputs: list[list[torch.Tensor]], own: list[int], styles: list[list[torch.Tensor]]) -> list[bool]:
    """For each output signature: is the nearest style signature (by :func:`gram_distance`) its own style?"""
    stacked = [torch.cat([s[i] for s in styles]) for i in range(len(GRAM_LAYERS))]
    return [int(gram_distance(sig, stacked).argmin()) == k for sig, k in zip(outputs, own)]
