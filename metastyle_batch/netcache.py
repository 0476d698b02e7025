"""Generated networks cached on disk as ONNX graphs, and the torch-free CPU path that runs them.

A style's first run loads the meta network and VGG-16 and encodes the style; it leaves the generated network in
the user cache (``<cache>/nets/<key>.onnx``, ~0.6 MB). Later runs with the same model file and style images on
the CPU load only that graph, and give the same pixels: it is the graph the CPU engine itself runs. Pictures
above :data:`memory.WHOLE_MAX_PIXELS` go through the engine's tiled path instead, as they would there, and flat
pictures through the engine too (it knows their exact answer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .memory import WHOLE_MAX_PIXELS
from .model.layers import flat_samples
from .paths import atomic_write_bytes, cache_dir, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np



def usable(device: str) -> bool:
    """The CPU engine will do the work (the cache holds ONNX graphs for it)."""
    from .runtime import uses_torch

    return not uses_torch(device)


def key(model_sha256: str, styles: list[Path], weights: list[float] | None) -> str:
    """The model file and the style images by content, and the blend weights."""
    h = hashlib.sha256(b"metastyle-net-2|" + model_sha256.encode())
    for i, style in enumerate(styles):
        h.update(f"|{sha256_file(style)}:{weights[i] if weights else 1 / len(styles)!r}".encode())
    return h.hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_dir() / "nets" / f"{key}.onnx"


def store(key: str, onnx: bytes, colors: list[float] | None) -> None:
    """Keep a generated network (and its style's colour moments) for later runs; a read-only cache only costs speed."""
    try:
        atomic_write_bytes(_path(key).with_suffix(".json"), json.dumps({"colors": colors}).encode())
        atomic_write_bytes(_path(key), onnx)
    except OSError:
        pass


class CachedNetwork:
    """A cached generated network in an ONNX Runtime session; :meth:`stylize_picture` like the engine's
    (strength 1, the picture's own size and colours), with ``fallback`` for pictures the engine would tile."""

    def __init__(self, onnx: bytes | Path, colors: list[float] | None, fallback: Callable, palette: float):
        import numpy as np

        from .ort import OrtNetwork

        self.colors = None if colors is None else np.asarray(colors, np.float64)
        self.net = OrtNetwork(onnx)
        self.fallback, self.palette = fallback, palette

    @classmethod
    def load(cls, key: str, fallback: Callable, palette: float) -> CachedNetwork | None:
        path = _path(key)
        if not path.is_file():
            return None
        try:
            return cls(path, json.loads(path.with_suffix(".json").read_text())["colors"], fallback, palette)
        except Exception:  # a damaged or incomplete cache entry: the engine rebuilds it
            path.unlink(missing_ok=True)
            return None

    def stylize(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) float RGB in [0, 1] → the stylized (H, W, 3), padded and cropped as the engine does."""
        import numpy as np

        from .pixels import crop_back, pad_to_multiple

        x, size = pad_to_multiple(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None])
        y = np.clip(crop_back(self.net.run(x), size)[0], 0, 1)
        if self.colors is not None and self.palette > 0:
            from .color import transfer

            y = transfer(np.ascontiguousarray(y), self.colors, self.palette)
        return np.ascontiguousarray(y.transpose(1, 2, 0))

    def stylize_picture(self, picture):
        from .images import Picture

        flat = any(flat_samples(f.transpose(2, 0, 1)[None])[0] for f in picture.frames)
        if flat or picture.size[0] * picture.size[1] > WHOLE_MAX_PIXELS:  # the engine knows a flat frame's answer
            return self.fallback(picture)
        frames = [self.stylize(f) for f in picture.frames]
        return Picture(frames, picture.alpha, picture.durations, picture.format, picture.bit_depth, picture.icc_profile)
