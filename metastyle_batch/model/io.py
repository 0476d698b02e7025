"""Model files: safetensors with JSON metadata, verified against a recorded sha256. Never pickle."""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

from ..errors import MetastyleError
from ..paths import atomic_write_bytes, not_regular, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from .meta import MetaNet

FORMAT = "metastyle-batch/metanet-3"  # 2: conv biases act after instance norm (see model.transform); 3: gains
FORMAT_2 = "metastyle-batch/metanet-2"  # still read: without gain heads, i.e. every gain 1


class ModelError(MetastyleError, RuntimeError):
    """A model file is missing, damaged or not ours; the message is one line."""

    exit_code = 2


def save_model(meta: MetaNet, path: str | Path, info: dict | None = None, dtype=None) -> str:
    """Write weights + ``<path>.sha256``; returns the sha256. ``info`` lands in the metadata (training facts)."""
    import torch
    from safetensors.torch import save

    dtype = dtype or torch.float16
    path = Path(path)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in meta.state_dict().items()}
    meta_info = {"format": FORMAT, "base": meta.base, **(info or {})}
    atomic_write_bytes(path, save(tensors, metadata={"metastyle": json.dumps(meta_info)}))
    digest = sha256_file(path)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest


def read_info(path: str | Path) -> dict:
    try:
        with safe_open(str(path), framework="np") as f:
            raw = (f.metadata() or {}).get("metastyle")
    except Exception as e:  # safetensors raises several types for damaged headers
        raise ModelError(f"{path}: not a readable safetensors model ({type(e).__name__})") from None
    if raw is None:
        raise ModelError(f"{path}: not a metastyle-batch model (no 'metastyle' metadata)")
    try:
        info = json.loads(raw)
        int(info["base"])
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: damaged model metadata") from None
    if info.get("format") == "metastyle-batch/metanet":
        raise ModelError(f"{path}: made by metastyle-batch 0.1 before biases moved after instance norm; retrain it")
    if info.get("format") not in (FORMAT, FORMAT_2):
        raise ModelError(f"{path}: unknown model format {info.get('format')!r}")
    return info


def check_model_file(path: Path) -> None:
    """A model path must be a regular file: a pipe would block the reader, a folder is a mistake."""
    if (kind := not_regular(path)) is not None:
        raise ModelError(f"{path}: is {kind}, not a model file")
    if not path.is_file():
        raise ModelError(f"{path}: model file not found (give a model path or set METASTYLE_MODEL)")


def verified_sha256(path: str | Path) -> str:
    """The model file's sha256, checked against its ``.sha256`` sidecar when there is one (the shipped model has
    one): the check every use of a model starts with, the network cache's key included."""
    path = Path(path)
    check_model_file(path)
    digest = sha256_file(path)
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        expected = (sidecar.read_text().split() or [""])[0]
        if expected != digest:
            raise ModelError(f"{path}: sha256 mismatch (file is damaged or was changed; expected {expected[:12]}…)")
    return digest


def read_state(path: str | Path, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """A model file's float32 arrays and info, checked before anything is used: the sidecar sha256 when there is
    one (the shipped model has one), the format, and finite values. Needs no torch."""
    path = Path(path)
    digest = verified_sha256(path) if verify else sha256_file(path)
    info = read_info(path)
    try:
        with safe_open(str(path), framework="np") as f:
            state = {key: f.get_tensor(key).astype(np.float32) for key in f.keys()}
    except Exception as e:  # truncated data, an unknown dtype
        raise ModelError(f"{path}: damaged model weights ({type(e).__name__})") from None
    bad = next((k for k, v in state.items() if not np.isfinite(v).all()), None)
    if bad is not None:
        raise ModelError(f"{path}: damaged model weights ({bad} holds NaN or infinite values)")
    return state, {**info, "sha256": digest, "id": digest[:12]}


def load_model(path: str | Path, verify: bool = True) -> tuple[MetaNet, dict]:
    """The torch MetaNet in float32, from :func:`read_state`."""
    import torch

    from .meta import MetaNet

    state, info = read_state(path, verify)
    meta = MetaNet(base=int(info["base"]))
    try:
        tensors = {k: torch.from_numpy(v) for k, v in state.items()}
        if info["format"] == FORMAT_2:
            tensors.update({k: v for k, v in meta.state_dict().items() if k.startswith("gains.")})
        meta.load_state_dict(tensors, strict=True)
    except Exception as e:  # wrong shapes, missing keys
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{path}: weights do not fit a base-{info['base']} meta network ({first})") from None
    meta.requires_grad_(False).eval()
    return meta, info
