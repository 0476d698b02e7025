"""Network files: one generated (or fine-tuned) TransformNet as safetensors, read without torch.

Written by :func:`metastyle_batch.train.finetune.save_net` (format ``metastyle-batch/net-2``, ``base``, a JSON
``metastyle`` entry with the style, steps and losses, and a ``.sha256`` sidecar).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open

from ..paths import sha256_file
from .io import ModelError
from .layers import layer_specs

NET_FORMAT = "metastyle-batch/net-2"  # 2: biases after instance norm, as in model.transform


class NetError(ModelError):
    """A network file is missing, damaged or not ours; the message is one line."""


def check_params(params: dict, base: int) -> None:
    """One network's arrays (or tensors) have the layers and shapes of a base-``base`` TransformNet, all finite."""
    for spec in layer_specs(base):
        w, b = params.get(f"{spec.name}.weight"), params.get(f"{spec.name}.bias")
        if w is None or b is None:
            raise ValueError(f"missing {spec.name} parameters")
        shape = (spec.cout, spec.cin, spec.k, spec.k)
        if tuple(w.shape[-4:]) != shape or w.ndim not in (4, 5) or (w.ndim == 5 and w.shape[0] != 1):
            raise ValueError(f"{spec.name}.weight has shape {tuple(w.shape)}, expected {shape} (one network)")
        if b.shape[-1] != spec.cout or b.size != spec.cout:
            raise ValueError(f"{spec.name}.bias has shape {tuple(b.shape)}, expected ({spec.cout},)")
        gain = params.get(f"{spec.name}.gain")
        if gain is not None and gain.size != spec.cout:
            raise ValueError(f"{spec.name}.gain has shape {tuple(gain.shape)}, expected ({spec.cout},)")
    bad = next((k for k, v in params.items() if not np.isfinite(np.asarray(v)).all()), None)
    if bad is not None:
        raise ValueError(f"{bad} holds NaN or infinite values")
    extra = set(params) - {f"{s.name}.{p}" for s in layer_specs(base) for p in ("weight", "bias", "gain")}
    if extra:
        raise ValueError(f"unexpected tensors {sorted(extra)[:3]}")


def read_net_info(path: str | os.PathLike) -> dict:
    """The metadata of a network file (``format``, ``base``, style, steps, losses …); NetError if not one."""
    path = Path(path)
    if not path.is_file():
        raise NetError(f"{path}: network file not found" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="np") as f:
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


def load_net_arrays(path: str | os.PathLike, *, base: int | None = None, verify: bool = True) -> dict[str, np.ndarray]:
    """A network file → its float32 arrays (G == 1) for an engine's ``run``.

    Checks the ``.sha256`` sidecar when present and, with ``base``, that the network fits a base-``base``
    model (pass ``stylizer.meta.base``; ``run`` uses the stylizer's base). Raises :class:`NetError` (one line).
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
        with safe_open(str(path), framework="np") as f:
            params = {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}
        check_params(params, info["base"])
    except Exception as e:  # truncated data, wrong shapes, missing keys
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise NetError(f"{path}: damaged network file ({first})") from None
    return params


