"""The one core every shell calls: style images → cached style codes → cached generated networks → pixels."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save

from . import color, memory
from .model.io import ModelError, load_model
from .model.meta import StyleCode, mix
from .model.transform import Params, TiledOps, crop_back, pad_to_multiple, polyphase, transform, transform_polyphase
from .model.vgg import STYLE_LAYERS, VGG16, load_vgg, style_vector
from .paths import DEFAULT_MODEL, atomic_write_bytes, cache_dir, default_model_path  # noqa: F401 - re-exported
from .tensors import load_rgb_tensor, pick_device, resize

StyleLike = "str | os.PathLike | bytes | np.ndarray | StyleCode"


def match_palette(y: torch.Tensor, code: StyleCode | None, strength: float) -> torch.Tensor:
    """Outputs (B, 3, H, W) moved ``strength`` of the way to the style's colours (:mod:`metastyle_batch.color`);
    unchanged without a style's colours (a fine-tuned network, a random texture code) or at strength 0."""
    if code is None or code.colors is None or strength <= 0:
        return y
    out = y.float().cpu().contiguous()
    for frame in out.numpy():
        color.transfer(frame, code.colors, strength)
    return out.to(y.device)


def preserve_colors(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: keep the stylized Y channel, take Cb/Cr from the content (BT.601)."""
    def ycbcr(x):
        r, g, b = x.unbind(1)
        y = 0.299 * r + 0.587 * g + 0.114 * b
        return y, (b - y) * 0.564, (r - y) * 0.713

    y, _, _ = ycbcr(stylized)
    _, cb, cr = ycbcr(content)
    r = y + 1.403 * cr
    b = y + 1.773 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], 1)


@dataclass
class _Prepared:
    params: Params
    poly: Params  # polyphase(params): the form inference runs


class Stylizer:
    """The PyTorch engine (the ``torch`` extra): GPUs, training, and the CPU only when ``METASTYLE_ORT=0`` asks
    for it (the CPU engine is :class:`~metastyle_batch.engine_ort.OrtStylizer`, see :mod:`metastyle_batch.runtime`).
    Loads the meta network once; encodes styles (cached in memory and on disk) and stylizes images.

    Generated networks run in polyphase form (``transform_polyphase``: the same outputs, 1.5x faster); on CUDA
    in half precision and channels-last. On the CPU freed memory is kept in the process between images
    (:mod:`metastyle_batch.memory`).
    """

    runtime = "torch"

    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto", vgg: str | os.PathLike | None = None,
                 max_pixels: int | None = None, tile: int = 512, disk_cache: bool = True, log=None,
                 palette: float = color.PALETTE_STRENGTH):
        self.device = pick_device(device)
        self.palette = palette  # how far outputs move to the style's colours (0: the network's own)
        self.model_path = Path(model) if model else default_model_path()
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: model file not found (give a model path or set METASTYLE_MODEL)")
        self.meta, self.info = load_model(self.model_path)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.meta.to(self.device)
        self.style_size = int(self.info.get("style_size", 256))
        self.max_pixels = max_pixels or self._default_max_pixels()
        self.tile = tile
        self.disk_cache = disk_cache
        self._vgg_path, self._vgg, self._log = vgg, None, log
        self._codes: OrderedDict[str, StyleCode] = OrderedDict()
        self._nets: OrderedDict[bytes, Params] = OrderedDict()
        if self.device.type == "cpu":
            memory.keep_freed_memory()
        self._prepared: OrderedDict[int, _Prepared] = OrderedDict()  # by id(params)

    @property
    def model_id(self) -> str:
        return self.info["id"]

    def _default_max_pixels(self) -> int:
        """Images above this many pixels run tiled, layer by layer (exact, just slower)."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return max(1 << 20, free // 600)
        return memory.WHOLE_MAX_PIXELS

    @property
    def vgg(self) -> VGG16:
        if self._vgg is None:
            self._vgg = load_vgg(self._vgg_path, log=self._log).to(self.device)
        return self._vgg

    # ---- style codes -------------------------------------------------------------------------------------
    def encode(self, style: StyleLike) -> StyleCode:
        """A style image (path, encoded bytes or float RGB array) → its code; cached by content hash."""
        if isinstance(style, StyleCode):
            return style
        if isinstance(style, np.ndarray):
            key_bytes, rgb = np.ascontiguousarray(style, dtype=np.float32).tobytes(), style
        else:
            from .images import read_image, read_style_bytes

            key_bytes = style if isinstance(style, bytes) else read_style_bytes(Path(style))
            rgb = None  # decoded only on a cache miss
        key = hashlib.sha256(key_bytes + f"|{self.model_id}|{self.style_size}".encode()).hexdigest()
        if key in self._codes:
            self._codes.move_to_end(key)
            return self._codes[key]
        code = self._read_code(key)
        if code is None:
            code = self.encode_array(rgb if rgb is not None else read_image(key_bytes, "<style bytes>" if isinstance(style, bytes) else str(style)).frames[0])
            self._write_code(key, code)
        self._codes[key] = code
        while len(self._codes) > 256:
            self._codes.popitem(last=False)
        return code

    @torch.no_grad()
    def encode_array(self, rgb: np.ndarray) -> StyleCode:
        """Uncached encode: shorter side resized to the model's style size, VGG statistics, meta hidden layer."""
        x = resize(load_rgb_tensor(rgb).to(self.device), shorter=self.style_size)
        colors = color.moments(x[0].reshape(3, -1).cpu().numpy())
        return StyleCode(self.encode_batch(x)[0].cpu().numpy(), colors)

    @torch.no_grad()
    def encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) style images in [0, 1], already at the model's style size → (B, D) float32 hidden states
        in one VGG pass; ``network`` of the result generates all B networks in one pass too."""
        vec = style_vector(self.vgg(x.to(self.device).clamp(0, 1), STYLE_LAYERS))
        return self.meta.encode_features(vec).float()

    def _code_file(self, key: str) -> Path:
        return cache_dir() / "codes" / f"{key}.safetensors"

    def _read_code(self, key: str) -> StyleCode | None:
        if not self.disk_cache:
            return None
        path = self._code_file(key)
        try:
            saved = load_file(str(path))
            return StyleCode(saved["hidden"], saved["colors"])  # an entry without colours is recomputed
        except Exception:  # missing or damaged cache entries are simply recomputed
            return None

    def _write_code(self, key: str, code: StyleCode) -> None:
        if not self.disk_cache:
            return
        path = self._code_file(key)
        try:
            arrays = {"hidden": code.hidden, "colors": code.colors}
            atomic_write_bytes(path, save(arrays, metadata={"model": self.model_id}))
        except OSError:
            pass  # a read-only cache only costs speed

    def blend(self, styles: list, weights: list[float] | None = None) -> StyleCode:
        return mix([self.encode(s) for s in styles], weights)

    def with_strength(self, code: StyleCode, content: np.ndarray | StyleCode, strength: float) -> StyleCode:
        """The paper's strength control: interpolate towards the content image's own code (identity style).
        ``content`` is the image, or its code from :meth:`encode_array` (encoded once for several codes)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        if strength == 1.0:
            return code
        own = content if isinstance(content, StyleCode) else self.encode_array(content)
        return mix([code, own], [strength, 1.0 - strength])

    # ---- networks ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def network(self, code: StyleCode | np.ndarray | torch.Tensor) -> Params:
        """Generated TransformNet parameters on the device (cached per code). A (G, D) array gives G networks."""
        hidden = torch.as_tensor(code.hidden if isinstance(code, StyleCode) else code).float().cpu()
        key = hashlib.sha1(hidden.numpy().tobytes()).digest()
        if key in self._nets:
            self._nets.move_to_end(key)
            return self._nets[key]
        params = self.meta.network(hidden.to(self.device))
        params = {k: v.to(self.dtype) for k, v in params.items()}
        self._nets[key] = params
        while len(self._nets) > 16:
            self._nets.popitem(last=False)
        return params

    def _prepare(self, params: Params) -> _Prepared:
        """The inference state of a network, kept for the last 8."""
        entry = self._prepared.get(id(params))
        if entry is None or entry.params is not params:  # an id can be reused once its dict is gone
            entry = self._prepared[id(params)] = _Prepared(params, polyphase(params))
            while len(self._prepared) > 8:
                self._prepared.popitem(last=False)
        self._prepared.move_to_end(id(params))
        return entry

    def onnx_bytes(self, code: StyleCode | Params) -> bytes:
        """The generated network for ``code`` as an ONNX graph (what :mod:`metastyle_batch.netcache` keeps)."""
        from .onnx_export import export_onnx_bytes

        return export_onnx_bytes(code if isinstance(code, dict) else self.network(code), self.meta.base)

    @torch.no_grad()
    def run(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], any size → stylized (B, 3, H, W) in [0, 1], float32 on the device."""
        x = x.to(self.device, self.dtype)
        x, size = pad_to_multiple(x)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        if x.shape[0] == 1 and pixels > self.max_pixels:
            memory.release()  # what decoding left in the heap
            tiled = TiledOps(self.device, self.dtype, self.tile, store_dtype=torch.float16)  # 24 MP in < 1.5 GB
            y = transform(x, params, self.meta.base, ops=tiled).to(self.device, torch.float32)
        else:
            y = transform_polyphase(x, self._prepare(params).poly, self.meta.base)
        if self.device.type == "cpu" and pixels > memory.KEEP_PIXELS:
            memory.release()
        return crop_back(y, size).float().clamp_(0, 1)

    def load_net(self, path: str | os.PathLike) -> Params:
        """A network file (``finetune``'s) ready to run here."""
        from .train.finetune import load_net

        return load_net(path, base=self.meta.base, device=self.device, dtype=self.dtype)

    def random_code(self, seed: int = 0, spread: float = 1.0) -> StyleCode:
        from .model.meta import random_code

        return random_code(self.meta, seed, spread)

    def run_array(self, x: np.ndarray, params: Params, threads: int | None = None) -> np.ndarray:
        """:meth:`run` on a numpy (B, 3, H, W) batch, as :class:`~metastyle_batch.engine_ort.OrtStylizer` runs it
        (``threads``: set by the caller with ``torch.set_num_threads`` here)."""
        return self.run(torch.from_numpy(x), params).cpu().numpy()

    def stylize_picture(self, picture, code: StyleCode | Params, strength: float = 1.0, preserve_color: bool = False,
                        max_side: int | None = None, palette_from: StyleCode | None = None):
        """Every frame of a :class:`~metastyle_batch.images.Picture` with one network; alpha, timing and colour
        profile carried over. Strength is resolved once (from the first frame) so animations do not flicker.
        ``code`` may also be a ready network (e.g. from :func:`metastyle_batch.train.finetune.load_net`)."""
        from .images import Picture

        if isinstance(code, dict):
            if strength != 1.0:
                raise ValueError("a strength below 1 needs a style code; a fine-tuned network has none")
        else:
            code = self.with_strength(code, picture.frames[0], strength)
        frames = [self.stylize(f, code, preserve_color=preserve_color, max_side=max_side, palette_from=palette_from)
                  for f in picture.frames]
        return Picture(frames, picture.alpha, picture.durations, picture.format, picture.bit_depth, picture.icc_profile)

    def stylize(self, content: np.ndarray, style, strength: float = 1.0, preserve_color: bool = False,
                max_side: int | None = None, mix_weights: list[float] | None = None,
                palette_from: StyleCode | None = None) -> np.ndarray:
        """Stylize one (H, W, 3) float RGB image; the result has the same size (or fits ``max_side``).

        ``style`` is a path, bytes, array, StyleCode, or a list of those blended with ``mix_weights``, or a ready
        network (a params dict): its palette transfer takes the colours of ``palette_from`` (e.g. the style a
        refined network was trained for), none without it.
        """
        x = load_rgb_tensor(content)
        if max_side and max(x.shape[-2:]) > max_side:
            x = resize(x, longer=max_side, mode="bicubic")
            content = x[0].permute(1, 2, 0).numpy()
        code = palette_from
        if isinstance(style, dict):
            params = style
        else:
            styles = style if isinstance(style, (list, tuple)) else [style]
            code = self.with_strength(self.blend(list(styles), mix_weights), content, strength)
            params = self.network(code)
        y = self.run(x, params)
        if preserve_color:
            y = preserve_colors(y, x.to(y.device)).clamp_(0, 1)
        else:
            y = match_palette(y, code, self.palette)
        return y[0].permute(1, 2, 0).cpu().numpy()
