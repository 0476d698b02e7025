"""Image arithmetic in numpy for the torch-free runtime: the one resize, padding for the network, colour keeping.

Each function matches its PyTorch counterpart in :mod:`metastyle_batch.tensors` / :mod:`.model.transform` /
:mod:`.engine` (tests compare them): Pillow's antialiased filters are the ones ``F.interpolate(antialias=True)``
was written to reproduce.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import memory

MULTIPLE, MINIMUM = 4, 16  # the network's sides: a multiple of 4 (two stride-2 stages), at least 16
MAX_STYLE_ASPECT = 8  # a style image is read with its shorter side at the style size, its longer at most 8x that


def style_fit(height: int, width: int, style_size: int) -> dict[str, int]:
    """How a style image (or a photo encoded for ``--strength``) is resized for VGG-16: the shorter side to the
    style size, unless the longer side would then pass ``MAX_STYLE_ASPECT`` times it; then the longer side is held
    there. A 4000x1 strip would otherwise become 768000x192 (gigabytes) for 96 bytes of PNG."""
    if max(height, width) > MAX_STYLE_ASPECT * min(height, width):
        return {"longer": MAX_STYLE_ASPECT * style_size}
    return {"shorter": style_size}


def resize(rgb: np.ndarray, *, shorter: int | None = None, longer: int | None = None, mode: str = "bilinear") -> np.ndarray:
    """(H, W, 3) float32 with the shorter side set to ``shorter`` (or the longer to ``longer``), aspect kept,
    antialiased when shrinking, clamped to [0, 1]."""
    h, w = rgb.shape[:2]
    scale = shorter / min(h, w) if shorter else longer / max(h, w)  # type: ignore[operator]
    if scale == 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if mode == "bicubic" and scale > 1:
        raise ValueError("bicubic is only used to shrink")  # torch's bicubic enlarges with another kernel
    flt = Image.Resampling.BICUBIC if mode == "bicubic" else Image.Resampling.BILINEAR
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c], np.float32), "F").resize(size, flt))
              for c in range(3)]
    return np.clip(np.stack(planes, -1), 0, 1)


def pad_to_multiple(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, 3, H, W) padded (reflect, or edge when too small to reflect) to sides the network round-trips exactly;
    returns the original (H, W) for :func:`crop_back`. A huge picture is padded into :func:`memory.empty`."""
    h, w = x.shape[-2:]
    th, tw = max(-(-h // MULTIPLE) * MULTIPLE, MINIMUM), max(-(-w // MULTIPLE) * MULTIPLE, MINIMUM)
    ph, pw = th - h, tw - w
    if not (ph or pw):
        return x, (h, w)
    reflect = ph < h and pw < w
    top, left = ph // 2, pw // 2
    if x.nbytes <= memory.SPILL_BYTES:
        pads = ((0, 0), (0, 0), (top, ph - top), (left, pw - left))
        return np.pad(x, pads, mode="reflect" if reflect else "edge"), (h, w)
    out = memory.empty((*x.shape[:2], th, tw), x.dtype)
    for rows in memory.bands(h, x[0, :, 0].nbytes):
        out[:, :, top + rows.start:top + rows.stop, left:left + w] = x[:, :, rows]
    fill_border(out, (top, ph - top, left, pw - left), reflect)
    return out, (h, w)


def fill_border(out: np.ndarray, pads: tuple[int, int, int, int], reflect: bool) -> np.ndarray:
    """Fill the (top, bottom, left, right) border of (N, C, H, W) ``out`` from its inside, in place: mirrored
    without repeating the edge (``reflect``, each pad smaller than the inside) or repeating the edge line."""
    top, bottom, left, right = pads
    for axis, before, after in ((2, top, bottom), (3, left, right)):  # rows, then columns over all rows
        view = np.moveaxis(out, axis, 0)  # lines first: view[i] is line i
        end = view.shape[0] - after
        if before:  # line before - 1 - i mirrors line before + 1 + i (reflect) or repeats the edge (replicate)
            view[:before] = view[before + 1:2 * before + 1][::-1] if reflect else view[before:before + 1]
        if after:  # line end + i mirrors line end - 2 - i
            view[end:end + after] = view[end - 1 - after:end - 1][::-1] if reflect else view[end - 1:end]
    return out


def crop_back(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The picture's own (H, W) out of a padded result: a view (copy it with :func:`contiguous`)."""
    h, w = size
    top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
    return y[..., top:top + h, left:left + w]


def contiguous(y: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray``, into :func:`memory.empty` a band at a time for a huge array."""
    if y.flags.c_contiguous:
        return y
    if y.nbytes <= memory.SPILL_BYTES:
        return np.ascontiguousarray(y)
    out = memory.empty(y.shape, y.dtype)
    for rows in memory.bands(y.shape[-2], y[..., 0, :].nbytes):
        out[..., rows, :] = y[..., rows, :]
    return out


def clip01(y: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place, a band at a time (so a spilled array stays out of memory)."""
    for rows in memory.bands(y.shape[-2], y[..., 0, :].nbytes):
        np.clip(y[..., rows, :], 0, 1, out=y[..., rows, :])
    return y


def preserve_colors(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance-only transfer on (N, 3, H, W): the stylized Y channel with the content's Cb/Cr (BT.601), clipped."""
    def ycbcr(x):
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        return y, (b - y) * 0.564, (r - y) * 0.713

    out = memory.empty(stylized.shape, np.float32)
    for rows in memory.bands(stylized.shape[-2], stylized[..., 0, :].nbytes):  # a band at a time: no big copies
        y, _, _ = ycbcr(stylized[..., rows, :])
        _, cb, cr = ycbcr(content[..., rows, :])
        r = y + 1.403 * cr
        b = y + 1.773 * cb
        g = (y - 0.299 * r - 0.114 * b) / 0.587
        out[..., rows, :] = np.clip(np.stack([r, g, b], 1), 0, 1)
    return out
