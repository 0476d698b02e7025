"""Big pictures in bounded memory, without torch: the generated network layer by layer over tiles (numpy + ONNX
Runtime), the same method as :class:`~metastyle_batch.model.transform.TiledOps`.

Each conv runs tile by tile with its exact receptive-field halo (the border padded as the whole-image conv pads
it); full-resolution layers run in polyphase form (a stride-2 conv giving the four phases, an upsampling conv on
the low-res window), then depth-to-space. A tile is stored centred and scaled by its own statistics, which combine
exactly (float64) into the map's instance-norm statistics; one sweep over the stored tiles then applies the norm.
Stored that way every tile uses float16's whole precision, so big maps (over ``HALF_ELEMENTS``) are float16.
Maps over :data:`memory.SPILL_BYTES` live on disk (:func:`memory.empty`): a 100 MP picture runs in about 1 GB.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import memory
from .model.layers import ConvSpec, layer_specs
from .model.phases import stride2_phases, upsample_phases
from .onnx_export import one_network
from .onnxgraph import Graph
from .pixels import fill_border

HALF_ELEMENTS = 64 << 20  # bigger maps (256 MB in float32) are stored in float16


def _conv_session(w: np.ndarray, b: np.ndarray | None, stride: int, shuffle: bool, norm: str | None):
    """A one-conv graph with this layer's weights baked in (ONNX Runtime prepacks them once for all its tiles).
    ``norm`` ("float32" or "float16"): the tile comes back centred and scaled by its own per-channel statistics,
    stored as that type, with its ``mean`` and ``std``; otherwise as it is."""
    from .ort import session

    g = Graph("metastyle_tile_conv")
    inputs = [g.input("x", ["n", w.shape[1], "h", "w"]), g.const(np.ascontiguousarray(w, np.float32))]
    if b is not None:
        inputs.append(g.const(np.asarray(b, np.float32)))
    y = g.op("Conv", *inputs, strides=[stride, stride], kernel_shape=list(w.shape[-2:]))
    if shuffle:
        y = g.op("DepthToSpace", y, blocksize=2, mode="CRD")
    if norm is None:
        g.op("Identity", y, out="y")
        return session(g.model([("y", ["n", "o", "h2", "w2"])]), arena=False)
    mean = g.op("ReduceMean", y, axes=[2, 3], keepdims=1, out="mean")
    centred = g.op("Sub", y, mean)
    var = g.op("ReduceMean", g.op("Mul", centred, centred), axes=[2, 3], keepdims=1)
    std = g.op("Add", g.op("Sqrt", var), g.const(np.array(1e-12, np.float32)), out="std")
    z = g.op("Div", centred, std, out="y" if norm == "float32" else None)
    if norm == "float16":
        g.op("Cast", z, to=10, out="y")  # TensorProto.FLOAT16
    stats = ["n", "o", 1, 1]
    return session(g.model([("y", ["n", "o", "h2", "w2"]), ("mean", stats), ("std", stats)], elem={"y": norm}),
                   arena=False)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    from .ort import _default_threads

    return ThreadPoolExecutor(_default_threads(), thread_name_prefix="metastyle-tiles")


def out_size(x, spec: ConvSpec) -> tuple[int, int]:
    """(H, W) of a layer's output for input ``x`` (N, C, H, W): upsampled first, reflect-padded by k // 2."""
    up = 2 if spec.upsample else 1
    return tuple((n * up + 2 * (spec.k // 2) - spec.k) // spec.stride + 1 for n in x.shape[2:])  # type: ignore[return-value]


def phased(spec: ConvSpec) -> bool:
    """Full-resolution layers run in polyphase form: a 9x9 conv as a stride-2 conv giving the four phases, an
    upsampling conv on the low-res window (no upsampled copy), then depth-to-space."""
    return spec.upsample or (spec.k == 9 and spec.stride == 1)


def windows(x, spec: ConvSpec, tile: int):
    """For each tile of the layer's output: (output rows, output cols), (input rows, input cols) and how the
    window's border beyond the map is padded. Tile edges are even, so every tile holds whole phases."""
    s, k, pad = spec.stride, spec.k, spec.k // 2
    ho, wo = out_size(x, spec)
    for y0 in range(0, ho, tile):
        y1 = min(y0 + tile, ho)
        for x0 in range(0, wo, tile):
            x1 = min(x0 + tile, wo)
            if spec.upsample:  # low-res rows y0/2 - 1 … y1/2, edge rows replicated (see phases.UP_TAPS)
                yield (slice(y0, y1), slice(x0, x1)), (y0 // 2 - 1, y1 // 2 + 1), (x0 // 2 - 1, x1 // 2 + 1), "replicate"
            else:
                rows, cols = (y0 * s - pad, (y1 - 1) * s + k - pad), (x0 * s - pad, (x1 - 1) * s + k - pad)
                yield (slice(y0, y1), slice(x0, x1)), rows, cols, "reflect"
        yield None  # a row of tiles is done


def _window(x: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], mode: str = "reflect") -> np.ndarray:
    """Rows/columns ``[a, b)`` of ``x`` as float32, padded beyond its borders as the whole-image conv pads them
    (``reflect`` or ``replicate``): the inner part copied once, the border (at most k // 2 wide) filled from it."""
    (a, b), (c, d) = rows, cols
    a1, b1, c1, d1 = max(a, 0), min(b, x.shape[2]), max(c, 0), min(d, x.shape[3])
    top, bottom, left, right = a1 - a, b - b1, c1 - c, d - d1
    out = np.empty((x.shape[0], x.shape[1], b - a, d - c), np.float32)
    out[:, :, top:top + b1 - a1, left:left + d1 - c1] = x[:, :, a1:b1, c1:d1]
    return fill_border(out, (top, bottom, left, right), mode == "reflect")


def _tiles(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec, tile: int, norm: str | None = None):
    """(output slice, the conv's outputs on that tile) for every tile of the layer's output."""
    if phased(spec):
        w = upsample_phases(w) if spec.upsample else stride2_phases(w)
        b = None if b is None else np.repeat(b, 4)
    run = _conv_session(w, b, 2 if phased(spec) and not spec.upsample else spec.stride, phased(spec), norm)
    names = ["y"] if norm is None else ["y", "mean", "std"]
    for item in windows(x, spec, tile):
        if item is None:
            memory.release()
            continue
        where, rows, cols, mode = item
        yield where, run.run(names, {"x": _window(x, rows, cols, mode)})


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, spec: ConvSpec, tile: int) -> np.ndarray:
    """An un-normalised conv (the output layer): float32, it is the image."""
    out = memory.empty((x.shape[0], spec.cout, *out_size(x, spec)), np.float32)
    for (rows, cols), (y,) in _tiles(x, w, b, spec, tile):
        out[:, :, rows, cols] = y
    return out


def _conv_norm(x: np.ndarray, w: np.ndarray, spec: ConvSpec, shift: np.ndarray, gain: np.ndarray | None,
               relu: bool, tile: int) -> np.ndarray:
    """A conv, its instance norm over the whole map, the generated gain and shift, ReLU: tile by tile."""
    ho, wo = out_size(x, spec)
    dtype = np.float16 if x.shape[0] * spec.cout * ho * wo > HALF_ELEMENTS else np.float32
    out = memory.empty((x.shape[0], spec.cout, ho, wo), dtype)
    n, mean, m2, tiles = 0, 0.0, 0.0, []
    for where, (y, mean_t, std_t) in _tiles(x, w, None, spec, tile, np.dtype(dtype).name):
        out[(slice(None), slice(None)) + where] = y  # centred and scaled by the tile's own statistics
        n_t = y.shape[2] * y.shape[3]
        mean_t, std_t = mean_t.astype(np.float64), std_t.astype(np.float64)
        tiles.append((where, mean_t, std_t))
        delta = mean_t - mean  # Chan et al.'s exact combination of the tiles' means and variances
        mean = mean + delta * n_t / (n + n_t)
        m2 = m2 + std_t ** 2 * n_t + delta ** 2 * n * n_t / (n + n_t)
        n += n_t
    std = np.sqrt(m2 / n + 1e-5)
    scale = 1 / std if gain is None else np.asarray(gain, np.float64).reshape(1, -1, 1, 1) / std
    offset = np.asarray(shift, np.float64).reshape(1, -1, 1, 1)

    def sweep(tile_stats) -> None:  # stored = (y - mean_t) / std_t → the normalised y, in place
        where, mean_t, std_t = tile_stats
        view = out[(slice(None), slice(None)) + where]
        y = view.astype(np.float32)
        y *= (std_t * scale).astype(np.float32)
        y += ((mean_t - mean) * scale + offset).astype(np.float32)
        if relu:
            np.maximum(y, 0, out=y)
        view[...] = y
        memory.drop_spilled()

    list(_pool().map(sweep, tiles))  # numpy releases the GIL: the sweeps run on every core
    memory.release()
    return out


def run_tiled(x: np.ndarray, params: dict[str, np.ndarray], base: int, tile: int = 512) -> np.ndarray:
    """One network (G == 1) on (1, 3, H, W) in [0, 1] (sides multiples of 4) → unclamped (1, 3, H, W) float32:
    the whole-image network's output up to float16 storage (within 1/255)."""
    tile = max(2, tile - tile % 2)  # even: whole phases per tile
    specs = {s.name: s for s in layer_specs(base)}
    p = one_network(params)

    def layer(h: np.ndarray, name: str, relu: bool = True) -> np.ndarray:
        return _conv_norm(h, p[f"{name}.weight"], specs[name], p[f"{name}.bias"], p.get(f"{name}.gain"), relu, tile)

    h = layer(x, "conv_in")
    h = layer(h, "down1")
    h = layer(h, "down2")
    for i in range(1, 6):
        r = layer(layer(h, f"res{i}a"), f"res{i}b", relu=False)
        for rows in memory.bands(r.shape[2], r[0, :, 0].nbytes):  # r += h, a band at a time
            r[:, :, rows] += h[:, :, rows]
        h = r
    h = layer(h, "up1")
    h = layer(h, "up2")
    return _conv(h, p["conv_out.weight"], p["conv_out.bias"], specs["conv_out"], tile)
