"""The meta network: VGG style statistics → hidden state → the weights of a TransformNet."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..codes import StyleCode, mix  # noqa: F401 - re-exported
from .meta_numpy import BIAS_SCALE, GAIN_SCALE, HIDDEN_PER_LAYER, noise_image as _noise
from .transform import Params, generated_specs, layer_specs
from .vgg import STYLE_DIM

__all__ = ["MetaNet", "StyleCode", "mix", "random_code", "noise_image"]


class MetaNet(nn.Module):
    """Linear(1920, 128·L) + ReLU, then per generated layer one Linear(128, n_params) head (conv weight and
    bias) and one Linear(128, cout) gain head.

    Also owns the two 9x9 convs that are trained directly rather than generated, and the per-dimension mean and
    std of the training styles' statistics: raw VGG statistics share a large common offset, and standardising
    them lets the hidden layer see what distinguishes one style from another from the first step.
    """

    def __init__(self, base: int = 8):
        super().__init__()
        self.base = base
        self.specs = generated_specs(base)
        self.register_buffer("feat_mean", torch.zeros(STYLE_DIM))
        self.register_buffer("feat_std", torch.ones(STYLE_DIM))
        self.hidden = nn.Linear(STYLE_DIM, HIDDEN_PER_LAYER * len(self.specs))
        self.heads = nn.ModuleList(nn.Linear(HIDDEN_PER_LAYER, s.n_params) for s in self.specs)
        self.gains = nn.ModuleList(nn.Linear(HIDDEN_PER_LAYER, s.cout) for s in self.specs)
        for g in self.gains:  # start at gain 1: a model of format 2 (no gains) loads as exactly itself
            nn.init.zeros_(g.weight)
            nn.init.zeros_(g.bias)
        fixed = {s.name: s for s in layer_specs(base) if not s.generated}
        self.conv_in = nn.Conv2d(3, base, fixed["conv_in"].k)
        self.conv_out = nn.Conv2d(base, 3, fixed["conv_out"].k)

    @property
    def hidden_dim(self) -> int:
        return self.hidden.out_features

    def encode_features(self, style_vec: torch.Tensor) -> torch.Tensor:
        """(B, 1920) VGG mean/std statistics → (B, 128·L) hidden state."""
        return torch.relu(self.hidden((style_vec - self.feat_mean) / self.feat_std))

    @torch.no_grad()
    def set_feature_stats(self, style_vecs: torch.Tensor) -> None:
        """Standardise inputs by the statistics of a set of (N, 1920) style vectors (once, before training)."""
        self.feat_mean.copy_(style_vecs.mean(0))
        self.feat_std.copy_(style_vecs.std(0).clamp_min(1e-3))

    def network(self, hidden: torch.Tensor) -> Params:
        """(G, 128·L) hidden states → parameters of G TransformNets (leading dim G on generated layers)."""
        if hidden.dim() == 1:
            hidden = hidden[None]
        params: Params = {
            "conv_in.weight": self.conv_in.weight, "conv_in.bias": self.conv_in.bias,
            "conv_out.weight": self.conv_out.weight, "conv_out.bias": self.conv_out.bias,
        }
        chunks = hidden.split(HIDDEN_PER_LAYER, dim=1)
        for spec, head, gain, h in zip(self.specs, self.heads, self.gains, chunks):
            flat = head(h)
            n_w = spec.cout * spec.cin * spec.k * spec.k
            params[f"{spec.name}.weight"] = flat[:, :n_w].reshape(-1, spec.cout, spec.cin, spec.k, spec.k)
            params[f"{spec.name}.bias"] = flat[:, n_w:] * BIAS_SCALE
            params[f"{spec.name}.gain"] = 1 + gain(h) * GAIN_SCALE
        return params


def random_code(meta: MetaNet, seed: int = 0, spread: float = 1.0) -> StyleCode:
    """A random style: z ~ N(0, 1) in the standardised input space, through the hidden layer (ReLU); the same
    draw as :meth:`~metastyle_batch.model.meta_numpy.MetaWeights.random_hidden`."""
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, STYLE_DIM)).astype(np.float32))
    with torch.no_grad():
        hidden = meta.encode_features(meta.feat_mean + meta.feat_std * z.to(meta.feat_mean.device) * spread)
    return StyleCode(hidden[0].float().cpu().numpy())


def noise_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) Gaussian noise around mid-grey (std 0.25) in [0, 1]: what a generated network turns into a texture."""
    return torch.from_numpy(_noise(height, width, seed)).permute(2, 0, 1)[None].contiguous()
