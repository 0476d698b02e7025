"""Perceptual losses on VGG-16 features, shared by training, fine-tuning, evaluation and Gatys optimisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..metrics import directions, lab_points, sliced_wasserstein, tone_correlation
from ..model.transform import ConvSpec, DirectOps
from ..model.vgg import STYLE_LAYERS, style_vector

PALETTE_SIZE = 32  # training compares 32 x 32 Lab pixels of output and style: cheap, and enough for a palette
TONE_SIZE = 16
SPIKE_LIMIT = 6.0  # instance-normalised values beyond this many stds count as a spike (photo edges reach ~8)


def content_loss(out: dict[str, torch.Tensor], target: torch.Tensor, layer: str) -> torch.Tensor:
    return F.mse_loss(out[layer].float(), target.float())


def style_loss(out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """MSE between the 1920 raw mean/std statistics at relu1_2 … relu4_3 and the style's (as in the seed code)."""
    stats = style_vector(out)
    return F.mse_loss(stats, target.float().expand_as(stats))


def normalized_style_loss(out: dict[str, torch.Tensor], target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Each statistic divided by its spread over the training styles (``scale``, 1920), layers weighted equally.

    In raw units relu4_3's statistics are ~100x larger than relu1_2's and get ~300x the gradient, so the colours
    (which relu1_2 carries) barely trained; here every layer's means and stds count the same.
    """
    diff = (style_vector(out) - target.float()) / scale
    channels = [feats.shape[1] for feats in (out[name] for name in STYLE_LAYERS)] * 2
    return torch.stack([part.pow(2).mean() for part in diff.split(channels, dim=1)]).mean()


def style_targets(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    return style_vector(feats).detach().float()


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (independent of image size)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def palette_loss(out: torch.Tensor, style_lab: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced Wasserstein distance (Lab / 100) between the output's colours and the style's Lab pixels (B, N, 3)."""
    dirs = directions(16, generator, out.device)
    return sliced_wasserstein(lab_points(out, PALETTE_SIZE), style_lab.float(), dirs).mean() / 100


def tone_loss(out: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """1 - correlation of the coarse luminance of output and content: keeps the photo's light and dark layout."""
    return (1 - tone_correlation(out, content, TONE_SIZE)).mean()


def luma(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) RGB → (B, 1, h, w) BT.601 luminance, resized to ``size`` px on the longer side."""
    r, g, b = x.float().unbind(1)
    y = (0.299 * r + 0.587 * g + 0.114 * b)[:, None]
    scale = size / max(y.shape[-2:])
    hw = (max(1, round(y.shape[-2] * scale)), max(1, round(y.shape[-1] * scale)))
    return y if hw == tuple(y.shape[-2:]) else F.interpolate(y, size=hw, mode="bilinear", align_corners=False,
                                                                antialias=True)


def local_std(y: torch.Tensor, k: int) -> torch.Tensor:
    """Standard deviation of ``y`` (B, 1, H, W) in a k × k window around each pixel; the floor keeps the gradient
    finite where a window is flat."""
    mean = F.avg_pool2d(y, k, 1, k // 2, count_include_pad=False)
    return (F.avg_pool2d(y * y, k, 1, k // 2, count_include_pad=False) - mean * mean).clamp_min(1e-12).sqrt()


def flat_loss(out: torch.Tensor, content: torch.Tensor, size: int = 256, flat: float = 0.01) -> torch.Tensor:
    """Contrast invented where the photo is flat (B,): the output's mean local luminance std (9 px at ``size`` px)
    over the pixels where the photo's own is under ``flat``. The blobs of issue 25 (lumps in skies, water, walls)
    as a loss; ``benchmarks/eye.py`` measures the same."""
    with torch.no_grad():
        mask = (local_std(luma(content, size), 9) < flat).float()
    return (local_std(luma(out, size), 9) * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1)


class SpikeMeter(DirectOps):
    """Runs the network like :class:`DirectOps` and measures instance norm's "droplet" artefact (Karras et al.,
    StyleGAN2, sec. 2): a lone spike tens of stds out inflates a channel's std, which mutes the rest of the map.
    Our generated networks learnt it: it grows through the residual blocks to 20-47 stds at one spot and shows
    as a dark or blue blot, with a flatter, greyer image around it. ``total``: the squared excess of every
    normalised value over ``SPIKE_LIMIT`` stds, summed over each map and layer, averaged over batch and channels.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | float = 0.0

    def conv_norm(self, x: torch.Tensor, w: torch.Tensor, spec: ConvSpec, shift: torch.Tensor, relu: bool,
                  gain: torch.Tensor | None) -> torch.Tensor:
        z = F.instance_norm(DirectOps.conv(x, w, None, spec))
        self.measure(z)
        return DirectOps.affine(z, shift, relu, gain)

    def measure(self, z: torch.Tensor) -> None:
        self.total = self.total + F.relu(z.abs() - SPIKE_LIMIT).square().sum(dim=(2, 3)).mean()


def perceptual_losses(vgg, out_img: torch.Tensor, content_feat: torch.Tensor, targets, content_layer: str):
    """(content, style, tv) losses of ``out_img`` with the raw style loss; one VGG pass (Gatys, evaluation)."""
    layers = tuple(dict.fromkeys(STYLE_LAYERS + (content_layer,)))
    feats = vgg(out_img, layers)
    return content_loss(feats, content_feat, content_layer), style_loss(feats, targets), tv_loss(out_img)


@dataclass
class Objective:
    """The weighted training objective. ``style_scale`` (1920) switches to :func:`normalized_style_loss`."""

    content_layer: str = "relu2_2"
    content_weight: float = 1.0
    style_weight: float = 50.0
    tv_weight: float = 1.0
    palette_weight: float = 0.0
    tone_weight: float = 0.0
    flat_weight: float = 0.0
    style_scale: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg: dict, style_scale: torch.Tensor | None) -> "Objective":
        """From a training config (dict); models trained before the normalised loss keep the raw one."""
        norm = bool(cfg.get("style_norm", False))
        return cls(cfg.get("content_layer", "relu2_2"), float(cfg.get("content_weight", 1.0)),
                   float(cfg.get("style_weight", 50.0)), float(cfg.get("tv_weight", 1.0)),
                   float(cfg.get("palette_weight", 0.0)), float(cfg.get("tone_weight", 0.0)),
                   float(cfg.get("flat_weight", 0.0)), style_scale if norm else None)

    def __call__(self, vgg, out: torch.Tensor, content: torch.Tensor, content_feat: torch.Tensor,
                 targets: torch.Tensor, style_lab: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, terms) for a batch ``out`` made from ``content``; ``style_lab`` (B, N, 3) for the palette term."""
        feats = vgg(out, tuple(dict.fromkeys(STYLE_LAYERS + (self.content_layer,))))
        ls = (style_loss(feats, targets) if self.style_scale is None
              else normalized_style_loss(feats, targets, self.style_scale.to(out.device)))
        terms = {"content": content_loss(feats, content_feat, self.content_layer), "style": ls, "tv": tv_loss(out)}
        total = self.content_weight * terms["content"] + self.style_weight * ls + self.tv_weight * terms["tv"]
        if self.palette_weight and style_lab is not None:
            terms["palette"] = palette_loss(out, style_lab, generator)
            total = total + self.palette_weight * terms["palette"]
        if self.tone_weight:
            terms["tone"] = tone_loss(out, content)
            total = total + self.tone_weight * terms["tone"]
        if self.flat_weight:
            terms["flat"] = flat_loss(out, content).mean()
            total = total + self.flat_weight * terms["flat"]
        return total, terms
