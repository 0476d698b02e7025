"""The generated TransformNet: per-sample networks, exact tiling, any input size."""

import pytest
import numpy as np
import torch
import torch.nn.functional as F

from conftest import random_meta
from metastyle_batch.model.meta import MetaNet, StyleCode, mix
from metastyle_batch.model.transform import (TiledOps, _window, crop_back, generated_specs, pad_to_multiple, polyphase,
                                             transform, transform_polyphase)
from metastyle_batch.model.vgg import STYLE_DIM


def _meta(seed=0):
    torch.manual_seed(seed)
    return random_meta(seed)


def test_base8_is_the_papers_small_network():
    specs = generated_specs(8)
    assert len(specs) == 14  # 2 down, 10 residual, 2 up
    n = sum(s.n_params for s in specs)
    assert 100_000 < n < 115_000  # ≈ 0.42 MB in float32, the paper's "449 KB" network
    assert _meta().hidden_dim == 128 * 14


@torch.no_grad()
def test_per_sample_networks_match_one_at_a_time():
    meta = _meta()
    hidden = torch.relu(torch.randn(3, meta.hidden_dim))
    x = torch.rand(3, 3, 32, 40)
    batched = transform(x, meta.network(hidden), 8)
    for i in range(3):
        single = transform(x[i:i + 1], meta.network(hidden[i]), 8)
        torch.testing.assert_close(batched[i:i + 1], single, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])


@torch.no_grad()
def test_tiled_equals_untiled():
    meta = _meta()
    params = meta.network(torch.relu(torch.randn(meta.hidden_dim)))
    x, size = pad_to_multiple(torch.rand(1, 3, 150, 230))
    whole = transform(x, params, 8)
    tiled = transform(x, params, 8, ops=TiledOps(torch.device("cpu"), torch.float32, tile=24))
    assert (whole - tiled).abs().max() < 1e-4
    x[..., :, :96] = 0.3  # flat tiles (sky, a studio backdrop): each tile is stored scaled by its own spread
    whole = transform(x, params, 8)
    tiled = transform(x, params, 8, ops=TiledOps(torch.device("cpu"), torch.float32, tile=24))
    assert (whole - tiled).abs().max() < 1e-4


@torch.no_grad()
def test_polyphase_form_equals_the_plain_network():
    """Inference runs the rewritten network: it must give the trained network's outputs at any size, with one
    network for the batch and with one per sample (G == B)."""
    meta = _meta(1)
    for groups, batch, h, w in [(1, 1, 16, 16), (1, 2, 36, 52), (3, 3, 40, 24), (1, 1, 120, 200)]:
        params = meta.network(torch.relu(torch.randn(groups, meta.hidden_dim)) * 3)
        x = torch.rand(batch, 3, h, w)
        ref = transform(x, params, 8)
        y = transform_polyphase(x, polyphase(params), 8)
        assert y.shape == ref.shape
        assert ref.std() > 0.05  # a network that does something, so equality means something
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)


def test_pad_and_crop_round_trip_any_size():
    for h, w in [(1, 1), (5, 3), (37, 53), (64, 64)]:
        x = torch.rand(1, 3, h, w)
        padded, size = pad_to_multiple(x)
        assert padded.shape[-2] % 4 == 0 and padded.shape[-1] % 4 == 0
        torch.testing.assert_close(crop_back(padded, size), x)


def test_mixing_codes_mixes_networks_linearly():
    meta = _meta()
    a, b = StyleCode(torch.rand(meta.hidden_dim)), StyleCode(torch.rand(meta.hidden_dim))
    m = mix([a, b], [3, 1])
    np.testing.assert_allclose(m.hidden, 0.75 * a.hidden + 0.25 * b.hidden, rtol=1e-6)
    pa, pb, pm = (meta.network(torch.from_numpy(c.hidden)) for c in (a, b, m))
    torch.testing.assert_close(pm["down1.weight"], 0.75 * pa["down1.weight"] + 0.25 * pb["down1.weight"])


def test_encode_features_shape():
    meta = _meta()
    assert meta.encode_features(torch.rand(2, STYLE_DIM)).shape == (2, meta.hidden_dim)


@torch.no_grad()
def test_generated_biases_shift_channels_after_instance_norm():
    """Before the norm a per-channel bias would cancel out; after it, the meta network can set a style's colours."""
    meta = _meta()
    params = meta.network(torch.relu(torch.randn(meta.hidden_dim)))
    x = torch.rand(1, 3, 32, 32)
    base = transform(x, params, 8)
    shifted = dict(params, **{"up2.bias": params["up2.bias"] + 1.0})
    assert (transform(x, shifted, 8) - base).abs().mean() > 0.05
    tiled = transform(x, shifted, 8, ops=TiledOps(torch.device("cpu"), torch.float32, tile=8))
    torch.testing.assert_close(tiled, transform(x, shifted, 8), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_encode_batch_matches_one_style_at_a_time(vgg16_path):
    """Batched style encoding (benchmarks/gpu.py's styles/s) gives each style the code it gets alone."""
    from conftest import make_rgb
    from metastyle_batch.engine import Stylizer

    st = Stylizer(device="cpu", disk_cache=False)
    rgbs = [make_rgb(st.style_size, st.style_size, seed=s).astype("float32") / 255 for s in range(3)]
    batch = st.encode_batch(torch.stack([torch.from_numpy(r).permute(2, 0, 1) for r in rgbs]))
    assert batch.shape == (3, st.meta.hidden_dim)
    for rgb, hidden in zip(rgbs, batch):
        torch.testing.assert_close(torch.from_numpy(st.encode_array(rgb).hidden), hidden, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batch[0], batch[1])
    assert len(st.network(batch)["down1.weight"]) == 3  # and B networks in one pass


@torch.no_grad()
def test_generated_gains_scale_channels_and_start_at_one():
    """A gain multiplies a normalised channel (the conv weights cannot: the norm divides their scale away); a
    fresh meta network's gains are exactly 1, so a model without gain heads (format 2) loads as itself."""
    hidden = torch.relu(torch.randn(MetaNet(8).hidden_dim))
    fresh = MetaNet(8).eval().network(hidden)
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in fresh.items() if k.endswith(".gain"))
    params = _meta().network(hidden)
    assert params["up2.gain"].std() > 0.01
    x = torch.rand(1, 3, 32, 32)
    ungained = {k: v for k, v in params.items() if not k.endswith(".gain")}
    assert (transform(x, params, 8) - transform(x, ungained, 8)).abs().mean() > 0.01
    doubled = dict(params, **{"res5b.gain": params["res5b.gain"] * 2})
    assert (transform(x, doubled, 8) - transform(x, params, 8)).abs().mean() > 0.01


@torch.no_grad()
def test_tiled_half_precision_store_is_within_one_level():
    """Big images keep their activations in float16 between layers: a level off here and there, no more."""
    meta = _meta()
    params = meta.network(torch.relu(torch.randn(meta.hidden_dim)))
    x, _ = pad_to_multiple(torch.rand(1, 3, 98, 141))
    x[..., :, :80] = 0.3  # flat tiles too: stored scaled by their own (zero) spread, they must stay finite
    whole = transform(x, params, 8).clamp(0, 1)
    ops = TiledOps(torch.device("cpu"), torch.float32, tile=40, store_dtype=torch.float16)
    ops.HALF_ELEMENTS = 20_000  # every map bigger than this in float16 (24 MP photos: the four widest)
    half = transform(x, params, 8, ops=ops)
    diff = (whole - half.float().clamp(0, 1)).abs()
    assert diff.max() < 1 / 255 and diff.mean() < 0.08 / 255  # measured: 0.85 and 0.05 levels


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_tile_window_pads_like_the_whole_image(channels_last, mode):
    """A tile's window beyond the map's border holds what padding the whole map would put there."""
    x = torch.randn(1, 5, 30, 40).half()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    whole = F.pad(x.float(), [4] * 4, mode=mode)
    for rows, cols in [((-4, 10), (-4, 12)), ((20, 34), (30, 44)), ((-3, 34), (-2, 44)), ((5, 12), (-4, 44)), ((3, 9), (2, 7))]:
        window = _window(x, rows, cols, mode)
        assert window.dtype == torch.float32
        assert torch.equal(window, whole[:, :, rows[0] + 4:rows[1] + 4, cols[0] + 4:cols[1] + 4])
