"""Memory for pictures of every size: freed memory kept between images, huge arrays kept on disk.

**Freed memory (glibc only; a no-op elsewhere).**

By default glibc hands large freed blocks straight back to the kernel, so every image's activations (up to tens
of MB each) are page-faulted and zeroed afresh: that costs PyTorch on the CPU about a quarter of its time (2 cores,
batch of two 640×360 frames: 140 → 101 ms; one 512² image: 70 → 57 ms). ONNX Runtime keeps its own arena for
the same reason (1024²: 440 → 270 ms). After a call on more than ``KEEP_PIXELS`` pixels both give the memory
back (:func:`release`), so one 4K frame does not leave a GB resident.

**Huge arrays.** A 100 MP picture is 1.2 GB as float32 RGB, and the network's first layer 1.6 GB in float16.
Arrays over ``SPILL_BYTES`` (:func:`empty`) live in an unlinked temp file mapped into memory; :func:`release`
drops their pages from the process after each band of work (the data stays in the file and the page cache), so
the process keeps only what it is working on. Bands are ``BAND_BYTES``: :func:`bands` gives their rows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import os
import sys
import tempfile
import weakref
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # numpy is imported where used: the CLI starts without it
    import numpy as np

KEEP_PIXELS = 2_500_000
WHOLE_MAX_PIXELS = 16 << 20  # on the CPU, bigger images run tiled, layer by layer (model.transform.TiledOps)
SPILL_BYTES = 256 << 20  # bigger arrays live in a temp file (:func:`empty`)
BAND_BYTES = 32 << 20  # a band of rows of a spilled array worked on at once
_spilled: weakref.WeakSet = weakref.WeakSet()  # the mappings behind spilled arrays

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
    """Return the free heap memory to the system, and the pages of spilled arrays."""
    drop_spilled()
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def drop_spilled() -> None:
    """Unmap the resident pages of every spilled array (their data stays in its file; touching it maps it again)."""
    for mapping in list(_spilled):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (ValueError, OSError):  # closed meanwhile
            pass


def empty(shape: tuple[int, ...], dtype) -> "np.ndarray":
    """``np.empty``, except that an array over ``SPILL_BYTES`` lives in an unlinked temp file in the cache folder.
    Its space is reserved up front: a full disk shows here, where the array is then a plain one, never as a crash
    when a page is written later."""
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes <= SPILL_BYTES or not (hasattr(mmap, "MADV_DONTNEED") and hasattr(os, "posix_fallocate")):
        return np.empty(shape, dtype)
    from .paths import cache_dir

    try:
        folder = cache_dir() / "spill"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as f:  # unlinked: nothing stays behind, even after kill -9
            os.posix_fallocate(f.fileno(), 0, nbytes)
            mapping = mmap.mmap(f.fileno(), nbytes)
    except (OSError, ValueError):
        return np.empty(shape, dtype)
    _spilled.add(mapping)
    return np.frombuffer(mapping, dtype).reshape(shape)


def bands(rows: int, row_bytes: int) -> Iterator[slice]:
    """Slices of ``rows`` rows of ``row_bytes`` each, ``BAND_BYTES`` at a time; the spilled pages of each band are
    dropped when the next one starts."""
    step = max(1, BAND_BYTES // max(1, row_bytes))
    for r in range(0, rows, step):
        yield slice(r, min(r + step, rows))
        drop_spilled()
