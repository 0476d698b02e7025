"""Keep freed memory inside the process between images (glibc only; a no-op elsewhere).

By default glibc hands large freed blocks straight back to the kernel, so every image's activations (up to tens
of MB each) are page-faulted and zeroed afresh: that costs PyTorch on the CPU about a quarter of its time (2 cores,
batch of two 640×360 frames: 140 → 101 ms; one 512² image: 70 → 57 ms). ONNX Runtime keeps its own arena for
the same reason (1024²: 440 → 270 ms). After a call on more than ``KEEP_PIXELS`` pixels both give the memory
back (:func:`release`), so one 4K frame does not leave a GB resident.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

KEEP_PIXELS = 2_500_000
WHOLE_MAX_PIXELS = 16 << 20  # on the CPU, bigger images run tiled, layer by layer (model.transform.TiledOps)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_MMAP_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_TRIM = 1 << 30
_libc: ctypes.CDLL | None | bool = None  # None: not tried yet; False: not glibc


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.gnu_get_libc_version  # musl and others lack it: leave their allocator alone
                _libc = libc
            except (OSError, AttributeError):
                pass
    return _libc or None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if that took effect."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM))


def release() -> None:
    """Return the free heap memory to the system."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)
