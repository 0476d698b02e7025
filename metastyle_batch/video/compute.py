"""The compute stage of a video run: decoded uint8 frames → generated networks → stylized uint8 frames.

A batch goes through three steps. :meth:`FrameCompute.prepare` (in order, on the caller's thread) resolves
the strength once from the first frame, picks the batch's network(s) from the schedule and makes the input
tensor; :meth:`FrameCompute.forward` (stateless, so it may run on a worker thread) runs the network and the
colour preservation; :meth:`FrameCompute.finish` (in order again) applies the stabilizer, feeds the flicker meter
and converts to uint8.

On the CPU, frames are computed by ``workers`` threads at once, each batch with ``threads / workers`` intra-op
threads of the engine (2 cores: two batches in parallel, one thread each; ONNX Runtime keeps a session per
thread count, 640x360 at 14.3 instead of 12.5 frames/s). Small convolutions (8–32 channels)
scale poorly across threads, and a multi-threaded op waits at every barrier for its slowest thread, which
ffmpeg's threads, or anything else on the machine, keep preempting; one thread per batch does not wait.
Every forward pass goes through the engine's ``run_array``, so outputs do not
depend on ``workers``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Sequence

import numpy as np

from .. import color, pixels
from ..codes import StyleCode
from ..color import PALETTE_STRENGTH
from .schedule import StyleSchedule
from .temporal import FlickerMeter, Stabilizer

__all__ = ["FrameCompute", "default_workers", "compute_threads", "stylize_frames"]


def _torch_cpu(stylizer) -> bool:
    return stylizer.runtime == "torch" and stylizer.device.type == "cpu"


def _cpu_threads(stylizer) -> int:
    if stylizer.runtime == "torch":
        import torch

        return torch.get_num_threads()
    from ..ort import _default_threads

    return stylizer.threads or _default_threads()


def default_workers(stylizer) -> int:
    """Batches computed at once: one on a GPU, else two when there are two or more CPU threads."""
    return 1 if stylizer.device.type != "cpu" else min(2, _cpu_threads(stylizer))


def compute_threads(stylizer, workers: int) -> tuple[int, ContextManager]:
    """(intra-op threads of one forward call, the context that sets them for the run): the CPU's threads shared
    between the workers."""
    if stylizer.device.type != "cpu":
        return 1, nullcontext()
    threads = max(1, _cpu_threads(stylizer) // workers)
    return threads, torch_threads(threads) if _torch_cpu(stylizer) else nullcontext()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``n`` for the block (threads started inside it inherit it)."""
    import torch

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
        self._strength_resolved = False
        self.flicker = FlickerMeter() if measure_flicker else None
        self.stabilizer = Stabilizer() if stabilize else None
        self.threads = threads  # intra-op threads of one forward call (set by the caller: compute_threads)
        self.fixed_params = network
        self.seconds = 0.0  # thread-seconds in prepare + forward + finish (workers overlap)
        self._lock = threading.Lock()

    def _spent(self, t0: float) -> None:
        with self._lock:
            self.seconds += time.perf_counter() - t0

    # ---- in order, on the caller's thread
    def prepare(self, frames: list[np.ndarray], start: int) -> tuple[np.ndarray, object]:
        """Frames ``start``, ``start + 1``, … as (H, W, 3) uint8 → (input (N, 3, H, W) float32, network(s))."""
        return self.prepare_array(np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255), start)

    def prepare_array(self, x: np.ndarray, start: int) -> tuple[np.ndarray, object]:
        """:meth:`prepare` for (N, 3, H, W) float32 frames in [0, 1] (VapourSynth's RGBS)."""
        t0 = time.perf_counter()
        stylizer = self.stylizer
        if start == 0 and self.strength < 1.0 and not self._strength_resolved:  # once, from the first frame, so
            content = stylizer.encode_array(np.ascontiguousarray(x[0].transpose(1, 2, 0)))  # it cannot flicker
            self.schedule = self.schedule.map(lambda c: stylizer.with_strength(c, content, self.strength))
            self._strength_resolved = True
        indices = range(start, start + len(x))
        codes = [self.schedule.code(0)] * len(x) if self.schedule.fixed else [self.schedule.code(i) for i in indices]
        params = self._network(codes)
        self._spent(t0)
        return x, (params, codes)

    def _network(self, codes: Sequence[StyleCode]):
        if self.schedule.fixed:
            if self.fixed_params is None:
                self.fixed_params = self.stylizer.network(codes[0])
            return self.fixed_params
        hidden = np.stack([c.hidden for c in codes])
        if bool((hidden == hidden[0]).all()):
            return self.stylizer.network(StyleCode(hidden[0]))
        return self.stylizer.network(hidden)

    # ---- stateless: any thread
    def forward(self, x: np.ndarray, job) -> tuple[np.ndarray, list[StyleCode]]:
        """Stylized (N, 3, H, W) float32 in [0, 1] for the input of :meth:`prepare`: (network(s), frame codes)."""
        t0 = time.perf_counter()
        params, codes = job
        y = self.stylizer.run_array(x, params, self.threads)
        if self.preserve_color:
            y = pixels.preserve_colors(y, x)
        self._spent(t0)
        return y, codes

    # ---- in order, on the caller's thread
    def finish(self, x: np.ndarray, result) -> np.ndarray:
        """Palette transfer, stabilizer, flicker meter, and (N, H, W, 3) uint8 out (``result``: :meth:`forward`'s)."""
        y = self.finish_array(x, result)
        return np.ascontiguousarray((y * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))

    def finish_array(self, x: np.ndarray, result) -> np.ndarray:
        """:meth:`finish` up to the (N, 3, H, W) float32 frames in [0, 1]."""
        t0 = time.perf_counter()
        y, codes = result
        if not self.preserve_color:
            self._palette(y, codes)
        if self.stabilizer is not None:
            y = self.stabilizer(x, y)
        if self.flicker is not None:
            self.flicker.add(x, y)
        self._spent(t0)
        return y

    def _palette(self, y: np.ndarray, codes: list[StyleCode]) -> None:
        """The engine's palette transfer, in place. With one style for the clip, the colour map is taken from the
        first frame and kept, so it cannot pump with the content; with moving styles each frame follows its own code."""
        if self.palette <= 0 or codes[0].colors is None:
            return
        if not self.schedule.fixed:
            for frame, code in zip(y, codes):
                if code.colors is not None:  # a blend with a code that has no colours (a random style) has none
                    color.transfer(frame, code.colors, self.palette)
            return
        if self._affine is None:
            self._affine = color.affine(color.moments(y[0].reshape(3, -1)), codes[0].colors, self.palette)
        for frame in y:
            color.apply(frame, *self._affine)

    def __call__(self, frames: list[np.ndarray], start: int) -> np.ndarray:
        """All three steps on this thread."""
        x, params = self.prepare(frames, start)
        return self.finish(x, self.forward(x, params))

    def flicker_stats(self) -> dict[str, float | None]:
        if self.flicker is None:
            return {"flicker": None, "stylized_mad": None, "source_mad": None}
        return self.flicker.result()


def stylize_frames(stylizer, frames: np.ndarray, schedule: StyleSchedule, *, strength: float = 1.0,
                   preserve_color: bool = False, palette: float = PALETTE_STRENGTH, batch: int = 2) -> np.ndarray:
    """(N, H, W, 3) float32 frames in [0, 1] → the stylized frames, as ``metastyle-batch video`` computes a clip
    (strength and the palette map fixed from frame 0, each frame's code from ``schedule``), without files: what
    the ComfyUI nodes run on an IMAGE batch."""
    threads, setting = compute_threads(stylizer, 1)
    compute = FrameCompute(stylizer, schedule, strength=strength, preserve_color=preserve_color, palette=palette,
                           measure_flicker=False, threads=threads)
    out = []
    with setting:
        for start in range(0, len(frames), batch):
            x, job = compute.prepare_array(np.ascontiguousarray(frames[start:start + batch].transpose(0, 3, 1, 2)), start)
            out.append(compute.finish_array(x, compute.forward(x, job)))
    return np.concatenate(out).transpose(0, 2, 3, 1)
