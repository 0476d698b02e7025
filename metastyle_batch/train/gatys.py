"""Gatys et al. optimisation: the image itself is optimised under the same VGG-16 losses (the quality yardstick)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.vgg import STYLE_LAYERS, VGG16
from .losses import perceptual_losses, style_targets


def optimize(vgg: VGG16, content: torch.Tensor, style: torch.Tensor, steps: int, *, content_layer: str = "relu2_2",
             content_weight: float = 1.0, style_weight: float = 50.0, lr: float = 0.02,
             on_step: Callable[[int, torch.Tensor, dict], None] | None = None) -> torch.Tensor:
    """Adam on the pixels, starting from the content image; ``on_step(step, image, losses)`` after every step."""
    with torch.no_grad():
        content_feat = vgg(content, (content_layer,))[content_layer]
        targets = style_targets(vgg(style, STYLE_LAYERS))
    img = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=lr)
    for step in range(1, steps + 1):
        lc, ls, _ = perceptual_losses(vgg, img, content_feat, targets, content_layer)
        loss = content_weight * lc + style_weight * ls
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
        if on_step:
            on_step(step, img.detach(), {"content": lc.item(), "style": ls.item()})
    return img.detach()
