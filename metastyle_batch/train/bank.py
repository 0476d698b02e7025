"""Style targets precomputed once for every training style × a few augmented crops.

The style image's VGG pass was a quarter of every training step, and its result depends only on the crop: a
bank of ``per_style`` crops per style (random scale, flips) gives the meta network's inputs, the loss targets and
the Lab pixels of the palette loss for the whole run in a few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..metrics import lab_points
from ..paths import atomic_path
from ..model.vgg import STYLE_LAYERS, VGG16, style_vector
from . import data
from .losses import PALETTE_SIZE


@dataclass
class StyleBank:
    vectors: torch.Tensor  # (N, 1920) float32: VGG statistics, input and target at once
    lab: torch.Tensor  # (N, PALETTE_SIZE², 3) float16: Lab pixels of each crop
    key: str = ""  # what it was built from (crop, crops per style, number of styles)

    def __len__(self) -> int:
        return len(self.vectors)

    def sample(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self), (n,), generator=g)
        return self.vectors[idx], self.lab[idx].float()

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save({"vectors": self.vectors, "lab": self.lab, "key": self.key}, tmp)

    @classmethod
    def load(cls, path: Path) -> "StyleBank":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["vectors"], state["lab"], state.get("key", ""))


@torch.no_grad()
def build_bank(vgg: VGG16, styles: list[torch.Tensor], per_style: int, crop: int, device, amp, chunk: int = 32,
               progress=None) -> StyleBank:
    """Every style ``per_style`` times, each a random crop from a fixed generator: like the images themselves, the
    bank is part of the data set, the same for every run seed (which orders the sampling)."""
    g = data.generator(0, 7)
    vectors, labs = [], []
    order = [i for i in range(len(styles)) for _ in range(per_style)]
    for start in range(0, len(order), chunk):
        batch = torch.stack([data.random_crop(styles[i], crop, g) for i in order[start:start + chunk]]).to(device)
        with amp:
            feats = vgg(batch, STYLE_LAYERS)
        vectors.append(style_vector(feats).float().cpu())
        labs.append(lab_points(batch, PALETTE_SIZE).half().cpu())
        if progress:
            progress(min(start + chunk, len(order)), len(order))
    return StyleBank(torch.cat(vectors), torch.cat(labs), bank_key(styles, per_style, crop))


def bank_key(styles: list[torch.Tensor], per_style: int, crop: int) -> str:
    return f"crop {crop}, {per_style} per style, {len(styles)} styles"
