"""Side-by-side grids of images (training samples, evaluation, interpolation strips)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .paths import atomic_write_bytes


def to_pil(img) -> Image.Image:
    """(3, H, W) tensor or (H, W, 3) array in [0, 1] → 8-bit RGB (torch is not imported here)."""
    if hasattr(img, "detach"):
        img = img.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))


def save_grid(rows: list[list], path: str | Path, cell: int = 192, pad: int = 4) -> None:
    """Rows of images (None leaves a blank cell), each fitted into a ``cell``² square; written atomically, as
    JPEG for a .jpg/.jpeg path and as PNG otherwise."""
    ncols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (ncols * (cell + pad) + pad, len(rows) * (cell + pad) + pad), "white")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img is None:
                continue
            im = to_pil(img)
            im.thumbnail((cell, cell), Image.LANCZOS)
            x = pad + j * (cell + pad) + (cell - im.width) // 2
            y = pad + i * (cell + pad) + (cell - im.height) // 2
            canvas.paste(im, (x, y))
    buf = io.BytesIO()
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        canvas.save(buf, "JPEG", quality=88)
    else:
        canvas.save(buf, "PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
