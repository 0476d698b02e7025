"""Measure a model against Gatys optimisation and peers on a content × style set: VGG losses and look metrics."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import Stylizer, match_palette
from ..grid import save_grid
from ..images import read_image
from ..metrics import gram_signature, palette_distance, retrieval_hits, tone_correlation
from ..model.vgg import STYLE_LAYERS
from ..tensors import load_rgb_tensor, resize
from .data import list_images
from .finetune import finetune
from .gatys import optimize
from .losses import content_loss, style_loss, style_targets

METHODS = ("content", "ours", "gatys50", "gatys200")
COLUMNS = ("content_loss", "style_loss", "palette", "tone", "retrieval")
Peer = Callable[[torch.Tensor, Path], torch.Tensor]  # (content (1, 3, S, S) in [0, 1], style file) → same-size image


@dataclass
class Row:
    content: str
    style: str
    method: str
    content_loss: float
    style_loss: float
    palette: float = 0.0  # sliced Wasserstein distance of Lab colours to the style's (lower: its palette)
    tone: float = 0.0  # correlation of 24x24 luminance with the photo's (higher: its light and dark layout)
    retrieval: float = 0.0  # 1 when the nearest eval style by VGG Gram matrices is this pair's style


def _load(path: Path, size: int) -> torch.Tensor:
    """Shorter side → ``size``, centre-cropped square: every method sees the same pixels."""
    x = resize(load_rgb_tensor(read_image(path).frames[0]), shorter=size)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size].clamp(0, 1)


def _spread(files: list[Path], n: int | None) -> list[Path]:
    """``n`` files evenly spaced over the sorted list: a subset that spans the whole set, not just its start."""
    if n is None or n >= len(files):
        return files
    return [files[i * len(files) // n] for i in range(n)]


def evaluate(stylizer: Stylizer, content_dir: str | Path, style_dir: str | Path, out_dir: str | Path, *,
             size: int = 256, n_content: int | None = None, n_style: int | None = None, gatys_steps: int = 200,
             content_layer: str = "relu2_2", style_weight: float = 15.0, progress=None,
             peers: dict[str, Peer] | None = None, refine_steps: int = 0) -> list[Row]:
    """Losses and look metrics (:mod:`metastyle_batch.metrics`) of the content image, our output, Gatys@50/@N
    (``style_weight``: its raw style-loss weight) and any ``peers`` for each pair. ``refine_steps`` adds
    "refined": each style's network fine-tuned that long on all the content images, as ``image --refine`` does
    on a folder.

    Writes results.csv and grid.png (per pair: content, style, ours, the Gatys snapshots, then the peers).
    """
    peers = peers or {}
    methods = (METHODS if gatys_steps > 0 else METHODS[:2]) + tuple(peers)  # "gatys200" is Gatys@gatys_steps
    if refine_steps:
        methods = methods[:2] + ("refined",) + methods[2:]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contents = _spread(list_images(content_dir), n_content)
    styles = _spread(list_images(style_dir), n_style)
    vgg, device = stylizer.vgg.float(), stylizer.device
    style_images = [_load(p, size).to(device) for p in styles]
    style_sigs = [gram_signature(vgg, s) for s in style_images]
    rows: list[Row] = []
    grid = []
    pairs = list(itertools.product(contents, range(len(styles))))
    refined: dict[int, dict] = {}
    photos = [(_load(p, size) * 255).round().to(torch.uint8)[0] for p in contents] if refine_steps else []
    for i, (cpath, k) in enumerate(pairs):
        spath, s = styles[k], style_images[k]
        c = _load(cpath, size).to(device)
        with torch.no_grad():
            c_feat = vgg(c, (content_layer,))[content_layer]
            targets = style_targets(vgg(s, STYLE_LAYERS))
        code = stylizer.encode(spath)  # the product's output: the network, then the palette transfer
        images = {"content": c, "ours": match_palette(stylizer.run(c, stylizer.network(code)), code, stylizer.palette)}
        if refine_steps:
            if k not in refined:
                refined[k] = finetune(stylizer, spath, photos, refine_steps).params
            images["refined"] = match_palette(stylizer.run(c, refined[k]), code, stylizer.palette)
        if gatys_steps > 0:
            snapshots = {}
            optimize(vgg, c, s, gatys_steps, content_layer=content_layer, style_weight=style_weight,
                     on_step=lambda step, img, _: snapshots.__setitem__(step, img.clone()) if step in (50, gatys_steps) else None)
            images["gatys50"], images["gatys200"] = snapshots.get(50, c), snapshots[gatys_steps]
        for name, peer in peers.items():
            images[name] = peer(c.cpu(), spath).to(device).clamp(0, 1)
        for method in methods:
            img = images[method].float()
            with torch.no_grad():
                feats = vgg(img, tuple(dict.fromkeys(STYLE_LAYERS + (content_layer,))))
                hit = retrieval_hits([gram_signature(vgg, img, feats=feats)], [k], style_sigs)[0]
                rows.append(Row(cpath.name, spath.name, method, content_loss(feats, c_feat, content_layer).item(),
                                style_loss(feats, targets).item(), palette_distance(img, s).item(),
                                tone_correlation(img, c).item(), float(hit)))
        grid.append([c[0], s[0]] + [images[m][0] for m in methods[1:]])
        if progress:
            progress(i + 1, len(pairs))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["content", "style", "method", *COLUMNS])
        for r in rows:
            w.writerow([r.content, r.style, r.method] + [f"{getattr(r, col):.5g}" for col in COLUMNS])
    save_grid(grid, out / "grid.png", cell=160)
    return rows


def summarize(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Per method, the mean of every column (retrieval: the fraction of outputs whose nearest style is their own)."""
    out = {}
    for method in dict.fromkeys(r.method for r in rows):
        sel = [r for r in rows if r.method == method]
        out[method] = {col: sum(getattr(r, col) for r in sel) / len(sel) for col in COLUMNS}
    return out
