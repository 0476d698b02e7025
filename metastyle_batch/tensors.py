"""Torch plumbing shared by inference, training and the tools: the device, image ↔ tensor, the one resize."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but no CUDA GPU is available")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' requested but Apple's MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_rgb_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float array in [0, 1] → (1, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]


def resize(x: torch.Tensor, *, shorter: int | None = None, longer: int | None = None, mode: str = "bilinear",
           upscale: bool = True) -> torch.Tensor:
    """(N, 3, H, W) with the shorter side set to ``shorter`` (or the longer to ``longer``), aspect kept.

    Antialiased when shrinking, clamped to [0, 1] (bicubic overshoots); ``upscale=False`` never enlarges.
    """
    h, w = x.shape[-2:]
    scale = shorter / min(h, w) if shorter else longer / max(h, w)  # type: ignore[operator]
    if scale == 1 or (scale > 1 and not upscale):
        return x
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=scale < 1).clamp(0, 1)
