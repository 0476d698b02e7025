"""Training images held in memory, with random resized square crops drawn from a seeded generator.

All randomness comes from generators seeded by (seed, step, rank), so a resumed run sees exactly the data
the uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..tensors import resize

EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in EXTS and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{folder}: no images found")
    return files


def load_folder(folder: str | Path, max_side: int = 512) -> list[torch.Tensor]:
    """Decode every image once into uint8 (3, H, W) tensors; unreadable files are skipped with a note."""
    return load_images(list_images(folder), max_side)


def load_images(paths: list[str | Path], max_side: int = 512, log=print) -> list[torch.Tensor]:
    """:func:`load_folder` for a list of files; ``log`` gets the note on each file skipped."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if max(im.size) > max_side:
                    im.thumbnail((max_side, max_side), Image.BICUBIC)
                images.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        except Exception as e:  # a bad file in a dataset should not stop training
            log(f"skipping {path}: {e}")
    return images


def generator(*keys: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(hash(tuple(keys)) & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def random_crop(img: torch.Tensor, size: int, g: torch.Generator, max_scale: float = 1.875) -> torch.Tensor:
    """Resize the shorter side into [size, size·max_scale], crop size², flip half the time → float (3, s, s)."""
    _, h, w = img.shape
    short = size + int(torch.randint(0, int(size * (max_scale - 1)) + 1, (1,), generator=g))
    x = resize(img.float().div(255)[None], shorter=short)[0]
    nh, nw = x.shape[-2:]
    top = int(torch.randint(0, nh - size + 1, (1,), generator=g))
    left = int(torch.randint(0, nw - size + 1, (1,), generator=g))
    x = x[:, top:top + size, left:left + size]
    if torch.rand(1, generator=g) < 0.5:
        x = x.flip(-1)
    return x.clamp(0, 1)


def is_flat(x: torch.Tensor, threshold: float = 0.02) -> bool:
    """Solid-colour crops carry no content and made the seed code's std-based losses blow up."""
    return float(x.std()) < threshold


def sample_batch(images: list[torch.Tensor], n: int, size: int, g: torch.Generator, tries: int = 10) -> torch.Tensor:
    crops = []
    while len(crops) < n:
        for _ in range(tries):
            crop = random_crop(images[int(torch.randint(len(images), (1,), generator=g))], size, g)
            if not is_flat(crop):
                break
        crops.append(crop)  # after `tries` flat crops we keep the last: the loss is guarded against it
    return torch.stack(crops)
