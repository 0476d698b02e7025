"""The PyTorch engine: style images → cached style codes → generated networks → pixels on a GPU (or, with
``METASTYLE_ORT=0``, the CPU), and the engine training and evaluation use. The CPU engine is
:mod:`metastyle_batch.engine_ort`; what both share is :mod:`metastyle_batch.engine_base`."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from . import color, memory
from .engine_base import EngineBase
from .pixels import style_fit
from .model.io import check_model_file, load_model
from .model.layers import flat_output, flat_samples
from .model.meta import StyleCode
from .model.transform import Params, TiledOps, crop_back, pad_to_multiple, polyphase, transform, transform_polyphase
from .model.vgg import STYLE_LAYERS, VGG16, load_vgg, style_vector
from .paths import DEFAULT_MODEL, atomic_write_bytes, cache_dir, default_model_path  # noqa: F401 - re-exported
from .tensors import load_rgb_tensor, pick_device, resize


def match_palette(y: torch.Tensor, code: StyleCode | None, strength: float) -> torch.Tensor:
    """Outputs (B, 3, H, W) moved ``strength`` of the way to the style's colours (:mod:`metastyle_batch.color`);
    unchanged without a style's colours (a fine-tuned network, a random texture code) or at strength 0."""
    if code is None or code.colors is None or strength <= 0:
        return y
    out = y.float().cpu().contiguous()
    for frame in out.numpy():
        color.transfer(frame, code.colors, strength)
    return out.to(y.device)


@dataclass
class _Prepared:
    params: Params
    poly: Params  # polyphase(params): the form inference runs


class Stylizer(EngineBase):
    """The PyTorch engine (the ``torch`` extra): GPUs, training, and the CPU only when ``METASTYLE_ORT=0`` asks
    for it (the CPU engine is :class:`~metastyle_batch.engine_ort.OrtStylizer`, see :mod:`metastyle_batch.runtime`).
    Loads the meta network once; encodes styles (cached in memory and on disk) and stylizes images.

    Generated networks run in polyphase form (``transform_polyphase``: the same outputs, 1.5x faster); on CUDA
    channels-last in float32 with TF32 convolutions. Not half precision: the shipped model's activations pass
    float16's range and every output pixel came out NaN (H100, 2026-12-06); bfloat16 stays finite but is up to
    10/255 off, float32 within 1.5/255 of the CPU engine at 77 % of bfloat16's speed. On the CPU freed memory is
    kept in the process between images (:mod:`metastyle_batch.memory`).
    """

    runtime = "torch"

    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto", vgg: str | os.PathLike | None = None,
                 max_pixels: int | None = None, tile: int = 512, disk_cache: bool = True, log=None,
                 palette: float = color.PALETTE_STRENGTH):
        super().__init__()
        self.device = pick_device(device)
        self.palette = palette  # how far outputs move to the style's colours (0: the network's own)
        self.model_path = Path(model) if model else default_model_path()
        check_model_file(self.model_path)
        self.meta, self.info = load_model(self.model_path)
        self.dtype = torch.float32
        if self.device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions, stated
        self.meta.to(self.device)
        self.style_size = int(self.info.get("style_size", 256))
        self.max_pixels = max_pixels or self._default_max_pixels()
        self.tile = tile
        self.disk_cache = disk_cache
        self._vgg_path, self._vgg, self._log = vgg, None, log
        self._nets: OrderedDict[bytes, Params] = OrderedDict()
        if self.device.type == "cpu":
            memory.keep_freed_memory()
        self._prepared: OrderedDict[int, _Prepared] = OrderedDict()  # by id(params)

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
    @torch.no_grad()
    def encode_array(self, rgb: np.ndarray) -> StyleCode:
        """Uncached encode: shorter side resized to the model's style size, VGG statistics, meta hidden layer."""
        x = resize(load_rgb_tensor(rgb).to(self.device), **style_fit(*rgb.shape[:2], self.style_size))
        colors = color.moments(x[0].reshape(3, -1).cpu().numpy())
        return StyleCode(self.encode_batch(x)[0].cpu().numpy(), colors)

    @torch.no_grad()
    def encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) style images in [0, 1], already at the model's style size → (B, D) float32 hidden states
        in one VGG pass; ``network`` of the result generates all B networks in one pass too."""
        vec = style_vector(self.vgg(x.to(self.device).clamp(0, 1), STYLE_LAYERS))
        return self.meta.encode_features(vec).float()

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

    @torch.no_grad()
    def run(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], any size → stylized (B, 3, H, W) in [0, 1], float32 on the device."""
        flat = flat_samples(x)
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
        y = crop_back(y, size).float()
        if flat.any():  # their exact answer, not amplified rounding noise (the same in every engine)
            colours = torch.from_numpy(flat_output(params, flat)).to(y)
            y[torch.from_numpy(flat).to(y.device)] = colours[:, :, None, None].expand(-1, -1, *y.shape[-2:])
        return y.clamp_(0, 1)

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
