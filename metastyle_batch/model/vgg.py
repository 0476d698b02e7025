"""Frozen ImageNet VGG-16 up to relu4_3: the style encoder and the loss network."""

from __future__ import annotations

import torch
from torch import nn

from .style_encoder import CFG as _CFG, EPS, MEAN as _MEAN, STD as _STD, STYLE_DIM, STYLE_LAYERS, TAPS


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in _CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(item[0], item[1], 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """Returns the requested ReLU activations for RGB input in [0, 1]."""

    def __init__(self, state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.features = _features()
        if state is not None:
            self.features.load_state_dict({k: torch.as_tensor(v).float() for k, v in state.items()}, strict=True)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] = STYLE_LAYERS) -> dict[str, torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {TAPS[name]: name for name in layers}
        out: dict[str, torch.Tensor] = {}
        last = max(wanted)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return out


def mean_std(feat: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std; eps keeps the std gradient finite on flat (solid-colour) input."""
    flat = feat.float().flatten(2)
    mean = flat.mean(2)
    std = (flat.var(2, unbiased=False) + eps).sqrt()
    return mean, std


def style_vector(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """The meta network's input: [means of all taps, stds of all taps] → (B, 1920)."""
    stats = [mean_std(feats[name]) for name in STYLE_LAYERS]
    return torch.cat([m for m, _ in stats] + [s for _, s in stats], dim=1)


def load_vgg(path=None, *, download: bool = True, log=None) -> VGG16:
    from .vgg_weights import load_vgg16_state

    return VGG16(load_vgg16_state(path, download=download, log=log))


__all__ = ["VGG16", "TAPS", "STYLE_LAYERS", "STYLE_DIM", "mean_std", "style_vector", "load_vgg"]
