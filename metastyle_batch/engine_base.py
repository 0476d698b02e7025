"""What both engines share (no torch): style codes cached by content, blends, strength, and whole pictures.

An engine adds ``encode_array`` (a style image → its code), ``network`` (a code → generated weights),
``run_array`` (numpy frames through a network), ``meta`` (with ``base`` and ``hidden_dim``), ``info``,
``style_size`` and ``palette``: :class:`~metastyle_batch.engine_ort.OrtStylizer` (ONNX Runtime) and
:class:`~metastyle_batch.engine.Stylizer` (PyTorch).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import color, pixels
from .codes import StyleCode, mix
from .paths import atomic_write_bytes, cache_dir

StyleLike = "str | os.PathLike | bytes | np.ndarray | StyleCode"


class EngineBase:
    disk_cache: bool = True

    def __init__(self):
        self._codes: OrderedDict[str, StyleCode] = OrderedDict()
        self._codes_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.info["id"]

    # ---- style codes -------------------------------------------------------------------------------------
    def encode(self, style: StyleLike) -> StyleCode:
        """A style image (path, encoded bytes or float RGB array) → its code; cached by content hash, in memory
        and on disk (the same entries for both engines)."""
        if isinstance(style, StyleCode):
            return style
        if isinstance(style, np.ndarray):
            key_bytes, rgb = np.ascontiguousarray(style, dtype=np.float32).tobytes(), style
        else:
            from .images import read_style_bytes

            key_bytes = style if isinstance(style, bytes) else read_style_bytes(Path(style))
            rgb = None  # decoded only on a cache miss
        key = hashlib.sha256(key_bytes + f"|{self.model_id}|{self.style_size}".encode()).hexdigest()
        with self._codes_lock:
            if key in self._codes:
                self._codes.move_to_end(key)
                return self._codes[key]
        code = self._read_code(key)
        if code is None:
            if rgb is None:
                from .images import read_image

                rgb = read_image(key_bytes, "<style bytes>" if isinstance(style, bytes) else str(style)).frames[0]
            code = self.encode_array(rgb)
            self._write_code(key, code)
        with self._codes_lock:
            self._codes[key] = code
            while len(self._codes) > 256:
                self._codes.popitem(last=False)
        return code

    def _code_file(self, key: str) -> Path:
        return cache_dir() / "codes" / f"{key}.safetensors"

    def _read_code(self, key: str) -> StyleCode | None:
        if not self.disk_cache:
            return None
        from safetensors.numpy import load_file

        try:
            saved = load_file(str(self._code_file(key)))
            code = StyleCode(saved["hidden"], saved["colors"])  # an entry without colours is recomputed
        except Exception:  # missing or damaged cache entries are simply recomputed
            return None
        return code if code.hidden.shape == (self.meta.hidden_dim,) and np.isfinite(code.hidden).all() else None

    def _write_code(self, key: str, code: StyleCode) -> None:
        if not self.disk_cache:
            return
        from safetensors.numpy import save

        try:
            data = save({"hidden": code.hidden, "colors": code.colors}, metadata={"model": self.model_id})
            atomic_write_bytes(self._code_file(key), data)
        except OSError:
            pass  # a read-only cache only costs speed

    def blend(self, styles: list, weights: list[float] | None = None) -> StyleCode:
        return mix([self.encode(s) for s in styles], weights)

    def with_strength(self, code: StyleCode, content: np.ndarray | StyleCode, strength: float) -> StyleCode:
        """The paper's strength control: interpolate towards the content image's own code (identity style).
        ``content`` is the image, or its code from ``encode_array`` (encoded once for several codes)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        if strength == 1.0:
            return code
        own = content if isinstance(content, StyleCode) else self.encode_array(content)
        return mix([code, own], [strength, 1.0 - strength])

    # ---- pictures ----------------------------------------------------------------------------------------
    def onnx_bytes(self, code: StyleCode | dict) -> bytes:
        """The generated network for ``code`` as an ONNX graph (what :mod:`metastyle_batch.netcache` keeps)."""
        from .onnx_export import export_onnx_bytes

        return export_onnx_bytes(code if isinstance(code, dict) else self.network(code), self.meta.base)

    def stylize_picture(self, picture, code: StyleCode | dict, strength: float = 1.0, preserve_color: bool = False,
                        max_side: int | None = None, palette_from: StyleCode | None = None,
                        palette: float | None = None):
        """Every frame of a :class:`~metastyle_batch.images.Picture` with one network; alpha, timing and colour
        profile carried over. Strength is resolved once (from the first frame) so animations do not flicker.
        ``code`` may also be a ready network (``load_net``'s)."""
        from .images import Picture

        if isinstance(code, dict):
            if strength != 1.0:
                raise ValueError("a strength below 1 needs a style code; a fine-tuned network has none")
        else:
            code = self.with_strength(code, picture.frames[0], strength)
        frames = [self.stylize(f, code, preserve_color=preserve_color, max_side=max_side, palette_from=palette_from,
                               palette=palette) for f in picture.frames]
        return Picture(frames, picture.alpha, picture.durations, picture.format, picture.bit_depth, picture.icc_profile)

    def stylize(self, content: np.ndarray, style, strength: float = 1.0, preserve_color: bool = False,
                max_side: int | None = None, mix_weights: list[float] | None = None,
                palette_from: StyleCode | None = None, palette: float | None = None) -> np.ndarray:
        """Stylize one (H, W, 3) float RGB image; the result has the same size (or fits ``max_side``).

        ``style`` is a path, bytes, array, StyleCode, or a list of those blended with ``mix_weights``, or a ready
        network (a params dict): its palette transfer takes the colours of ``palette_from`` (e.g. the style a
        refined network was trained for), none without it. ``palette``: this call's palette strength (default: the
        engine's), so callers on several threads need not share one setting.
        """
        content = np.asarray(content, np.float32)
        if max_side and max(content.shape[:2]) > max_side:
            content = pixels.resize(content, longer=max_side, mode="bicubic")
        code = palette_from
        if isinstance(style, dict):
            params = style
        else:
            styles = style if isinstance(style, (list, tuple)) else [style]
            code = self.with_strength(self.blend(list(styles), mix_weights), content, strength)
            params = self.network(code)
        palette = self.palette if palette is None else palette
        y = np.ascontiguousarray(self.run_array(content.transpose(2, 0, 1)[None], params))  # transfer works in place
        if preserve_color:
            y = pixels.preserve_colors(y, content.transpose(2, 0, 1)[None])
        elif code is not None and code.colors is not None and palette > 0:
            color.transfer(y[0], code.colors, palette)
        return y[0].transpose(1, 2, 0)  # a view: a big picture is not copied again
