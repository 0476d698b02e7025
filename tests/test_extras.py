"""optimize, finetune, export, texture and interpolate (commands/extras.py, finetune.py, train/gatys.py).

Everything tiny: images of at most 64 px and at most 5 optimisation steps, one torch thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from conftest import save_rgb
from metastyle_batch.cli import _Group
from metastyle_batch.commands import extras


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # share the CPU
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer(cls=_Group)

    @app.callback()
    def _main() -> None:
        """test app"""

    extras.register(app)
    return app


@pytest.fixture
def cli(app):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def _error_line(result) -> str:
    text = result.stderr if hasattr(result, "stderr") else result.output
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), text
    return lines[0]


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# ------------------------------------------------------------------------------------------ optimize


def test_gatys_lbfgs_and_adam_lower_the_loss(vgg16_path):
    from metastyle_batch.model.vgg import load_vgg
    from metastyle_batch.train.gatys import image_losses, optimize

    vgg = load_vgg(vgg16_path)
    from conftest import make_rgb

    c = torch.from_numpy(make_rgb(32, 32, 1)).permute(2, 0, 1)[None].float() / 255
    s = torch.from_numpy(make_rgb(32, 32, 7)).permute(2, 0, 1)[None].float() / 255
    start = image_losses(vgg, c, c, s)
    seen = []
    for opt in ("lbfgs", "adam"):
        out = optimize(vgg, c, s, 3, optimizer=opt, on_step=lambda i, img, l: seen.append((i, l)))
        end = image_losses(vgg, out, c, s)
        assert out.shape == c.shape and 0 <= out.min() and out.max() <= 1
        assert 50 * end["style"] + end["content"] < 50 * start["style"] + start["content"], opt
    assert [i for i, _ in seen] == [1, 2, 3, 1, 2, 3] and {"content", "style", "total"} <= set(seen[0][1])
    with pytest.raises(ValueError):
        optimize(vgg, c, s, 1, optimizer="sgd")


def test_optimize_cli(cli, tmp_path, content_image, style_image, vgg16_path):
    out = tmp_path / "out.png"
    r = cli("optimize", content_image, "--style", style_image, "-o", out, "--steps", 2, "--size", 32,
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert _size(out) == (32, 24)  # 64x48 downscaled to a longer side of 32
    assert "content loss" in r.output and "style loss" in r.output
    # existing output, output == input, bad options, missing style: one-line usage errors, nothing written
    r = cli("optimize", content_image, "--style", style_image, "-o", out, "--steps", 1, "--size", 32)
    assert r.exit_code == 2 and "exists; pass --overwrite" in _error_line(r)
    r = cli("optimize", content_image, "--style", style_image, "-o", content_image, "--overwrite", "--steps", 1)
    assert r.exit_code == 2 and "is an input file" in _error_line(r)
    r = cli("optimize", content_image, "--style", tmp_path / "nope.png", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "style image not found" in _error_line(r)
    r = cli("optimize", content_image, "--style", style_image, "-o", tmp_path / "x.png", "--optimizer", "sgd")
    assert r.exit_code == 2 and "--optimizer" in _error_line(r)
    r = cli("optimize", content_image, "--style", style_image, "-o", tmp_path / "x.txt")
    assert r.exit_code == 2 and "must end in" in _error_line(r)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = cli("optimize", bad, "--style", style_image, "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "bad.png" in _error_line(r)
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------------ finetune


@pytest.fixture
def content_dir(tmp_path) -> Path:
    for i in range(2):
        save_rgb(tmp_path / "photos" / f"p{i}.png", 40, 48, seed=10 + i)
    return tmp_path / "photos"


def test_finetune_cli_and_load_net(cli, tmp_path, content_dir, style_image, vgg16_path):
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.finetune import NetError, load_net, read_net_info

    net = tmp_path / "wave.safetensors"
    r = cli("finetune", "--style", style_image, "--content", content_dir, "-o", net, "--steps", 4, "--batch", 2,
            "--crop", 48, "--lr", 0.001, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "Loss before" in r.output and "after" in r.output
    assert (tmp_path / "wave.safetensors.sha256").read_text().split()[0]
    info = read_net_info(net)
    assert info["format"] == "metastyle-batch/net-2" and info["base"] == 8 and info["steps"] == 4
    assert np.isfinite(info["loss_before"]["total"]) and info["loss_after"]["total"] < info["loss_before"]["total"]

    stylizer = Stylizer(device="cpu")
    params = load_net(net, base=stylizer.meta.base)
    generated = stylizer.network(stylizer.encode(style_image))
    assert set(params) == set(generated)
    assert all(params[k].shape == generated[k].shape for k in params)
    assert any(not torch.equal(params[k], generated[k]) for k in params)  # it did change
    x = torch.rand(1, 3, 32, 40)
    y = stylizer.run(x, params)
    assert y.shape == x.shape and torch.isfinite(y).all()

    # refuses an existing output; bad inputs are one-line usage errors
    r = cli("finetune", "--style", style_image, "--content", content_dir, "-o", net, "--steps", 0)
    assert r.exit_code == 2 and "exists; pass --overwrite" in _error_line(r)
    r = cli("finetune", "--style", style_image, "--content", tmp_path / "none", "-o", tmp_path / "n.safetensors")
    assert r.exit_code == 2 and "--content" in _error_line(r)
    r = cli("finetune", "--style", style_image, "--content", content_dir, "-o", tmp_path / "n.onnx")
    assert r.exit_code == 2 and ".safetensors" in _error_line(r)

    # load_net refuses a meta network model, a changed file and a wrong base
    with pytest.raises(NetError, match="meta network model"):
        load_net(stylizer.model_path)
    with pytest.raises(NetError, match="base-8 network"):
        load_net(net, base=16)
    (tmp_path / "wave.safetensors.sha256").write_text("0" * 64 + "  wave.safetensors\n")
    with pytest.raises(NetError, match="sha256 mismatch"):
        load_net(net)
    with pytest.raises(NetError, match="not found"):
        load_net(tmp_path / "missing.safetensors")


def test_finetune_zero_steps_round_trips_the_generated_network(tmp_path, content_dir, style_image, vgg16_path):
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.finetune import finetune, load_net, save_net

    stylizer = Stylizer(device="cpu")
    res = finetune(stylizer, style_image, content_dir, 0, batch=1, crop=32, val_batch=1)
    assert res.loss_before == res.loss_after
    path = tmp_path / "n.safetensors"
    save_net(res.params, path, stylizer.meta.base, {"style": "a"})
    with pytest.raises(FileExistsError):
        save_net(res.params, path, stylizer.meta.base)
    loaded = load_net(path)
    generated = stylizer.network(stylizer.encode(style_image))
    assert all(torch.equal(loaded[k], generated[k].float()) for k in generated)


# ------------------------------------------------------------------------------------------ export


def test_export_matches_pytorch_in_onnxruntime(cli, tmp_path, style_image, vgg16_path):
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.model.transform import transform
    from metastyle_batch.onnx_export import OrtNetwork

    onnx_path = tmp_path / "wave.onnx"
    r = cli("export", "--style", style_image, "-o", onnx_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "checked with ONNX Runtime" in r.output
    stylizer = Stylizer(device="cpu")
    params = stylizer.network(stylizer.encode(style_image))
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        ref = transform(x, params, stylizer.meta.base)
    got = torch.from_numpy(OrtNetwork(onnx_path, threads=1).run(x.numpy()))
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) < 1e-3

    r = cli("export", "--style", style_image, "-o", onnx_path)
    assert r.exit_code == 2 and "exists" in _error_line(r)
    r = cli("export", "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "--style" in _error_line(r)
    r = cli("export", "--net", stylizer.model_path, "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "not a metastyle-batch network" in _error_line(r)


def test_export_a_net_file(cli, tmp_path, style_image, vgg16_path):
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.finetune import save_net
    from metastyle_batch.model.transform import transform
    from metastyle_batch.onnx_export import OrtNetwork

    stylizer = Stylizer(device="cpu")
    params = {k: v * 1.01 for k, v in stylizer.network(stylizer.encode(style_image)).items()}
    net = save_net(params, tmp_path / "n.safetensors", stylizer.meta.base) and tmp_path / "n.safetensors"
    r = cli("export", "--net", net, "-o", tmp_path / "n.onnx")
    assert r.exit_code == 0, r.output
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        ref = transform(x, params, stylizer.meta.base)
    assert float((torch.from_numpy(OrtNetwork(tmp_path / "n.onnx", threads=1).run(x.numpy())) - ref).abs().max()) < 1e-3


# ------------------------------------------------------------------------------------------ texture


def test_texture_style_and_random(cli, tmp_path, style_image, vgg16_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    r = cli("texture", "--style", style_image, "-o", a, "--size", "48x32", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert _size(a) == (48, 32)
    assert cli("texture", "--random", "-o", b, "--size", 32, "--seed", 1).exit_code == 0
    assert cli("texture", "--random", "-o", c, "--size", 32, "--seed", 2).exit_code == 0
    pb, pc = np.asarray(Image.open(b)), np.asarray(Image.open(c))
    assert pb.shape == (32, 32, 3) and pb.std() > 0 and not np.array_equal(pb, pc)

    r = cli("texture", "--random", "--style", style_image, "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "either" in _error_line(r)
    r = cli("texture", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "--random" in _error_line(r)
    r = cli("texture", "--random", "-o", tmp_path / "x.png", "--size", "big")
    assert r.exit_code == 2 and "--size" in _error_line(r)
    r = cli("texture", "--random", "-o", b)
    assert r.exit_code == 2 and "exists" in _error_line(r)


def test_random_code_is_a_relu_hidden_state(model_path):
    """Both engines draw the same random style for a seed: a ReLU hidden state, different for another seed."""
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.engine_ort import OrtStylizer

    ort_engine, torch_engine = OrtStylizer(model_path), Stylizer(model_path, device="cpu")
    c1, c2 = ort_engine.random_code(1), torch_engine.random_code(1)
    assert c1.hidden.shape == (ort_engine.meta.hidden_dim,) and (c1.hidden >= 0).all() and (c1.hidden > 0).any()
    assert np.allclose(c1.hidden, c2.hidden, atol=1e-4) and not np.allclose(c1.hidden, ort_engine.random_code(2).hidden)


# ------------------------------------------------------------------------------------------ interpolate


def test_interpolate_strip(cli, tmp_path, content_image, style_image, style_image2, vgg16_path):
    out = tmp_path / "strip.png"
    r = cli("interpolate", content_image, "--style", style_image, "--to", style_image2, "--steps", 3, "-o", out,
            "--cell", 32, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert _size(out) == (5 * (32 + 4) + 4, 32 + 8)  # A, 3 interpolations, B in one row

    r = cli("interpolate", content_image, "--style", style_image, "--to", style_image2, "-o", out)
    assert r.exit_code == 2 and "exists" in _error_line(r)
    r = cli("interpolate", content_image, "--style", style_image, "--to", style_image2, "--steps", 1,
            "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and _error_line(r)
    r = cli("interpolate", content_image, "--style", style_image, "--to", tmp_path / "no.png", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "not found" in _error_line(r)
    r = cli("interpolate", content_image, "--style", style_image, "--to", style_image2, "-o", tmp_path / "x.jpg")
    assert r.exit_code == 2 and ".png" in _error_line(r)
