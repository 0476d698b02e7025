"""Johnson et al. per-style networks: fine-tune the TransformNet the meta network generates for one style.

The generated parameters become plain tensors optimised with Adam on crops of a content folder, under the
model's own training losses (``info["config"]`` of the model file; TrainConfig defaults where it has none).
The result is a *network file*: safetensors holding one TransformNet (generated layers with a leading group
dim of 1, exactly as :meth:`Stylizer.network` returns them) with metadata ``format = metastyle-batch/net-2``,
``base`` and a JSON ``metastyle`` entry (style, steps, losses, source model), plus a ``.sha256`` sidecar.
:func:`load_net` reads it back as ``Params`` for :meth:`Stylizer.run`, ``transform`` or ``export_onnx``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from ..errors import check_output
from ..model.netfile import NET_FORMAT, NetError, check_params as _check_params, load_net_arrays, read_net_info  # noqa: F401
from ..model.transform import Params, layer_specs, transform
from ..model.vgg import STYLE_LAYERS
from ..paths import atomic_write_bytes, sha256_file
from ..tensors import load_rgb_tensor, resize



@dataclass
class FinetuneResult:
    params: Params  # float32, on the stylizer's device, G == 1
    loss_before: dict[str, float]  # total, content, style, tv on the fixed validation batch
    loss_after: dict[str, float]
    steps: int
    seconds: float
    config: dict  # the loss settings used


def training_config(info: dict) -> dict:
    """The model's training settings (``info["config"]``) over TrainConfig's defaults."""
    from .config import TrainConfig

    cfg = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    cfg["style_norm"] = False  # models trained before the normalised style loss have no such key
    cfg.update({k: v for k, v in (info.get("config") or {}).items() if k in cfg or k in ("content_dir", "style_dir")})
    return cfg


def _style_tensor(rgb: np.ndarray, size: int, device) -> torch.Tensor:
    return resize(load_rgb_tensor(rgb).to(device), shorter=size)


def finetune(stylizer, style, content_dir: str | os.PathLike | list[torch.Tensor], steps: int = 500, *, lr: float = 1e-3,
             batch: int | None = None, crop: int | None = None, seed: int = 0, val_batch: int = 4,
             progress: Callable[[int, int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune the network generated for ``style`` (path, bytes, RGB array or StyleCode) on ``content_dir``
    (a folder, or uint8 (3, H, W) images: ``image --refine`` trains on the photos it is about to stylize).

    Losses: the model's training losses (content layer and weights from its config). ``loss_before`` and
    ``loss_after`` are measured on the same fixed, seeded validation crops. ``progress(step, steps, loss)``.
    """
    from ..images import read_image
    from ..model.meta import StyleCode
    from . import data
    from ..metrics import lab_points
    from .losses import PALETTE_SIZE, Objective, style_targets

    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    cfg = training_config(stylizer.info)
    batch = int(batch or cfg["batch"])
    crop = int(crop or cfg["crop"])
    layer = cfg["content_layer"]
    objective = Objective.from_config(cfg, stylizer.meta.feat_std)
    device = stylizer.device

    contents = content_dir if isinstance(content_dir, list) else data.load_folder(content_dir)  # FileNotFoundError
    if not contents:
        raise FileNotFoundError(f"{content_dir}: no readable images")
    code = style if isinstance(style, StyleCode) else stylizer.encode(style)
    vgg = stylizer.vgg.float()
    if isinstance(style, np.ndarray):
        rgb = style
    elif isinstance(style, StyleCode):
        raise ValueError("finetune needs the style image (the losses compare against its VGG statistics)")
    else:
        rgb = read_image(style if isinstance(style, bytes) else Path(style)).frames[0]
    with torch.no_grad():
        style_img = _style_tensor(rgb, stylizer.style_size, device)
        targets = style_targets(vgg(style_img, STYLE_LAYERS))
        style_lab = lab_points(style_img, PALETTE_SIZE)

    params = {k: v.detach().to(device, torch.float32).clone().requires_grad_(True)
              for k, v in stylizer.network(code).items()}
    base = stylizer.meta.base

    def losses(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            content_feat = vgg(x, (layer,))[layer]
        total, terms = objective(vgg, transform(x, params, base), x, content_feat, targets,
                                 style_lab.expand(len(x), -1, -1), torch.Generator().manual_seed(seed))
        return total, {"total": total.item(), **{k: v.item() for k, v in terms.items()}}

    val = data.sample_batch(contents, val_batch, crop, data.generator(seed, 5)).to(device)
    with torch.no_grad():
        _, before = losses(val)
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    t0 = time.time()
    for step in range(1, steps + 1):
        x = data.sample_batch(contents, batch, crop, data.generator(seed, 6, step)).to(device)
        loss, _ = losses(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(list(params.values()), float(cfg.get("clip_grad") or 5.0)))
        if math.isfinite(norm):
            opt.step()
        if progress:
            progress(step, steps, loss.item())
    with torch.no_grad():
        _, after = losses(val)
    out = {k: v.detach() for k, v in params.items()}
    used = {k: cfg[k] for k in ("content_layer", "content_weight", "style_norm", "style_weight", "tv_weight",
                                 "palette_weight", "tone_weight")} | {"crop": crop, "batch": batch, "lr": lr, "seed": seed}
    return FinetuneResult(out, before, after, steps, time.time() - t0, used)


# ---------------------------------------------------------------------------------------------- files


def save_net(params: Params, path: str | os.PathLike, base: int, info: dict | None = None, *,
             overwrite: bool = False) -> str:
    """Write one TransformNet (float32) + ``<path>.sha256`` atomically; returns the sha256.

    Refuses an existing ``path`` unless ``overwrite`` (FileExistsError).
    """
    path = Path(path)
    check_output(path, overwrite)
    gen = {s.name for s in layer_specs(base) if s.generated}
    tensors = {}
    for k, v in params.items():
        v = v.detach().to("cpu", torch.float32)
        if k.split(".")[0] in gen and v.dim() in (1, 4):  # store generated layers with their group dim G == 1
            v = v[None]
        tensors[k] = v.contiguous()
    _check_params({k: v.numpy() for k, v in tensors.items()}, base)
    meta = {"format": NET_FORMAT, "base": str(base),
            "metastyle": json.dumps({"format": NET_FORMAT, "base": base, **(info or {})})}
    atomic_write_bytes(path, save(tensors, metadata=meta))
    digest = sha256_file(path)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest


def load_net(path: str | os.PathLike, *, base: int | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, verify: bool = True) -> Params:
    """:func:`metastyle_batch.model.netfile.load_net` as tensors on ``device`` (pass ``device=stylizer.device,
    dtype=stylizer.dtype`` to run it with a Stylizer)."""
    return {k: torch.from_numpy(v).to(device, dtype) for k, v in load_net_arrays(path, base=base, verify=verify).items()}


__all__ = ["finetune", "FinetuneResult", "save_net", "load_net", "read_net_info", "training_config", "NetError",
           "NET_FORMAT"]
