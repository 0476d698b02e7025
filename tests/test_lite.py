"""The torch-free runtime: the same pixels as the PyTorch engine, and every stylizing command in a venv without torch.

The equality tests run both engines in this process on the same inputs: :class:`OrtStylizer` (ONNX Runtime and
numpy, what the CPU uses) against :class:`Stylizer` (PyTorch). The venv tests build a real virtual environment
that holds every package of this one except PyTorch (linked, not copied: no download), so ``import torch`` fails
there for real, and run the CLI in it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import make_rgb, save_rgb

TOL = 2 / 255  # the promise: the two runtimes within 2 levels everywhere
SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "metastyle-base8.safetensors"


@pytest.fixture(scope="module", params=["test model", "shipped model"])
def engines(request, vgg16_path: Path, model_path: Path):
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.engine_ort import OrtStylizer

    model = model_path if request.param == "test model" else SHIPPED
    return Stylizer(model, device="cpu", disk_cache=False), OrtStylizer(model, disk_cache=False)


def _picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return make_rgb(h, w, seed).astype(np.float32) / 255


@pytest.mark.parametrize("size", [(2, 3), (15, 9), (37, 53), (64, 48), (300, 7), (203, 301)])
def test_same_pixels_at_every_size(engines, style_image: Path, size) -> None:
    torch_engine, ort_engine = engines
    content = _picture(*size, seed=sum(size))
    a = ort_engine.stylize(content, style_image)
    b = torch_engine.stylize(content, style_image)
    assert a.shape == b.shape == (*size, 3)
    assert np.abs(a - b).max() <= TOL


@pytest.mark.parametrize("options", [{"strength": 0.4}, {"preserve_color": True}, {"max_side": 50},
                                     {"mix_weights": [0.3, 0.7]}])
def test_same_pixels_with_every_option(engines, style_image: Path, style_image2: Path, options) -> None:
    torch_engine, ort_engine = engines
    content = _picture(96, 80, seed=3)
    style = [style_image, style_image2] if "mix_weights" in options else style_image
    a, b = (e.stylize(content, style, **options) for e in (ort_engine, torch_engine))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= TOL


def test_same_style_codes_and_networks(engines, style_image: Path) -> None:
    """VGG-16 (ONNX graph) + the meta network (numpy) against the PyTorch modules, on the same file."""
    torch_engine, ort_engine = engines
    a, b = ort_engine.encode(style_image), torch_engine.encode(style_image)
    assert np.allclose(a.hidden, b.hidden, rtol=1e-3, atol=1e-3 * np.abs(b.hidden).max())
    assert np.allclose(a.colors, b.colors)
    pa, pb = ort_engine.network(a), torch_engine.network(a)
    for key, value in pb.items():
        assert np.allclose(pa[key], value.numpy(), atol=1e-5), key


def test_same_pixels_tiled(engines, style_image: Path) -> None:
    """Above max_pixels both engines go layer by layer over tiles; both agree with each other and with the whole
    image run (float16 storage between layers)."""
    torch_engine, ort_engine = engines
    content = _picture(150, 226, seed=5)
    whole = ort_engine.stylize(content, style_image)
    try:
        for e in engines:
            e.max_pixels, e.tile = 10_000, 64
        a, b = ort_engine.stylize(content, style_image), torch_engine.stylize(content, style_image)
    finally:
        for e in engines:
            e.max_pixels, e.tile = 16 << 20, 512
    assert np.abs(a - b).max() <= TOL
    assert np.abs(a - whole).max() <= TOL


def test_same_video_frames_with_moving_styles(engines, style_image: Path, style_image2: Path) -> None:
    """Per-frame hidden states between two keyframes (one network per frame), stabilizer on: FrameCompute gives
    the same uint8 frames on both engines."""
    from metastyle_batch.video.compute import FrameCompute
    from metastyle_batch.video.schedule import build_schedule, transition

    frames = [make_rgb(40, 56, seed=i) for i in range(6)]
    out = []
    for engine in engines:
        schedule = build_schedule(engine, transition(style_image, style_image2), 6, Fraction(10))
        compute = FrameCompute(engine, schedule, stabilize=True, strength=0.8)
        out.append(np.concatenate([compute(frames[i:i + 3], i) for i in (0, 3)]))
    assert out[0].shape == (6, 40, 56, 3)
    assert np.abs(out[0].astype(int) - out[1].astype(int)).max() <= 2
    assert not np.array_equal(out[0][0], out[0][-1])  # the style really moved


def test_engine_is_thread_safe(engines, style_image: Path, style_image2: Path) -> None:
    """Frame requests on several threads at once (VapourSynth's): each gets what it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from metastyle_batch.codes import mix

    _, engine = engines
    a, b = engine.encode(style_image), engine.encode(style_image2)
    codes = [mix([a, b], [1 - t, t]) for t in np.linspace(0, 1, 24)]  # more networks than the caches keep
    frames = [_picture(40, 48, seed=i)[None].transpose(0, 3, 1, 2) for i in range(24)]

    def one(i: int) -> np.ndarray:
        return engine.run_array(np.ascontiguousarray(frames[i]), engine.network(codes[i]), threads=1)

    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(one, list(range(24)) * 2))
    for i, y in enumerate(together):
        assert np.array_equal(y, one(i % 24))


def test_stabilizer_max_filter_is_a_max_pool() -> None:
    from metastyle_batch.video.temporal import _max_filter

    d = np.random.default_rng(0).random((1, 1, 7, 40)).astype(np.float32)
    for r in (0, 1, 3, 16):
        ref = np.stack([d[..., max(0, i - r):i + r + 1].max(-1) for i in range(40)], -1)
        assert np.array_equal(_max_filter(d, r, 3), ref)


def test_the_encoder_graph_checks_with_onnx(vgg16_path: Path) -> None:
    """The VGG-16 graph we write byte by byte is a valid ONNX model."""
    import onnx

    from metastyle_batch.model.style_encoder import encoder_onnx_bytes
    from metastyle_batch.model.vgg_weights import load_vgg16_state

    model = onnx.load_from_string(encoder_onnx_bytes(load_vgg16_state(vgg16_path)))
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["style_vector"]


# ---------------------------------------------------------------------------------------------- a venv without torch


TORCH = ("torch", "functorch", "torchgen", "nvidia", "triton", "sympy", "mpmath", "networkx")


def _venv_without(root: Path, skip: tuple[str, ...]) -> Path:
    """A venv holding this one's packages (this project included) except those whose names start with ``skip``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(skip):
            (site / entry.name).symlink_to(entry)
    probe = subprocess.run([str(python), "-c", f"import {skip[0]}"], capture_output=True, text=True)
    assert probe.returncode != 0 and f"No module named '{skip[0]}'" in probe.stderr
    return python


@pytest.fixture(scope="module")
def lite_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small install: no PyTorch and nothing only it needs."""
    return _venv_without(tmp_path_factory.mktemp("lite-venv"), TORCH)


def _lite(python: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """The CLI in the torch-free venv; it must not have imported torch (it could not have)."""
    proc = subprocess.run([str(python), "-m", "metastyle_batch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_every_stylizing_command_runs_without_torch(lite_python: Path, tmp_path: Path, style_image: Path,
                                                   style_image2: Path, vgg16_path: Path) -> None:
    from metastyle_batch.images import read_image
    from metastyle_batch.video.ffmpeg import ffmpeg_exe

    photo = save_rgb(tmp_path / "photo.png", 60, 84, seed=2)
    s1, s2 = str(style_image), str(style_image2)
    _lite(lite_python, "image", str(photo), "-s", s1, "-s", s2, "--mix", "0.7,0.3", "--strength", "0.6",
          "--palette", "0.3", "-o", "a.png", cwd=tmp_path)
    _lite(lite_python, "image", str(photo), "-s", s1, "--preserve-color", "--max-side", "40", "-o", "b.png",
          cwd=tmp_path)
    piped = subprocess.run([str(lite_python), "-m", "metastyle_batch", "image", "-", "-s", s1, "-f", "png"],
                           input=photo.read_bytes(), capture_output=True, timeout=300, cwd=tmp_path)
    assert piped.returncode == 0 and piped.stdout.startswith(b"\x89PNG")
    assert read_image(tmp_path / "a.png").size == (84, 60) and read_image(tmp_path / "b.png").size == (40, 29)

    clip = tmp_path / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    for out, extra in (("v1.mp4", ["-s", s1, "--stabilize"]), ("v2.mp4", ["-s", s1, "--to", s2]),
                       ("v3.mp4", ["--keyframes", f"0:{s1},50%:{s2},100%:{s1}", "--strength", "0.7"])):
        proc = _lite(lite_python, "video", str(clip), *extra, "-o", out, "--json", cwd=tmp_path)
        assert json.loads(proc.stdout)["frames"] == 10

    (tmp_path / "in").mkdir()
    shutil.copy(photo, tmp_path / "in" / "p.png")
    ray = _lite(lite_python, "image", "in", "-s", s1, "-o", "rout/", "--ray", "--ray-workers", "1", "--json",
                cwd=tmp_path)
    assert json.loads(ray.stdout)["outputs"] and (tmp_path / "rout" / "p.png").is_file()
    _lite(lite_python, "watch", "in", "--out", "wout", "-s", s1, "--once", cwd=tmp_path)
    assert (tmp_path / "wout" / "p.png").is_file()

    _lite(lite_python, "export", "-s", s1, "-o", "n.onnx", cwd=tmp_path)
    _lite(lite_python, "texture", "--random", "--size", "48", "-o", "t.png", cwd=tmp_path)
    _lite(lite_python, "interpolate", str(photo), "-s", s1, "--to", s2, "--steps", "3", "-o", "i.png", cwd=tmp_path)
    _lite(lite_python, "setup", "--vgg", str(vgg16_path), cwd=tmp_path)
    info = json.loads(_lite(lite_python, "info", "--json", cwd=tmp_path).stdout)
    assert info["torch"] is None and info["runtime"] == "ONNX Runtime (CPU)"
    assert "nets" in _lite(lite_python, "cache", "ls", cwd=tmp_path).stdout


@pytest.mark.parametrize("args", [["train", "--content", ".", "--style", ".", "-o", "r"],
                                  ["evaluate", "--content", ".", "--style", "."],
                                  ["finetune", "-s", "STYLE", "-o", "n.safetensors"],
                                  ["optimize", "PHOTO", "-s", "STYLE", "-o", "o.png"],
                                  ["image", "PHOTO", "-s", "STYLE", "--refine", "5"],
                                  ["image", "PHOTO", "-s", "STYLE", "--device", "cuda"]])
def test_what_needs_torch_says_which_extra(lite_python: Path, tmp_path: Path, style_image: Path, args) -> None:
    photo = save_rgb(tmp_path / "photo.png", 32, 32)
    args = [str(photo) if a == "PHOTO" else str(style_image) if a == "STYLE" else a for a in args]
    proc = _lite(lite_python, *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and 'pip install "metastyle-batch[torch]"' in line
    assert not any(p.name != "photo.png" for p in tmp_path.iterdir() if p.is_file())


def test_the_ui_runs_without_torch(lite_python: Path, tmp_path: Path, style_image: Path) -> None:
    """`ui` on the small install with the ui extra: a preview comes back (the browser tests are in test_ui.py)."""
    import urllib.request

    proc = subprocess.Popen([str(lite_python), "-m", "metastyle_batch", "ui", "--no-open", "--port", "0",
                             "--workdir", str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url

        def post(path: str, data: bytes) -> bytes:
            with urllib.request.urlopen(urllib.request.Request(url + path, data=data, method="POST"), timeout=120) as r:
                return r.read()

        style = json.loads(post("api/upload?kind=style&name=s.png", style_image.read_bytes()))
        photo = json.loads(post("api/upload?kind=photo&name=p.png", save_rgb(tmp_path / "p.png", 40, 56).read_bytes()))
        look = {"styles": [[style["id"], 1]], "strength": 0.5}
        jpeg = post("api/preview", json.dumps({"photo": photo["id"], "look": look, "size": 128}).encode())
        assert jpeg[:2] == b"\xff\xd8"
        with urllib.request.urlopen(url + "api/state", timeout=30) as r:
            assert "no PyTorch installed" in json.loads(r.read())["runtime"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_ui_without_its_extra_says_which(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    python = _venv_without(tmp_path_factory.mktemp("no-ui-venv"), ("starlette", "uvicorn"))
    proc = _lite(python, "ui", "--no-open", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'pip install "metastyle-batch[ui]"' in proc.stderr.strip()
    assert "\n" not in proc.stderr.strip()
