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


# ---- huge arrays on disk: every banded path gives exactly what the whole-array one gives

@pytest.fixture
def spill_everything(monkeypatch, tmp_path):
    """Arrays over 64 kB spill and bands are 16 kB, so small pictures take the paths of 100 MP ones."""
    monkeypatch.setenv("METASTYLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(memory, "SPILL_BYTES", 64 << 10)
    monkeypatch.setattr(memory, "BAND_BYTES", 16 << 10)


def test_spilled_arrays_live_in_unlinked_files_and_keep_their_data(spill_everything, tmp_path):
    import numpy as np

    a = memory.empty((3, 200, 300), np.float32)
    assert not a.flags.owndata and list((tmp_path / "cache" / "spill").iterdir()) == []
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    memory.release()  # the pages leave the process; the data stays in the file
    assert np.array_equal(a, np.arange(a.size, dtype=np.float32).reshape(a.shape))
    assert memory.empty((10,), np.float32).flags.owndata  # small arrays are plain ones


@pytest.mark.parametrize("shape", [(1, 3, 201, 303), (1, 3, 13, 9), (2, 3, 64, 61)])
def test_banded_pixel_helpers_match_numpy(spill_everything, monkeypatch, shape):
    import numpy as np

    from metastyle_batch import pixels

    x = np.random.default_rng(0).uniform(-0.2, 1.2, shape).astype(np.float32)
    padded, size = pixels.pad_to_multiple(x)
    monkeypatch.setattr(memory, "SPILL_BYTES", 1 << 40)  # the plain numpy path
    expected, _ = pixels.pad_to_multiple(x)
    assert np.array_equal(padded, expected)
    assert np.array_equal(pixels.contiguous(pixels.crop_back(padded, size)), x)
    assert np.array_equal(pixels.clip01(x.copy()), np.clip(x, 0, 1))
    content = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
    plain = pixels.preserve_colors(x, content)
    monkeypatch.setattr(memory, "SPILL_BYTES", 64 << 10)
    assert np.array_equal(pixels.preserve_colors(x, content), plain)


def test_huge_pictures_decode_and_encode_band_by_band(spill_everything, monkeypatch, tmp_path):
    import numpy as np
    from PIL import Image

    from metastyle_batch.images import read_image, write_image

    rgb = np.random.default_rng(2).integers(0, 256, (150, 220, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    Image.fromarray(rgb).convert("1").save(tmp_path / "bits.png")
    banded = read_image(tmp_path / "in.png")
    bits = read_image(tmp_path / "bits.png").frames[0]
    assert not banded.frames[0].flags.owndata  # spilled
    monkeypatch.setattr(memory, "SPILL_BYTES", 1 << 40)
    assert np.array_equal(banded.frames[0], read_image(tmp_path / "in.png").frames[0])
    assert np.array_equal(bits, read_image(tmp_path / "bits.png").frames[0])
    monkeypatch.setattr(memory, "SPILL_BYTES", 64 << 10)
    banded.frames[0][0, 0] = [np.nan, 2.0, -1.0]  # NaN and out-of-range values are settled band by band
    write_image(banded, tmp_path / "out.png")
    written = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(written[1:], rgb[1:]) and np.array_equal(written[0, 1:], rgb[0, 1:])
    assert written[0, 0].tolist() == [0, 255, 0]


def test_the_tiled_network_gives_the_same_pixels_spilled(spill_everything, monkeypatch, model_path, style_image,
                                                         vgg16_path):
    import numpy as np

    from metastyle_batch.engine_ort import OrtStylizer

    stylizer = OrtStylizer(model_path, max_pixels=20_000, disk_cache=False, tile=64)
    code = stylizer.encode(style_image)
    x = np.random.default_rng(3).uniform(0, 1, (1, 3, 150, 203)).astype(np.float32)
    spilled = stylizer.run(x, stylizer.network(code)).copy()
    monkeypatch.setattr(memory, "SPILL_BYTES", 1 << 40)
    assert np.array_equal(spilled, stylizer.run(x, stylizer.network(code)))
