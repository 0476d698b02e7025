"""Shared test set-up: an isolated user cache, the shared VGG-16 weights, a small model and small images.

For the whole session:

* ``METASTYLE_CACHE`` points at a fresh temporary folder (style codes never touch ~/.cache);
* ``METASTYLE_VGG16`` points at the shared ImageNet VGG-16 weights (``../shared/weights``) when they exist;
  tests that need them request the ``vgg16_path`` fixture, which skips with a clear reason otherwise;
* ``METASTYLE_MODEL`` points at ``model_path``: a randomly initialised base-8 meta network (deterministic
  seed, style size 64 so style encoding is quick). The trained model may replace it later.

Images are small generated gradients with shapes, never flat colours (flat input hides bugs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_VGG = Path(__file__).resolve().parents[2] / "shared/weights/vgg16_imagenet_relu4_3.safetensors"


def make_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour gradients plus a disc, a bar and a few stripes; different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = y / max(height - 1, 1), x / max(width - 1, 1)
    phase = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(2, 6, 3)
    img = np.stack([
        0.5 + 0.35 * np.sin(freq[0] * xn * np.pi + phase[0]) * (1 - 0.5 * yn),
        0.25 + 0.6 * yn,
        0.5 + 0.35 * np.cos(freq[1] * (xn + yn) * np.pi + phase[1]),
    ], axis=-1)
    cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, 0.25 * min(height, width)
    disc = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
    img[disc] = rng.uniform(0, 1, 3)
    bar = (np.abs(x - rng.uniform(0.2, 0.8) * width) < max(1, width // 12))
    img[bar] = 1.0 - img[bar]
    stripes = (np.sin(freq[2] * 8 * yn + phase[2]) > 0.8)
    img[stripes, 2] *= 0.3
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def save_rgb(path: Path, height: int, width: int, seed: int = 0, **options) -> Path:
    """Write ``make_rgb`` to ``path`` (format from the extension) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_rgb(height, width, seed)).save(path, **options)
    return path


@pytest.fixture(scope="session")
def vgg16_path() -> Path:
    """The shared VGG-16 weights; tests that encode styles need them."""
    if not SHARED_VGG.is_file():
        pytest.skip(f"needs the shared ImageNet VGG-16 weights at {SHARED_VGG} (not present on this machine)")
    return SHARED_VGG


def random_meta(seed: int = 0):
    """A randomly initialised base-8 MetaNet whose generated gains are not all 1 (a fresh one starts at 1)."""
    from metastyle_batch.model.meta import MetaNet

    with torch.random.fork_rng(devices=[]):  # do not disturb the global RNG other tests may rely on
        torch.manual_seed(seed)
        meta = MetaNet(8)
        for head in meta.gains:
            torch.nn.init.normal_(head.weight, std=0.5)
    return meta.eval()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised base-8 model (seed 0, style size 64); the trained model will replace it later."""
    from metastyle_batch.model.io import save_model

    path = tmp_path_factory.mktemp("model") / "metastyle-test-base8.safetensors"
    save_model(random_meta(0), path, {"style_size": 64, "steps": 0})
    return path


@pytest.fixture(scope="session", autouse=True)
def metastyle_env(tmp_path_factory: pytest.TempPathFactory, model_path: Path):
    """Session environment: isolated cache, shared VGG-16 weights, the test model."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METASTYLE_CACHE", str(tmp_path_factory.mktemp("metastyle-cache")))
        if SHARED_VGG.is_file():
            mp.setenv("METASTYLE_VGG16", str(SHARED_VGG))
        mp.setenv("METASTYLE_MODEL", str(model_path))
        yield


@pytest.fixture
def make_image() -> Callable[..., np.ndarray]:
    """``make_image(height, width, seed=0)`` → (H, W, 3) uint8 test picture."""
    return make_rgb


@pytest.fixture
def content_image(tmp_path: Path) -> Path:
    """A 64x48 (W x H) RGB PNG photo stand-in in this test's tmp folder."""
    return save_rgb(tmp_path / "photo.png", 48, 64, seed=1)


@pytest.fixture(scope="session")
def style_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x64 style PNG, shared by the session (so its style code is cached after the first encode)."""
    path = tmp_path_factory.mktemp("styles") / "style_a.png"
    y, x = np.mgrid[0:64, 0:64] / 64.0
    img = np.dstack([0.2 + 0.2 * np.sin(x * 25), 0.3 + 0.3 * np.cos((x + y) * 18) ** 2, 0.6 + 0.4 * np.sin(y * 30)])
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)  # blue-ish strokes
    return path


@pytest.fixture(scope="session")
def style_image2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, different 64x64 style PNG (warm colours, blocky shapes)."""
    return save_rgb(tmp_path_factory.mktemp("styles2") / "style_b.png", 64, 64, seed=7)
