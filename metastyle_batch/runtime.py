"""Which engine does the work: ONNX Runtime on the CPU (no torch needed), PyTorch for GPUs and training.

``pip install metastyle-batch`` stylizes everything on the CPU without PyTorch; ``pip install
"metastyle-batch[torch]"`` adds training, evaluation, fine-tuning, ``--refine`` and the GPU. Nothing here imports
torch unless a GPU may be there to use.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys

from .errors import MetastyleError

EXTRA = 'pip install "metastyle-batch[torch]"'


class TorchMissing(MetastyleError):
    """A feature that needs PyTorch, in an install without it (a usage error: exit 2)."""

    exit_code = 2

    def __init__(self, what: str):
        super().__init__(f"{what} needs PyTorch, which this install leaves out; add it with: {EXTRA}")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def require_torch(what: str) -> None:
    if not torch_available():
        raise TorchMissing(what)


def _gpu_likely() -> bool:
    """Whether ``auto`` may find a GPU, judged without importing torch: an NVIDIA/AMD driver or Apple silicon."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd")) or (
        sys.platform == "darwin" and platform.machine() == "arm64")


def uses_torch(device: str = "auto") -> bool:
    """Whether ``device`` means the PyTorch engine: a GPU asked for or found, or ``METASTYLE_ORT=0`` (the PyTorch
    CPU path, kept for comparisons). Raises :class:`TorchMissing` when that needs a torch that is not installed."""
    if device not in ("auto", "cpu"):
        require_torch(f"--device {device}")
        return True
    if os.environ.get("METASTYLE_ORT", "1") == "0":
        require_torch("METASTYLE_ORT=0 (the PyTorch CPU path)")
        return True
    if device == "cpu" or not (torch_available() and _gpu_likely()):
        return False
    from .tensors import pick_device

    return pick_device("auto").type != "cpu"


def name(device: str = "auto") -> str:
    """The runtime ``device`` gets, in words (for ``info``)."""
    return "PyTorch" if uses_torch(device) else "ONNX Runtime (CPU)"


def open_stylizer(model=None, device: str = "auto", *, torch: bool = False, **kwargs):
    """The engine for ``device``: :class:`~metastyle_batch.engine.Stylizer` (PyTorch) or
    :class:`~metastyle_batch.engine_ort.OrtStylizer`; both take the same arguments and offer the same calls.
    ``torch``: the PyTorch engine whatever the device (it trains: ``--refine``)."""
    if torch:
        require_torch("training a network (--refine)")
    if torch or uses_torch(device):
        from .engine import Stylizer

        return Stylizer(model=model, device=device, **kwargs)
    from .engine_ort import OrtStylizer

    return OrtStylizer(model=model, **kwargs)
