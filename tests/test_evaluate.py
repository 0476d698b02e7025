"""`metastyle-batch evaluate`: losses of every method per pair, a CSV, a grid, and peers measured alike."""

import csv
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from conftest import save_rgb
from metastyle_batch.cli import app
from metastyle_batch.engine import Stylizer
from metastyle_batch.train.evaluate import METHODS, evaluate, summarize


def _folders(root: Path) -> tuple[Path, Path]:
    for i in range(3):
        save_rgb(root / "content" / f"c{i}.png", 40, 48, seed=i)
    for i in range(2):
        save_rgb(root / "style" / f"s{i}.png", 48, 40, seed=10 + i)
    return root / "content", root / "style"


def test_evaluate_cli_writes_table_csv_and_grid(tmp_path, vgg16_path):
    content, style = _folders(tmp_path)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--content", str(content), "--style", str(style), "-o", str(out),
                                      "--size", "32", "--n-content", "2", "--gatys-steps", "60", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "gatys200" in result.output and "results.csv" in result.output and "palette" in result.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    pairs = {(r["content"], r["style"]) for r in rows}
    assert pairs == {(c, s) for c in ("c0.png", "c1.png") for s in ("s0.png", "s1.png")}  # evenly spaced: c0, c1
    assert [r["method"] for r in rows[:4]] == list(METHODS)
    by = {(r["content"], r["style"], r["method"]): r for r in rows}
    for c, s in pairs:
        assert float(by[c, s, "content"]["content_loss"]) == 0.0
        # Gatys optimises exactly these losses: it must beat the untouched photo on style
        assert float(by[c, s, "gatys200"]["style_loss"]) < float(by[c, s, "content"]["style_loss"])
    with Image.open(out / "grid.png") as grid:
        assert grid.width > 4 * 32 and grid.height > 4 * 32


def test_peers_are_measured_with_the_same_losses(tmp_path, vgg16_path):
    content, style = _folders(tmp_path)
    rows = evaluate(Stylizer(device="cpu", disk_cache=False), content, style, tmp_path / "e", size=32, n_content=1,
                    n_style=1, gatys_steps=2, peers={"identity": lambda c, style_file: c})
    means = summarize(rows)
    assert list(means) == list(METHODS) + ["identity"]
    assert means["identity"] == means["content"]  # a peer that returns the photo scores exactly like the photo
    assert means["content"]["tone"] > 0.999 and means["content"]["palette"] > 0
    assert set(means["ours"]) == {"content_loss", "style_loss", "palette", "tone", "retrieval"}


def test_quick_look_without_gatys(tmp_path, vgg16_path):
    content, style = _folders(tmp_path)
    rows = evaluate(Stylizer(device="cpu", disk_cache=False), content, style, tmp_path / "e", size=32, n_content=2,
                    gatys_steps=0, peers={"the style itself": lambda c, style_file: _as_tensor(style_file, 32)})
    means = summarize(rows)
    assert list(means) == ["content", "ours", "the style itself"]
    # the style image itself is the best possible palette and texture, and keeps nothing of the photo's tone
    assert means["the style itself"]["palette"] < min(means["content"]["palette"], 1.0)
    assert means["the style itself"]["retrieval"] == 1.0
    assert means["the style itself"]["tone"] < 0.9


def _as_tensor(path: Path, size: int):
    from metastyle_batch.train.evaluate import _load

    return _load(path, size)


def test_refine_is_measured_per_style_on_all_the_contents(tmp_path, vgg16_path):
    content, style = _folders(tmp_path)
    st = Stylizer(device="cpu", disk_cache=False)
    rows = evaluate(st, content, style, tmp_path / "e", size=32, n_content=2, gatys_steps=0, refine_steps=3)
    means = summarize(rows)
    assert list(means) == ["content", "ours", "refined"]
    by = {(r.content, r.style, r.method): r for r in rows}
    for c in ("c0.png", "c1.png"):
        for s in ("s0.png", "s1.png"):
            assert by[c, s, "refined"].style_loss != by[c, s, "ours"].style_loss  # a fine-tuned network's pixels
