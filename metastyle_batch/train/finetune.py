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
from safetensors import safe_open
from safetensors.torch import save

from ..errors import check_output
from ..model.io import ModelError
from ..model.transform import Params, layer_specs, transform
from ..model.vgg import STYLE_LAYERS
from ..paths import atomic_write_bytes, sha256_file
from ..tensors import load_rgb_tensor, resize

NET_FORMAT = "metastyle-batch/net-2"  # 2: biases after instance norm, as in model.transform


class NetError(ModelError):
    """A network file is missing, damaged or not ours; the message is one line."""


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


def _check_params(params: Params, base: int) -> None:
    for spec in layer_specs(base):
        w, b = params.get(f"{spec.name}.weight"), params.get(f"{spec.name}.bias")
        if w is None or b is None:
            raise ValueError(f"missing {spec.name} parameters")
        shape = (spec.cout, spec.cin, spec.k, spec.k)
        if tuple(w.shape[-4:]) != shape or w.dim() not in (4, 5) or (w.dim() == 5 and w.shape[0] != 1):
            raise ValueError(f"{spec.name}.weight has shape {tuple(w.shape)}, expected {shape} (one network)")
        if b.shape[-1] != spec.cout or b.numel() != spec.cout:
            raise ValueError(f"{spec.name}.bias has shape {tuple(b.shape)}, expected ({spec.cout},)")
        gain = params.get(f"{spec.name}.gain")
        if gain is not None and gain.numel() != spec.cout:
            raise ValueError(f"{spec.name}.gain has shape {tuple(gain.shape)}, expected ({spec.cout},)")
    extra = set(params) - {f"{s.name}.{p}" for s in layer_specs(base) for p in ("weight", "bias", "gain")}
    if extra:
        raise ValueError(f"unexpected tensors {sorted(extra)[:3]}")


def save_net(params: Params, path: str | os.PathLike, base: int, info: dict | None = None, *,
             overwrite: bool = False) -> str:
    """Write one TransformNet (float32) + ``<path>.sha256`` atomically; returns the sha256.

    Refuses an existing ``path`` unless ``overwrite`` (FileExistsError).
    """
    path = Path(path)
    check_output(path, overwrite)
    _check_params(params, base)
    gen = {s.name for s in layer_specs(base) if s.generated}
    tensors = {}
    for k, v in params.items():
        v = v.detach().to("cpu", torch.float32)
        if k.split(".")[0] in gen and v.dim() in (1, 4):  # store generated layers with their group dim G == 1
            v = v[None]
        tensors[k] = v.contiguous()
    meta = {"format": NET_FORMAT, "base": str(base),
            "metastyle": json.dumps({"format": NET_FORMAT, "base": base, **(info or {})})}
    atomic_write_bytes(path, save(tensors, metadata=meta))
    digest = sha256_file(path)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest


def read_net_info(path: str | os.PathLike) -> dict:
    """The metadata of a network file (``format``, ``base``, style, steps, losses …); NetError if not one."""
    path = Path(path)
    if not path.is_file():
        raise NetError(f"{path}: network file not found" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for damaged headers
        raise NetError(f"{path}: not a readable safetensors network ({type(e).__name__})") from None
    if meta.get("format") != NET_FORMAT:
        hint = " (that is a meta network model; pass it as --model)" if "metastyle" in meta and "format" not in meta else ""
        raise NetError(f"{path}: not a metastyle-batch network file{hint}")
    try:
        info = json.loads(meta.get("metastyle") or "{}")
        info["base"] = int(meta["base"])
    except (ValueError, KeyError, TypeError):
        raise NetError(f"{path}: damaged network metadata") from None
    info["format"] = NET_FORMAT
    return info


def load_net(path: str | os.PathLike, *, base: int | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, verify: bool = True) -> Params:
    """A network file → ``Params`` (G == 1) for :meth:`Stylizer.run` / ``transform``.

    Checks the ``.sha256`` sidecar when present and, with ``base``, that the network fits a base-``base``
    model (pass ``stylizer.meta.base``; ``run`` uses the stylizer's base). Raises :class:`NetError` (one line).
    Pass ``device=stylizer.device, dtype=stylizer.dtype`` to run it with a Stylizer.
    """
    path = Path(path)
    info = read_net_info(path)
    if base is not None and info["base"] != base:
        raise NetError(f"{path}: a base-{info['base']} network, but the model is base-{base}")
    sidecar = path.with_name(path.name + ".sha256")
    if verify and sidecar.is_file():
        expected = (sidecar.read_text().split() or [""])[0]
        if expected != sha256_file(path):
            raise NetError(f"{path}: sha256 mismatch (file is damaged or was changed; expected {expected[:12]}…)")
    try:
        with safe_open(str(path), framework="pt") as f:
            params = {k: f.get_tensor(k).to(device, dtype) for k in f.keys()}
        _check_params(params, info["base"])
    except Exception as e:  # truncated data, wrong shapes, missing keys
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise NetError(f"{path}: damaged network file ({first})") from None
    return params


__all__ = ["finetune", "FinetuneResult", "save_net", "load_net", "read_net_info", "training_config", "NetError",
           "NET_FORMAT"]
