"""Freed memory stays in the process between images, and goes back to the system after a big one (glibc)."""

import os
import platform

import pytest
import torch

from metastyle_batch import memory

glibc = platform.libc_ver()[0] == "glibc"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not glibc, reason="the thresholds are glibc's")
def test_freed_blocks_stay_resident_until_release():
    assert memory.keep_freed_memory()  # False if glibc refused a value (e.g. an mmap threshold above its max)
    memory.release()  # earlier tests in this process may have left freed memory resident, which would be reused
    before = _rss_mb()
    blocks = [torch.ones(4 << 20) for _ in range(40)]  # 40 × 16 MB, each under the 32 MB mmap threshold
    del blocks
    kept = _rss_mb()
    assert kept - before > 400  # freed, but kept for the next image instead of being faulted in again
    memory.release()
    assert kept - _rss_mb() > 400


def test_no_op_where_it_does_not_apply():
    memory.release()  # never raises, glibc or not
    assert memory.keep_freed_memory() is glibc
