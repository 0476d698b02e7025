"""The torch-free engine: style image → style code → generated network → pixels, all on ONNX Runtime and numpy.

:class:`OrtStylizer` offers what the shells call on :class:`~metastyle_batch.engine.Stylizer` (encode, blend,
with_strength, network, run, stylize, stylize_picture, onnx_bytes) with numpy arrays in place of tensors. It is
the engine on the CPU whether or not PyTorch is installed (:func:`metastyle_batch.runtime.open_stylizer`); the
PyTorch engine is for GPUs and training. VGG-16 and the meta network are read from the same files.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import color, memory, pixels
from .codes import StyleCode
from .engine_base import EngineBase
from .model.io import check_model_file
from .model.layers import flat_output, flat_samples
from .model.meta_numpy import MetaWeights
from .paths import default_model_path

Params = dict  # "<layer>.weight" (G, O, I, k, k) / (O, I, k, k), ".bias" / ".gain" (G, O) / (O,): numpy arrays


class CpuDevice:
    """What the shells read of an engine's device (``.type``, ``str``), without torch."""

    type = "cpu"

    def __str__(self) -> str:
        return "cpu"


class OrtStylizer(EngineBase):
    """Loads the meta network once; encodes styles (cached in memory and on disk) and stylizes images on the CPU.

    Networks for one style run as ONNX graphs with their weights baked in (one session per network, kept for
    the last 8); frames that each have their own network (a style moving between keyframes) share one session of
    the same graph that takes the weights as inputs. Pictures above ``max_pixels`` run tiled
    (:mod:`metastyle_batch.tiled`), in bounded memory.
    """

    runtime = "onnxruntime"

    def __init__(self, model: str | os.PathLike | None = None, vgg: str | os.PathLike | None = None,
                 max_pixels: int | None = None, tile: int = 512, disk_cache: bool = True, log=None,
                 palette: float = color.PALETTE_STRENGTH, threads: int | None = None):
        super().__init__()
        self.device = CpuDevice()
        self.palette = palette
        self.model_path = Path(model) if model else default_model_path()
        check_model_file(self.model_path)
        self.meta, self.info = MetaWeights.load(self.model_path)
        self.style_size = int(self.info.get("style_size", 256))
        self.max_pixels = max_pixels or memory.WHOLE_MAX_PIXELS
        self.tile, self.disk_cache, self.threads = tile, disk_cache, threads
        self._vgg_path, self._encoder, self._log = vgg, None, log
        self._nets: OrderedDict[bytes, Params] = OrderedDict()
        self._sessions: OrderedDict[tuple[int, int | None], tuple[Params, object]] = OrderedDict()  # id(params), threads
        self._per_frame: dict[int | None, object] = {}  # the weights-as-inputs sessions, by threads
        self._lock = threading.RLock()  # the caches above, for callers on several threads (VapourSynth)
        memory.keep_freed_memory()

    @property
    def encoder(self):
        """VGG-16 to relu4_3 as an ONNX Runtime session (loaded at the first style that is not cached)."""
        if self._encoder is None:
            from .model.style_encoder import StyleEncoder
            from .model.vgg_weights import load_vgg16_state

            self._encoder = StyleEncoder(load_vgg16_state(self._vgg_path, log=self._log))
        return self._encoder

    vgg = encoder  # what shells touch to fail early when the weights are missing

    # ---- style codes -------------------------------------------------------------------------------------
    def encode_array(self, rgb: np.ndarray) -> StyleCode:
        """Uncached encode: shorter side resized to the model's style size, VGG statistics, meta hidden layer."""
        x = pixels.resize(np.asarray(rgb, np.float32), **pixels.style_fit(*rgb.shape[:2], self.style_size))
        chw = np.ascontiguousarray(x.transpose(2, 0, 1))
        colors = color.moments(chw.reshape(3, -1))
        return StyleCode(self.meta.encode_features(self.encoder(chw[None]))[0], colors)

    def load_net(self, path: str | os.PathLike) -> Params:
        """A network file (``finetune``'s) ready to run here."""
        from .model.netfile import load_net_arrays

        return load_net_arrays(path, base=self.meta.base)

    def random_code(self, seed: int = 0, spread: float = 1.0) -> StyleCode:
        return StyleCode(self.meta.random_hidden(seed, spread))

    # ---- networks ----------------------------------------------------------------------------------------
    def network(self, code: StyleCode | np.ndarray) -> Params:
        """Generated TransformNet parameters (cached per code). A (G, D) array gives G networks."""
        hidden = np.asarray(code.hidden if isinstance(code, StyleCode) else code, np.float32)
        key = hashlib.sha1(hidden.tobytes()).digest()
        with self._lock:
            if key in self._nets:
                self._nets.move_to_end(key)
                return self._nets[key]
            params = self._nets[key] = self.meta.network(hidden)
            while len(self._nets) > 16:
                self._nets.popitem(last=False)
            return params

    def _session(self, params: Params, threads: int | None):
        """The baked session of a single network, kept for the last 8."""
        from .ort import OrtNetwork

        key = (id(params), threads)
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None or entry[0] is not params:  # an id can be reused once its dict is gone
                entry = self._sessions[key] = (params, OrtNetwork(self.onnx_bytes(params), threads))
                while len(self._sessions) > 8:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(key)
            return entry[1]

    def _run_each(self, x: np.ndarray, params: Params, threads: int | None) -> np.ndarray:
        """One network per sample: the weights-as-inputs graph, sample by sample."""
        from .onnx_export import export_onnx_bytes, network_feed
        from .ort import OrtNetwork

        with self._lock:
            if threads not in self._per_frame:
                graph = export_onnx_bytes(_one(params, 0), self.meta.base, weights_as_inputs=True)
                self._per_frame[threads] = OrtNetwork(graph, threads)
            net = self._per_frame[threads]
        return np.concatenate([net.run(x[i:i + 1], network_feed(_one(params, i))) for i in range(x.shape[0])])

    def run(self, x: np.ndarray, params: Params, threads: int | None = None) -> np.ndarray:
        """(B, 3, H, W) float32 in [0, 1], any size → stylized (B, 3, H, W) in [0, 1]. Generated layers with a
        leading G == B give every sample its own network. ``threads``: ONNX Runtime's for this call (default:
        the engine's, else every core); sessions are kept per thread count."""
        threads = threads or self.threads
        flat = flat_samples(x)
        x, size = pixels.pad_to_multiple(np.asarray(x, np.float32))
        groups = _groups(params)
        if groups > 1 and groups != x.shape[0]:
            raise ValueError(f"batch of {x.shape[0]} images but {groups} generated networks")
        n_pixels = x.shape[0] * x.shape[2] * x.shape[3]
        if x.shape[0] == 1 and n_pixels > self.max_pixels:  # tiles copy their windows: x may be a strided view
            from .tiled import run_tiled

            memory.release()  # what decoding left in the heap
            y = run_tiled(x, _one(params, 0), self.meta.base, self.tile)
        elif groups > 1:
            y = self._run_each(np.ascontiguousarray(x), params, threads)
        else:
            y = self._session(params, threads).run(np.ascontiguousarray(x))
        if n_pixels > memory.KEEP_PIXELS:
            memory.release()
        y = pixels.contiguous(pixels.crop_back(y, size))
        if flat.any():  # their exact answer, not amplified rounding noise (the same in every engine)
            y[flat] = flat_output(params, flat)[:, :, None, None]
        return pixels.clip01(y)

    def run_array(self, x: np.ndarray, params: Params, threads: int | None = None) -> np.ndarray:
        """:meth:`run` (the name both engines give their numpy entry point)."""
        return self.run(x, params, threads)


def _groups(params: Params) -> int:
    w = params["down1.weight"]
    return w.shape[0] if w.ndim == 5 else 1


def _one(params: Params, i: int) -> Params:
    """Network ``i`` of a group of generated networks (shared layers as they are)."""
    return {k: v[i:i + 1] if v.ndim in (2, 5) else v for k, v in params.items()}
