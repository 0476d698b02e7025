"""The compute stage of a video run: decoded uint8 frames → generated networks → stylized uint8 frames.

A batch goes through three steps. :meth:`FrameCompute.prepare` (in order, on the caller's thread) resolves
the strength once from the first frame, picks the batch's network(s) from the schedule and makes the input
tensor; :meth:`FrameCompute.forward` (stateless, so it may run on a worker thread) runs the network and the
colour preservation; :meth:`FrameCompute.finish` (in order again) applies the stabilizer, feeds the flicker meter
and converts to uint8.

On the CPU, frames are computed by ``workers`` threads at once, each batch with ``torch threads / workers``
intra-op threads (2 cores: two batches in parallel, one thread each). Small convolutions (8–32 channels)
scale poorly across threads, and a multi-threaded op waits at every barrier for its slowest thread, which
ffmpeg's threads, or anything else on the machine, keep preempting; one thread per batch does not wait.
Every forward pass goes through ``Stylizer.run`` (the engine picks PyTorch or ONNX Runtime), so outputs do not
depend on ``workers``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

from .. import color
from ..color import PALETTE_STRENGTH
from ..engine import match_palette, preserve_colors
from ..model.meta import StyleCode
from .schedule import StyleSchedule
from .temporal import FlickerMeter, Stabilizer

__all__ = ["FrameCompute", "default_workers", "torch_threads"]

def default_workers(stylizer, batch_pixels: int) -> int:
    """Batches computed at once: two on a CPU with two or more torch threads, else one (on a GPU, and where
    the engine runs the batch in ONNX Runtime, which brings its own threads)."""
    if stylizer.device.type != "cpu":
        return 1
    if getattr(stylizer, "use_ort", False) and batch_pixels >= getattr(stylizer, "ORT_MIN_PIXELS", float("inf")):
        return 1
    return min(2, torch.get_num_threads())


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``n`` for the block (threads started inside it inherit it)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


class FrameCompute:
    """Frames → stylized frames, batch by batch, for one video (see the module docstring)."""

    def __init__(self, stylizer, schedule: StyleSchedule, *, strength: float = 1.0, preserve_color: bool = False,
                 stabilize: bool = False, measure_flicker: bool = True, threads: int = 1,
                 palette: float = PALETTE_STRENGTH, network=None):
        """``network``: a ready network for a one-style clip (``video --refine``), used instead of the style's."""
        self.stylizer, self.schedule = stylizer, schedule
        self.strength, self.preserve_color, self.palette = strength, preserve_color, palette
        self._affine = None  # the palette map of a one-style clip, from its first frame
        self.flicker = FlickerMeter() if measure_flicker else None
        self.stabilizer = Stabilizer() if stabilize else None
        self.threads = threads  # intra-op threads of one forward call (set by the caller: torch_threads)
        self.fixed_params = network
        self.seconds = 0.0  # thread-seconds in prepare + forward + finish (workers overlap)
        self._lock = threading.Lock()

    def _spent(self, t0: float) -> None:
        with self._lock:
            self.seconds += time.perf_counter() - t0

    # ---- in order, on the caller's thread
    def prepare(self, frames: list[np.ndarray], start: int) -> tuple[torch.Tensor, object]:
        """Frames ``start``, ``start + 1``, … as (H, W, 3) uint8 → (input tensor, generated network(s))."""
        t0 = time.perf_counter()
        stylizer = self.stylizer
        if start == 0 and self.strength < 1.0:  # resolved once, from the first frame, so it cannot flicker
            content = stylizer.encode_array(frames[0].astype(np.float32) / 255)
            self.schedule = self.schedule.map(lambda c: stylizer.with_strength(c, content, self.strength))
        x = torch.from_numpy(np.stack(frames)).to(stylizer.device).permute(0, 3, 1, 2).float().div_(255)
        indices = range(start, start + len(frames))
        codes = [self.schedule.code(0)] * len(frames) if self.schedule.fixed else [self.schedule.code(i) for i in indices]
        params = self._network(codes)
        self._spent(t0)
        return x, (params, codes)

    def _network(self, codes: Sequence[StyleCode]):
        if self.schedule.fixed:
            if self.fixed_params is None:
                self.fixed_params = self.stylizer.network(codes[0])
            return self.fixed_params
        hidden = torch.stack([c.hidden for c in codes])
        if bool((hidden == hidden[0]).all()):
            return self.stylizer.network(StyleCode(hidden[0]))
        return self.stylizer.network(hidden)

    # ---- stateless: any thread
    @torch.no_grad()
    def forward(self, x: torch.Tensor, job) -> torch.Tensor:
        """Stylized (N, 3, H, W) float in [0, 1] for the input of :meth:`prepare`: (network(s), frame codes)."""
        t0 = time.perf_counter()
        params, codes = job
        y = self.stylizer.run(x, params)
        if self.preserve_color:
            y = preserve_colors(y, x).clamp_(0, 1)
        self._spent(t0)
        return y, codes

    # ---- in order, on the caller's thread
    @torch.no_grad()
    def finish(self, x: torch.Tensor, result) -> np.ndarray:
        """Palette transfer, stabilizer, flicker meter, and (N, H, W, 3) uint8 out (``result``: :meth:`forward`'s)."""
        t0 = time.perf_counter()
        y, codes = result
        if not self.preserve_color:
            y = self._palette(y, codes)
        if self.stabilizer is not None:
            y = self.stabilizer(x, y)
        if self.flicker is not None:
            self.flicker.add(x, y)
        out = y.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        self._spent(t0)
        return out

    def _palette(self, y: torch.Tensor, codes: list[StyleCode]) -> torch.Tensor:
        """The engine's palette transfer. With one style for the clip, the colour map is taken from the first frame
        and kept, so it cannot pump with the content; with moving styles each frame follows its own code."""
        if self.palette <= 0 or codes[0].colors is None:
            return y
        if not self.schedule.fixed:
            return torch.cat([match_palette(y[i:i + 1], c, self.palette) for i, c in enumerate(codes)])
        out = y.float().cpu().contiguous()
        frames = out.numpy()
        if self._affine is None:
            self._affine = color.affine(color.moments(frames[0].reshape(3, -1)), codes[0].colors.numpy(), self.palette)
        for frame in frames:
            color.apply(frame, *self._affine)
        return out.to(y.device)

    def __call__(self, frames: list[np.ndarray], start: int) -> np.ndarray:
        """All three steps on this thread."""
        x, params = self.prepare(frames, start)
        return self.finish(x, self.forward(x, params))

    def flicker_stats(self) -> dict[str, float | None]:
        if self.flicker is None:
            return {"flicker": None, "stylized_mad": None, "source_mad": None}
        return self.flicker.result()
