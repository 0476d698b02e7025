"""Measure a model against Gatys optimisation on a content × style set, with the training losses."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..engine import Stylizer, load_rgb_tensor
from ..grid import save_grid
from ..images import read_image
from ..model.vgg import STYLE_LAYERS
from .data import list_images
from .gatys import optimize
from .losses import content_loss, style_loss, style_targets

METHODS = ("content", "ours", "gatys50", "gatys200")
Peer = Callable[[torch.Tensor, Path], torch.Tensor]  # (content (1, 3, S, S) in [0, 1], style file) → same-size image


@dataclass
class Row:
    content: str
    style: str
    method: str
    content_loss: float
    style_loss: float


def _load(path: Path, size: int) -> torch.Tensor:
    """Shorter side → ``size``, centre-cropped square: every method sees the same pixels."""
    x = load_rgb_tensor(read_image(path).frames[0])
    scale = size / min(x.shape[-2:])
    x = F.interpolate(x, size=(max(size, round(x.shape[-2] * scale)), max(size, round(x.shape[-1] * scale))),
                      mode="bilinear", align_corners=False, antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size].clamp(0, 1)


def _spread(files: list[Path], n: int | None) -> list[Path]:
    """``n`` files evenly spaced over the sorted list: a subset that spans the whole set, not just its start."""
    if n is None or n >= len(files):
        return files
    return [files[i * len(files) // n] for i in range(n)]


def evaluate(stylizer: Stylizer, content_dir: str | Path, style_dir: str | Path, out_dir: str | Path, *,
             size: int = 256, n_content: int | None = None, n_style: int | None = None, gatys_steps: int = 200,
             content_layer: str = "relu2_2", style_weight: float = 50.0, progress=None,
             peers: dict[str, Peer] | None = None) -> list[Row]:
    """Losses of the content image, our output, Gatys@50/@N and any ``peers`` for each pair.

    Writes results.csv and grid.png (per pair: content, style, ours, Gatys@50, Gatys@N, then the peers).
    """
    peers = peers or {}
    methods = METHODS + tuple(peers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contents = _spread(list_images(content_dir), n_content)
    styles = _spread(list_images(style_dir), n_style)
    vgg, device = stylizer.vgg.float(), stylizer.device
    rows: list[Row] = []
    grid = []  # per pair: content, style, ours, gatys50, gatys200
    pairs = list(itertools.product(contents, styles))
    for i, (cpath, spath) in enumerate(pairs):
        c, s = _load(cpath, size).to(device), _load(spath, size).to(device)
        with torch.no_grad():
            c_feat = vgg(c, (content_layer,))[content_layer]
            targets = style_targets(vgg(s, STYLE_LAYERS))

        def measure(img: torch.Tensor, method: str) -> None:
            with torch.no_grad():
                feats = vgg(img.float(), tuple(dict.fromkeys(STYLE_LAYERS + (content_layer,))))
                rows.append(Row(cpath.name, spath.name, method, content_loss(feats, c_feat, content_layer).item(),
                                style_loss(feats, targets).item()))

        images = {"content": c}
        code = stylizer.encode(spath)
        images["ours"] = stylizer.run(c, stylizer.network(code))
        snapshots = {}
        optimize(vgg, c, s, gatys_steps, content_layer=content_layer, style_weight=style_weight,
                 on_step=lambda step, img, _: snapshots.__setitem__(step, img.clone()) if step in (50, gatys_steps) else None)
        images["gatys50"], images["gatys200"] = snapshots.get(50, c), snapshots[gatys_steps]
        for name, peer in peers.items():
            images[name] = peer(c.cpu(), spath).to(device).clamp(0, 1)
        for method in methods:
            measure(images[method], method)
        grid.append([c[0], s[0]] + [images[m][0] for m in methods[1:]])
        if progress:
            progress(i + 1, len(pairs))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["content", "style", "method", "content_loss", "style_loss"])
        for r in rows:
            w.writerow([r.content, r.style, r.method, f"{r.content_loss:.5g}", f"{r.style_loss:.5g}"])
    save_grid(grid, out / "grid.png", cell=160)
    return rows


def summarize(rows: list[Row]) -> dict[str, tuple[float, float]]:
    """Mean (content loss, style loss) per method."""
    out = {}
    for method in dict.fromkeys(r.method for r in rows):
        sel = [r for r in rows if r.method == method]
        if sel:
            out[method] = (sum(r.content_loss for r in sel) / len(sel), sum(r.style_loss for r in sel) / len(sel))
    return out
