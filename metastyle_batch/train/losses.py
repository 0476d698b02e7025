"""Perceptual losses on VGG-16 features, shared by training, evaluation and Gatys optimisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.vgg import STYLE_LAYERS, style_vector


def content_loss(out: dict[str, torch.Tensor], target: torch.Tensor, layer: str) -> torch.Tensor:
    return F.mse_loss(out[layer].float(), target.float())


def style_loss(out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """MSE between the 1920 mean/std statistics at relu1_2 … relu4_3 and the style's (as in the seed code)."""
    stats = style_vector(out)
    return F.mse_loss(stats, target.float().expand_as(stats))


def style_targets(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    return style_vector(feats).detach().float()


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (independent of image size)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def perceptual_losses(vgg, out_img: torch.Tensor, content_feat: torch.Tensor, targets, content_layer: str):
    """(content, style, tv) losses of ``out_img``; one VGG pass."""
    layers = tuple(dict.fromkeys(STYLE_LAYERS + (content_layer,)))
    feats = vgg(out_img, layers)
    return content_loss(feats, content_feat, content_layer), style_loss(feats, targets), tv_loss(out_img)
