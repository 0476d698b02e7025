"""Export one generated TransformNet to ONNX and run it with ONNX Runtime (optional ``onnx`` extra).

The graph takes ``image`` (N, 3, H, W) float32 RGB in [0, 1] with H and W multiples of 4 (use
``pad_to_multiple``/``crop_back`` around it) and returns ``stylized`` (N, 3, H, W) float32, **unclamped**,
exactly like :func:`~metastyle_batch.model.transform.transform`. Batch, height and width are dynamic axes.
``onnx``/``onnxruntime`` are imported only inside the functions that need them.
"""

from __future__ import annotations

import inspect
import io
import os
import warnings
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
from torch import nn

from .model.transform import Params, transform

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

INPUT_NAME = "image"
OUTPUT_NAME = "stylized"


class _Generated(nn.Module):
    """``transform`` with ONE generated network's parameters held as buffers (baked in as graph constants)."""

    def __init__(self, params: Params, base: int):
        super().__init__()
        self.base = base
        self.names = sorted(params)
        for name, value in params.items():
            if (name.endswith(".weight") and value.dim() == 5) or (name.endswith(".bias") and value.dim() == 2):
                if value.shape[0] != 1:
                    raise ValueError(f"export_onnx exports one network, but {name} holds {value.shape[0]} (G != 1)")
                value = value[0]
            self.register_buffer(name.replace(".", "__"), value.detach().to("cpu", torch.float32).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {name: getattr(self, name.replace(".", "__")) for name in self.names}
        return transform(x, params, self.base)


def export_onnx(params: Params, base: int, path: str | os.PathLike | BinaryIO, opset: int = 17) -> None:
    """Write the generated network ``params`` (G == 1) as an ONNX graph to a file path or a binary stream.

    Uses the legacy TorchScript exporter (``dynamo=False``): the dynamo exporter needs ``onnxscript``, which
    the ``onnx`` extra does not install, and tracing is enough for this architecture (no data-dependent control flow).
    """
    module = _Generated(params, base).eval()
    example = torch.rand(1, 3, 64, 64)
    target = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter warns about instance_norm's train flag, un-foldable Slice steps and instance_norm's
        # traced "spatial size 1" check: all harmless here
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is deliberate, see above
        # torch < 2.5 has no ``dynamo`` argument and always uses the legacy exporter
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(
            module, (example,), target,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}},
            opset_version=opset, do_constant_folding=True, **legacy,
        )


def export_onnx_bytes(params: Params, base: int, opset: int = 17) -> bytes:
    buf = io.BytesIO()
    export_onnx(params, base, buf, opset)
    return buf.getvalue()


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# Calls on more pixels than this hand the memory arena back afterwards: keeping it saves re-faulting a few
# hundred MB per image (1024² on 2 cores: 440 → 270 ms), but after a 2048² image it would hold ~1 GB.
KEEP_ARENA_PIXELS = 2_500_000
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


class OrtNetwork:
    """An ONNX Runtime CPU session for one exported generated network; call it like ``transform``."""

    def __init__(self, model: bytes | str | os.PathLike, threads: int | None = None, spin: bool = False,
                 keep_pixels: int = KEEP_ARENA_PIXELS):
        """``spin=False`` stops idle ORT worker threads busy-waiting, which would steal cores from torch (and
        from anything else on a shared CPU) between calls. The memory arena is kept between calls of up to
        ``keep_pixels`` pixels (batch included) and handed back after bigger ones.
        """
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if _shared_cpu_arena(ort):
            opts.add_session_config_entry("session.use_env_allocators", "1")
        opts.log_severity_level = 3  # warnings about unused initializers etc. are noise here
        source = model if isinstance(model, bytes) else os.fspath(model)
        self.session: onnxruntime.InferenceSession = ort.InferenceSession(
            source, sess_options=opts, providers=["CPUExecutionProvider"])
        self.keep_pixels = keep_pixels
        self._keep = ort.RunOptions()
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @classmethod
    def from_params(cls, params: Params, base: int, threads: int | None = None, spin: bool = False,
                    opset: int = 17) -> "OrtNetwork":
        return cls(export_onnx_bytes(params, base, opset), threads, spin)

    def __call__(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1], sides a multiple of 4 → unclamped stylized (N, 3, H, W) float32 CPU tensor."""
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float32).contiguous().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"expected (N, 3, H, W) with H and W multiples of 4, got {x.shape}")
        big = x.shape[0] * x.shape[2] * x.shape[3] > self.keep_pixels
        (y,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x}, self._shrink if big else self._keep)
        return torch.from_numpy(y)


__all__ = ["export_onnx", "export_onnx_bytes", "ort_available", "OrtNetwork", "INPUT_NAME", "OUTPUT_NAME"]
