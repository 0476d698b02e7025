"""The look metrics rank a clearly better output above a clearly worse one, and the training losses built on them."""

import torch

from conftest import make_rgb, random_meta
from metastyle_batch import metrics
from metastyle_batch.model.vgg import STYLE_LAYERS
from metastyle_batch.train.losses import flat_loss, normalized_style_loss, palette_loss, tone_loss


def _img(seed: int, h: int = 64, w: int = 64) -> torch.Tensor:
    return torch.from_numpy(make_rgb(h, w, seed=seed).astype("float32") / 255).permute(2, 0, 1)[None]


def test_lab_of_known_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 3, 1)
    lab = metrics.rgb_to_lab(rgb)[0, :, :, 0].T
    torch.testing.assert_close(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(lab[1], torch.tensor([0.0, 0.0, 0.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(lab[2], torch.tensor([53.24, 80.09, 67.20]), atol=0.1, rtol=0)


def test_palette_prefers_the_styles_colours():
    style = _img(1, 96, 96)  # the metric's own size: no resampling blends the shuffled pixels
    same_colours = style[..., torch.randperm(96)][..., torch.randperm(96), :]  # pixels shuffled: same palette
    grey = torch.full_like(style, 0.5)
    tinted = style * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)
    d = [metrics.palette_distance(x, style).item() for x in (same_colours, tinted, grey)]
    assert d[0] < 0.5 < d[1] < d[2]


def test_tone_prefers_the_photos_light_and_dark():
    photo = _img(2)
    recoloured = photo * 0.6 + torch.tensor([0.3, 0.1, 0.0]).view(1, 3, 1, 1)  # tinted, lower contrast
    flipped = photo.flip(-2)
    flat = torch.full_like(photo, 0.5) + 0.01 * torch.rand_like(photo)
    t = [metrics.tone_correlation(x, photo).item() for x in (photo, recoloured, flipped, flat)]
    assert t[0] > 0.999 and t[1] > 0.999 and t[2] < 0.9 and abs(t[3]) < 0.5


def test_retrieval_finds_the_own_style(vgg16_path):
    from metastyle_batch.model.vgg import load_vgg

    vgg = load_vgg(vgg16_path)
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::8, :] = 1
    dots = torch.zeros(1, 3, 64, 64)
    dots[..., ::6, ::6] = 1
    noise = _img(3)
    styles = [metrics.gram_signature(vgg, s, 64) for s in (stripes, dots, noise)]
    shifted = stripes.roll(3, dims=-2) * 0.9  # the same texture, moved and dimmed
    outputs = [metrics.gram_signature(vgg, x, 64) for x in (shifted, dots.roll(2, dims=-1), noise.flip(-1))]
    assert metrics.retrieval_hits(outputs, [0, 1, 2], styles) == [True, True, True]
    assert metrics.retrieval_hits(outputs, [1, 2, 0], styles) == [False, False, False]


def test_normalized_style_loss_weights_every_layer_equally():
    """One scale unit off in every relu1_2 mean costs as much as one unit off in every relu4_3 std."""
    chans = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512}
    feats = {k: torch.rand(1, c, 6, 6) for k, c in chans.items()}
    from metastyle_batch.model.vgg import style_vector

    target = style_vector(feats)
    scale = torch.rand(1920) + 0.5
    assert normalized_style_loss(feats, target, scale).item() < 1e-8
    first = target.clone()
    first[:, :64] -= scale[:64]  # relu1_2 means
    last = target.clone()
    last[:, -512:] -= scale[-512:]  # relu4_3 stds
    a, b = normalized_style_loss(feats, first, scale).item(), normalized_style_loss(feats, last, scale).item()
    assert abs(a - 1 / 8) < 1e-4 and abs(b - 1 / 8) < 1e-4
    assert list(STYLE_LAYERS) == list(chans)


def test_palette_and_tone_losses_have_gradients_toward_better():
    style = _img(4)
    out = torch.full_like(style, 0.5).requires_grad_(True)
    lab = metrics.lab_points(style, 32)
    gen = torch.Generator().manual_seed(0)
    before = palette_loss(out, lab, gen)
    before.backward()
    with torch.no_grad():
        moved = out - 0.05 * out.grad / out.grad.abs().max()
    assert palette_loss(moved, lab, torch.Generator().manual_seed(0)) < before
    photo = _img(5)
    assert tone_loss(photo, photo).item() < 1e-5 < tone_loss(photo.flip(-1), photo).item()


def test_flat_loss_counts_only_contrast_invented_where_the_photo_is_flat():
    """Lumps in a flat sky cost; the same lumps over the photo's own texture, or a calm sky, cost nothing; and the
    gradient calms the lumps."""
    g = torch.Generator().manual_seed(0)
    sky = torch.full((1, 3, 64, 64), 0.6)
    textured = torch.rand(1, 3, 64, 64, generator=g)
    lumps = (sky + 0.2 * torch.randn(1, 1, 64, 64, generator=g)).clamp(0, 1).requires_grad_(True)
    assert flat_loss(sky + 0.1, sky).item() < 1e-3  # a shifted but calm sky
    assert flat_loss(lumps, textured).item() == 0.0  # no flat pixels in the photo: nothing to judge
    before = flat_loss(lumps, sky)
    assert before.item() > 0.1
    before.sum().backward()
    with torch.no_grad():
        assert flat_loss(lumps - 0.05 * lumps.grad / lumps.grad.abs().max(), sky).item() < before.item()


def test_model_without_gain_heads_loads_as_itself(tmp_path):
    """Format 2 files (before gains) still load; their gains are exactly 1."""
    import json

    from safetensors.torch import save_file

    from metastyle_batch.model.io import load_model

    meta = random_meta(0)
    for head in meta.gains:
        torch.nn.init.zeros_(head.weight)
    state = {k: v.contiguous() for k, v in meta.state_dict().items() if not k.startswith("gains.")}
    path = tmp_path / "old.safetensors"
    save_file(state, str(path), metadata={"metastyle": json.dumps({"format": "metastyle-batch/metanet-2", "base": 8})})
    loaded, info = load_model(path)
    hidden = torch.relu(torch.randn(meta.hidden_dim))
    with torch.no_grad():
        for k, v in meta.network(hidden).items():
            torch.testing.assert_close(loaded.network(hidden)[k], v)


def test_palette_transfer_moves_colours_to_the_style_and_keeps_the_tone() -> None:
    """The engine's palette transfer (metastyle_batch.color): closer palette, the same light/dark layout, and
    colour moments that blend linearly like style codes."""
    import numpy as np

    from metastyle_batch.color import moments, transfer

    g = torch.Generator().manual_seed(3)
    y = torch.rand(1, 3, 64, 64, generator=g) * 0.5 + 0.25  # a greyish output
    style = torch.stack([torch.rand(64, 64, generator=g) * 0.3 + 0.7, torch.rand(64, 64, generator=g) * 0.2,
                         torch.rand(64, 64, generator=g) * 0.3])[None]  # a red style
    target = moments(style[0].reshape(3, -1).numpy())
    half = torch.from_numpy(transfer(y[0].numpy().copy(), target, 0.5))[None]
    full = torch.from_numpy(transfer(y[0].numpy().copy(), target, 1.0))[None]
    d0, d5, d1 = (float(metrics.palette_distance(z, style)) for z in (y, half, full))
    assert d1 < d5 < d0
    assert float(metrics.tone_correlation(half, y)) > 0.9
    assert np.allclose(moments(full[0].reshape(3, -1).numpy())[:3], target[:3], atol=0.02)
    a, b = moments(y[0].reshape(3, -1).numpy()), target
    both = torch.cat([y, style], dim=3)[0].reshape(3, -1).numpy()
    assert np.allclose(moments(both), (a + b) / 2, atol=1e-5)  # raw moments mix like the style codes


def test_spike_term_finds_a_lone_spike_and_runs_the_same_network() -> None:
    from metastyle_batch.model.transform import ConvSpec, transform
    from metastyle_batch.train.losses import SpikeMeter

    delta = torch.zeros(1, 1, 3, 3)
    delta[0, 0, 1, 1] = 1.0  # the conv passes its input through: the meter sees the map itself, normalised
    spec, shift = ConvSpec("t", 1, 1, 3), torch.zeros(1)
    noise = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    lone = noise * 0.1
    lone[..., 20, 40] = 50.0  # ~60 stds out after instance norm
    totals = []
    for x in (noise, lone):
        meter = SpikeMeter()
        meter.conv_norm(x, delta, spec, shift, relu=False, gain=None)
        totals.append(float(meter.total))
    assert totals[0] < 1e-3 and totals[1] > 1000

    meta = random_meta(0)
    params = meta.network(torch.relu(torch.randn(meta.hidden_dim)))
    photo = _img(3)
    with torch.no_grad():
        torch.testing.assert_close(transform(photo, params, 8, ops=SpikeMeter()), transform(photo, params, 8))
