"""Gatys et al. optimisation: the image itself is optimised under the same VGG-16 losses (the quality yardstick)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.vgg import STYLE_LAYERS, VGG16
from .losses import perceptual_losses, style_targets

OPTIMIZERS = ("adam", "lbfgs")


def optimize(vgg: VGG16, content: torch.Tensor, style: torch.Tensor, steps: int, *, content_layer: str = "relu2_2",
             content_weight: float = 1.0, style_weight: float = 50.0, lr: float | None = None,
             on_step: Callable[[int, torch.Tensor, dict], None] | None = None, optimizer: str = "adam",
             tv_weight: float = 0.0) -> torch.Tensor:
    """Optimise the pixels, starting from the content image; ``on_step(step, image, losses)`` after every step.

    ``optimizer`` is ``"adam"`` (default lr 0.02; one step = one VGG forward/backward) or ``"lbfgs"`` (the paper's
    choice, default lr 1 with a strong-Wolfe line search; one step = one L-BFGS iteration, which may evaluate the
    losses a few times). The image is clamped to [0, 1] after every step. ``losses`` holds ``content``, ``style``,
    ``tv`` and the weighted ``total`` of the image *before* that step's update (the last evaluation).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r} (use adam or lbfgs)")
    with torch.no_grad():
        content_feat = vgg(content, (content_layer,))[content_layer]
        targets = style_targets(vgg(style, STYLE_LAYERS))
    img = content.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)  # L-BFGS views grads
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([img], lr=0.02 if lr is None else lr)
    else:
        opt = torch.optim.LBFGS([img], lr=1.0 if lr is None else lr, max_iter=1, history_size=50,
                                line_search_fn="strong_wolfe")
    last: dict = {}

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        lc, ls, ltv = perceptual_losses(vgg, img, content_feat, targets, content_layer)
        loss = content_weight * lc + style_weight * ls + (tv_weight * ltv if tv_weight else 0.0)
        loss.backward()
        last.update(content=lc.item(), style=ls.item(), tv=ltv.item(), total=loss.item())
        return loss

    for step in range(1, steps + 1):
        if optimizer == "adam":
            closure()
            opt.step()
        else:
            opt.step(closure)
        with torch.no_grad():
            img.clamp_(0, 1)
        if on_step:
            on_step(step, img.detach(), dict(last))
    return img.detach()


def image_losses(vgg: VGG16, img: torch.Tensor, content: torch.Tensor, style: torch.Tensor, *,
                 content_layer: str = "relu2_2") -> dict[str, float]:
    """Content and style loss of ``img`` against a content and a style image (no gradients)."""
    with torch.no_grad():
        content_feat = vgg(content, (content_layer,))[content_layer]
        targets = style_targets(vgg(style, STYLE_LAYERS))
        lc, ls, ltv = perceptual_losses(vgg, img, content_feat, targets, content_layer)
    return {"content": lc.item(), "style": ls.item(), "tv": ltv.item()}
