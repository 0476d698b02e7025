"""The image transformation network whose weights the meta network generates.

Architecture (MetaNet "fast" network): 9x9 conv (trained) → two stride-2 3x3 convs → 5 residual blocks →
two nearest-upsample 3x3 convs → 9x9 conv (trained). Reflection padding everywhere, instance norm + ReLU after
every conv but the last. Generated weights carry a leading group dim G: G == 1 shares one network over the
batch, G == B gives every sample its own network (grouped convolution).

A conv's bias is added *after* its instance norm (``relu(IN(conv(x)) + b)``). Before the norm it would be
subtracted again with the mean, leaving the meta network no way to shift a channel per style; after it, the
generated biases act like conditional instance norm's shift and let each style set its own colours.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import memory
from . import phases
from ..tiled import out_size, phased, windows
from .layers import ConvSpec, generated_specs, layer_specs  # noqa: F401 - re-exported


# "<layer>.weight" (G, O, I, k, k) / (O, I, k, k); "<layer>.bias" and the optional "<layer>.gain" (G, O) / (O,)
Params = dict[str, torch.Tensor]


def single_network(params: Params) -> Params:
    """Generated weights without their leading group dim, for code that takes one plain network (G must be 1)."""
    flat = {}
    for name, value in params.items():
        if (name.endswith(".weight") and value.dim() == 5) or (name.endswith((".bias", ".gain")) and value.dim() == 2):
            if value.shape[0] != 1:
                raise ValueError(f"one network is needed, but {name} holds {value.shape[0]} (G != 1)")
            value = value[0]
        flat[name] = value
    return flat


class DirectOps:
    """Runs every layer on the whole tensor at once."""

    @staticmethod
    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
        if spec.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.pad(x, [spec.k // 2] * 4, mode="reflect")
        return _conv(x, w, b, spec.stride)

    @staticmethod
    def norm(x: torch.Tensor, shift: torch.Tensor, relu: bool, gain: torch.Tensor | None = None) -> torch.Tensor:
        return DirectOps.affine(F.instance_norm(x), shift, relu, gain)

    @staticmethod
    def affine(z: torch.Tensor, shift: torch.Tensor, relu: bool, gain: torch.Tensor | None = None) -> torch.Tensor:
        """What follows instance norm: the generated per-channel gain and shift, then ReLU."""
        z = z + _channels(shift) if gain is None else torch.addcmul(_channels(shift), z, _channels(gain))
        return F.relu(z) if relu else z

    @staticmethod
    def conv_norm(x: torch.Tensor, w: torch.Tensor, spec: ConvSpec, shift: torch.Tensor, relu: bool,
                  gain: torch.Tensor | None) -> torch.Tensor:
        return DirectOps.norm(DirectOps.conv(x, w, None, spec), shift, relu, gain)


def _channels(b: torch.Tensor) -> torch.Tensor:
    """A bias (O,), (1, O) or (G, O) as (G, O, 1, 1), to broadcast over a batch of feature maps."""
    return b.reshape(-1, b.shape[-1], 1, 1)


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int) -> torch.Tensor:
    if w.dim() == 4:
        return F.conv2d(x, w, b, stride)
    groups = w.shape[0]
    if groups == 1:
        return F.conv2d(x, w[0], None if b is None else b[0], stride)
    n, cin, h, wd = x.shape
    if n != groups:
        raise ValueError(f"batch of {n} images but {groups} generated networks")
    y = F.conv2d(x.reshape(1, n * cin, h, wd), w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                 stride, groups=n)
    return y.reshape(n, -1, *y.shape[2:])


class TiledOps:
    """Layer-by-layer execution over tiles, for images too large to run whole.

    Each conv runs tile by tile on ``device`` with the exact receptive-field halo (border padding only its own
    window; full-resolution layers in polyphase form). A tile is stored centred and scaled by its own statistics,
    which are combined exactly (float64) into the map's instance-norm statistics; one sweep over the stored tiles
    then applies the norm. Stored that way every tile uses float16's whole precision, so a big map (over
    ``HALF_ELEMENTS``) is kept in ``store_dtype`` and no conv is computed twice: a 24 MP photo's widest map is
    0.4 GB instead of 0.8. Output: the untiled network's up to rounding (every map in float16: within 0.7/255,
    mean 0.02/255, on the shipped model), without seams.
    """

    HALF_ELEMENTS = 64 << 20  # bigger maps (256 MB in float32) are stored in store_dtype

    def __init__(self, device: torch.device, dtype: torch.dtype, tile: int = 512, store: str = "cpu",
                 store_dtype: torch.dtype = torch.float32):
        self.device, self.dtype, self.store = device, dtype, torch.device(store)
        self.tile = max(2, tile - tile % 2)  # even: whole phases per tile
        self.store_dtype = store_dtype

    def _tiles(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, spec: ConvSpec):
        """(output slice, conv of that tile on the device) for every tile of the layer's output, in polyphase
        form for the full-resolution layers, as in :func:`transform_polyphase` (:func:`metastyle_batch.tiled.windows`)."""
        w = w.to(self.device, self.dtype)
        b = None if b is None else b.to(self.device, self.dtype)
        if phased(spec):
            w = _upsample_phases(w) if spec.upsample else _stride2_phases(w)
            b = None if b is None else b.repeat_interleave(4, dim=-1)
        stride = 2 if phased(spec) and not spec.upsample else spec.stride
        for item in windows(x, spec, self.tile):
            if item is None:
                memory.release()  # the tiles' scratch memory, which glibc would keep (memory.keep_freed_memory)
                continue
            where, rows, cols, mode = item
            y = _conv(_window(x, rows, cols, mode).to(self.device, self.dtype), w, b, stride)
            yield where, (F.pixel_shuffle(y, 2) if phased(spec) else y).float()

    def _output(self, x: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
        """An empty feature map for the layer, float32 or (when big) ``store_dtype``, channels-last: the layout
        the convs read and write fastest (see docs/BENCHMARKS.md, large photos)."""
        ho, wo = out_size(x, spec)
        dtype = self.store_dtype if x.shape[0] * spec.cout * ho * wo > self.HALF_ELEMENTS else torch.float32
        return torch.empty(x.shape[0], spec.cout, ho, wo, device=self.store, dtype=dtype,
                           memory_format=torch.channels_last)

    def conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
        """An un-normalised conv (the output layer): stored in float32, it is the image."""
        x = x.to(self.store)
        out = torch.empty(x.shape[0], spec.cout, *out_size(x, spec), device=self.store)
        for (rows, cols), y in self._tiles(x, w, b, spec):
            out[:, :, rows, cols] = y.to(self.store)
        return out

    def conv_norm(self, x: torch.Tensor, w: torch.Tensor, spec: ConvSpec, shift: torch.Tensor, relu: bool,
                  gain: torch.Tensor | None) -> torch.Tensor:
        x = x.to(self.store)
        out = self._output(x, spec)
        n, mean, m2, tiles = 0, 0.0, 0.0, []
        for where, y in self._tiles(x, w, None, spec):  # y: this tile's own tensor, centred and scaled in place
            n_t = y.shape[2] * y.shape[3]
            mean_t = y.mean(dim=(2, 3), keepdim=True)
            y.sub_(mean_t)
            if y.is_contiguous():
                std_t = torch.linalg.vector_norm(y, dim=(2, 3), keepdim=True).div_(n_t ** 0.5).add_(1e-12)
            else:  # channels-last: vector_norm over H, W is 30x slower there
                std_t = y.square().mean(dim=(2, 3), keepdim=True).sqrt_().add_(1e-12)
            out[(slice(None), slice(None)) + where] = y.div_(std_t).to(self.store, out.dtype)
            mean_t, std_t = mean_t.double().to(self.store), std_t.double().to(self.store)
            tiles.append((where, mean_t, std_t))
            delta = mean_t - mean  # Chan et al.'s exact combination of the tiles' means and variances
            mean = mean + delta * n_t / (n + n_t)
            m2 = m2 + std_t ** 2 * n_t + delta ** 2 * n * n_t / (n + n_t)
            n += n_t
        std = (m2 / n + 1e-5).sqrt()
        scale = 1 / std if gain is None else _channels(gain).to(std) / std
        offset = _channels(shift).to(std)
        for where, mean_t, std_t in tiles:  # stored = (y - mean_t) / std_t → the normalised y, in place
            y = out[(slice(None), slice(None)) + where]
            torch.addcmul(((mean_t - mean) * scale + offset).float(), y, (std_t * scale).float(), out=y)  # float32 math
            if relu:
                y.clamp_(min=0)
        memory.release()
        return out


def _window(x: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], mode: str = "reflect") -> torch.Tensor:
    """Rows/columns ``[a, b)`` of ``x``, padded beyond its borders (``mode``) as the whole-image conv pads them:
    float32 in ``x``'s memory layout, the needed part of ``x`` copied once into the window, whose border (at most
    k // 2 wide) is then filled from the window itself (``F.pad`` would copy it all again, slowly when
    channels-last)."""
    (a, b), (c, d) = rows, cols
    a1, b1, c1, d1 = max(a, 0), min(b, x.shape[2]), max(c, 0), min(d, x.shape[3])
    top, bottom, left, right = a1 - a, b - b1, c1 - c, d - d1
    if not (top or bottom or left or right):
        return x[:, :, a1:b1, c1:d1].float()
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty(x.shape[0], x.shape[1], b - a, d - c, device=x.device, memory_format=layout)
    h, w = b1 - a1, d1 - c1
    out[:, :, top:top + h, left:left + w] = x[:, :, a1:b1, c1:d1]
    reflect = mode == "reflect"
    for dim, before, size, after in ((2, top, h, bottom), (3, left, w, right)):  # rows, then columns over all rows
        end = before + size
        for i in range(before):  # mirrors the line i + 1 inside the edge (reflect) or repeats the edge (replicate)
            out.select(dim, before - 1 - i).copy_(out.select(dim, before + 1 + i if reflect else before))
        for i in range(after):
            out.select(dim, end + i).copy_(out.select(dim, end - 2 - i if reflect else end - 1))
    return out


def transform(x: torch.Tensor, params: Params, base: int = 8, ops=DirectOps) -> torch.Tensor:
    """Stylize RGB in [0, 1] (sides a multiple of 4) with a generated network; output is unclamped RGB."""
    specs = {s.name: s for s in layer_specs(base)}

    def layer(h: torch.Tensor, name: str, relu: bool = True, norm: bool = True) -> torch.Tensor:
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]
        if not norm:
            return ops.conv(h, w, b, specs[name])
        return ops.conv_norm(h, w, specs[name], b, relu, params.get(f"{name}.gain"))

    h = layer(x, "conv_in")
    h = layer(h, "down1")
    h = layer(h, "down2")
    for i in range(1, 6):
        h = h + layer(layer(h, f"res{i}a"), f"res{i}b", relu=False)
    h = layer(h, "up1")
    h = layer(h, "up2")
    return layer(h, "conv_out", norm=False)


# ---- the same network in polyphase form, for inference (the rewrite itself: :mod:`.phases`, in numpy) -------------

def _via_numpy(fn, w: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(fn(w.detach().float().cpu().numpy())).to(w)


def _upsample_phases(w: torch.Tensor) -> torch.Tensor:
    return _via_numpy(phases.upsample_phases, w)


def _stride2_phases(w: torch.Tensor) -> torch.Tensor:
    return _via_numpy(phases.stride2_phases, w)


def polyphase(params: Params) -> Params:
    """Rewrite a generated network for :func:`transform_polyphase` (same outputs, cheap: ~1 ms)."""
    pp = phases.polyphase({k: v.detach().float().cpu().numpy() for k, v in params.items()})
    return {k: torch.from_numpy(v).to(params[k]) for k, v in pp.items()}


def transform_polyphase(x: torch.Tensor, pp: Params, base: int = 8) -> torch.Tensor:
    """:func:`transform` for parameters rewritten by :func:`polyphase`."""
    specs = {s.name: s for s in layer_specs(base)}

    def norm(h: torch.Tensor, name: str, relu: bool = True) -> torch.Tensor:
        return DirectOps.norm(h, pp[f"{name}.bias"], relu, pp.get(f"{name}.gain"))

    def layer(h: torch.Tensor, name: str, relu: bool = True) -> torch.Tensor:
        return norm(DirectOps.conv(h, pp[f"{name}.weight"], None, specs[name]), name, relu)

    h = _conv(F.pad(x, [4] * 4, mode="reflect"), pp["conv_in.weight"], None, 2)
    # instance norm of the full-res map = group norm over each channel's 4 phases
    h = F.relu(F.group_norm(h, base) + _channels(pp["conv_in.bias"]))
    h = norm(_conv(F.pad(h, [1, 0, 1, 0], mode="replicate"), pp["down1.weight"], None, 1), "down1")
    h = layer(h, "down2")
    for i in range(1, 6):
        h = h + layer(layer(h, f"res{i}a"), f"res{i}b", relu=False)
    for name in ("up1", "up2"):
        h = F.pixel_shuffle(_conv(F.pad(h, [1] * 4, mode="replicate"), pp[f"{name}.weight"], None, 1), 2)
        h = norm(h, name)
    h = _conv(F.pad(h, [4] * 4, mode="reflect"), pp["conv_out.weight"], pp["conv_out.bias"], 2)
    return F.pixel_shuffle(h, 2)


def pad_to_multiple(x: torch.Tensor, multiple: int = 4, minimum: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad reflectively so the network's down/up-sampling round-trips exactly; returns the original (H, W)."""
    h, w = x.shape[-2:]
    th = max(math.ceil(h / multiple) * multiple, minimum)
    tw = max(math.ceil(w / multiple) * multiple, minimum)
    ph, pw = th - h, tw - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode=mode)
    return x, (h, w)


def crop_back(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
    return y[..., top:top + h, left:left + w]
