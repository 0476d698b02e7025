"""ONNX Runtime sessions for the graphs we write, on the CPU (imports neither torch nor onnx)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .memory import KEEP_PIXELS

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

INPUT_NAME = "image"  # the graph's input and output names (onnx_export writes them)
OUTPUT_NAME = "stylized"


def _default_threads() -> int:
    """The cores this process may run on, or fewer when ``OMP_NUM_THREADS`` asks for fewer (as it would of torch)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(asked))) if asked.isdigit() and int(asked) > 0 else cores


_shared_arena: bool | None = None


def _shared_cpu_arena(ort) -> bool:
    """Register one CPU arena for every session of the process (once): the networks of different styles then
    share its memory instead of each keeping its own peak."""
    global _shared_arena
    if _shared_arena is None:
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _shared_arena = True
        except Exception:  # an onnxruntime without it: every session keeps its own arena
            _shared_arena = False
    return _shared_arena


def session(model: bytes | str | os.PathLike, threads: int | None = None, spin: bool = False,
            arena: bool = True) -> onnxruntime.InferenceSession:
    """A CPU session for a graph we wrote. ``spin=False`` stops idle worker threads busy-waiting, which would
    steal cores from anything else on a shared CPU (ffmpeg, the other batch) between calls. ``arena=False``:
    no memory arena (it grows in powers of two and keeps its peak), for the tiled path's many small runs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or _default_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if not arena:
        opts.enable_cpu_mem_arena = False
    elif _shared_cpu_arena(ort):
        opts.add_session_config_entry("session.use_env_allocators", "1")
    opts.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


class OrtNetwork:
    """An ONNX Runtime CPU session for one exported generated network (weights baked in, or given per call to a
    ``weights_as_inputs`` graph); :meth:`run` is ``transform`` on numpy arrays."""

    def __init__(self, model: bytes | str | os.PathLike, threads: int | None = None, spin: bool = False,
                 keep_pixels: int = KEEP_PIXELS):
        """The memory arena is kept between calls of up to ``keep_pixels`` pixels (batch included) and handed
        back after bigger ones."""
        import onnxruntime as ort

        self.session = session(model, threads, spin)
        self.keep_pixels = keep_pixels
        self._keep = ort.RunOptions()
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, x: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(N, 3, H, W) in [0, 1], sides a multiple of 4 → unclamped stylized (N, 3, H, W) float32; ``weights``:
        the network's inputs (:func:`~metastyle_batch.onnx_export.network_feed`) for a ``weights_as_inputs`` graph."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"expected (N, 3, H, W) with H and W multiples of 4, got {x.shape}")
        big = x.shape[0] * x.shape[2] * x.shape[3] > self.keep_pixels
        (y,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x, **(weights or {})}, self._shrink if big else self._keep)
        return y
