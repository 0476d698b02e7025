"""The VapourSynth plug-in in real VapourSynth: a Python ≥ 3.12 venv with the ``vapoursynth`` and
``vapoursynth-bestsource`` wheels and this package (no torch), ``vspipe`` on real scripts, and the frames compared
with ``metastyle-batch video`` on the same clips.

Tolerance: both sides run the same engine on the same schedule, but they see slightly different RGB. ffmpeg
(the CLI's decoder) and zimg (VapourSynth's resize) convert YUV 4:2:0 to RGB with different chroma upsampling
and rounding (the CLI gets 8-bit RGB, VapourSynth float), about 1 level on average on natural footage, and
convert back to YUV with different chroma downsampling. The CLI's H.264 is 4:2:0 (lossless at quality 100) and
is compared at 4:4:4, so its chroma is the upsampled half-resolution one. We ask for a mean luma difference under
1.5 levels with 99 % of samples within 6 levels, and for chroma under 2 and within 10 levels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _python312() -> str:
    found = [shutil.which(n) for n in ("python3.13", "python3.12")]
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
        found += sorted(str(p) for p in Path(root).glob("versions/3.1[2-9]*/bin/python3"))
    except (OSError, subprocess.CalledProcessError):
        pass
    found = [p for p in found if p]
    if not found:
        pytest.fail("the VapourSynth test needs Python >= 3.12 (the vapoursynth wheel's minimum): none on PATH or "
                    "under pyenv")
    return found[-1]


@pytest.fixture(scope="module")
def vs_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv: vapoursynth, vapoursynth-bestsource and this package, as the README installs them."""
    venv = tmp_path_factory.mktemp("vapoursynth") / "venv"
    subprocess.run([_python312(), "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", f"{REPO}[vapoursynth]"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    subprocess.run([str(venv / "bin" / "vapoursynth"), "config"], check=True, capture_output=True)
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode != 0
    return venv


def _ffmpeg() -> str:
    from metastyle_batch.video.ffmpeg import ffmpeg_exe

    return ffmpeg_exe()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Natural footage (a pan over an example photo), tagged BT.709: 160x120 4:2:0, and 157x117 4:4:4 (odd)."""
    folder = tmp_path_factory.mktemp("vs-clips")
    out = {}
    for name, size, pix in (("even", "160:120", "yuv420p"), ("odd", "157:117", "yuv444p")):
        out[name] = folder / f"{name}.mp4"
        subprocess.run([_ffmpeg(), "-v", "error", "-loop", "1", "-framerate", "10", "-i",
                        str(EXAMPLES / "content" / "chelsea.jpg"), "-vf", f"scale=240:-2,crop={size}:x='t*30':y=20",
                        "-t", "1.2", "-c:v", "libx264", "-pix_fmt", pix, "-colorspace", "bt709",
                        "-color_primaries", "bt709", "-color_trc", "bt709", str(out[name])], check=True)
    return out


def _planes(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame as YUV 4:4:4 planes, (N, 3, H, W) int (the CLI's H.264 cropped to the clip's size)."""
    raw = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv444p", "-"],
                         capture_output=True, check=True).stdout
    w, h = (width + width % 2, height + height % 2) if path.suffix == ".mkv" else (width, height)
    return np.frombuffer(raw, np.uint8).reshape(-1, 3, h, w)[:, :, :height, :width].astype(int)


def _vspipe(venv: Path, tmp: Path, clip: Path, call: str, fmt: str = "RGBS") -> Path:
    script = tmp / "s.vpy"
    script.write_text(f"""import vapoursynth as vs
from metastyle_batch.vapoursynth import stylize
core = vs.core
clip = core.bs.VideoSource({str(clip)!r})
clip = core.resize.Bicubic(clip, format=vs.{fmt}, matrix_in_s="709")
clip = {call}
assert clip.format.id == vs.{fmt}, clip.format.name
clip = core.resize.Bicubic(clip, format=vs.YUV444P8, matrix_s="709")
clip.set_output()
""")
    out = tmp / "vs.y4m"
    proc = subprocess.run([str(venv / "bin" / "vspipe"), "-c", "y4m", str(script), str(out)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "METASTYLE_MODEL": str(REPO / "weights" / "metastyle-base8.safetensors")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _cli(tmp: Path, clip: Path, args: list[str]) -> Path:
    out = tmp / "cli.mkv"
    proc = subprocess.run([sys.executable, "-m", "metastyle_batch", "video", str(clip), "-o", str(out), "--quality",
                           "100", "--overwrite", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "METASTYLE_MODEL": str(REPO / "weights" / "metastyle-base8.safetensors")})
    assert proc.returncode == 0, proc.stderr
    return out


A, B, C = (str(EXAMPLES / "style" / n) for n in ("liberty_island.jpg", "liberty_bonfire.jpg", "two_brothers_riders.jpg"))


@pytest.mark.parametrize("case, fmt, call, args", [
    ("even", "RGBS", f"stylize(clip, style={A!r})", ["-s", A]),
    ("even", "RGBH", f"stylize(clip, style={A!r}, to={B!r}, palette=0.3)", ["-s", A, "--to", B, "--palette", "0.3"]),
    ("even", "RGBS", f"stylize(clip, keyframes='0:{A},50%:{B},100%:{C}', strength=0.7)",
     ["--keyframes", f"0:{A},50%:{B},100%:{C}", "--strength", "0.7"]),
    ("odd", "RGBS", f"stylize(clip, style={A!r}, preserve_color=True)", ["-s", A, "--preserve-color"]),
])
def test_vspipe_frames_equal_the_cli(vs_venv: Path, clips, tmp_path: Path, vgg16_path: Path, case, fmt, call,
                                     args) -> None:
    width, height = (160, 120) if case == "even" else (157, 117)
    ours = _planes(_vspipe(vs_venv, tmp_path, clips[case], call, fmt), width, height)
    cli = _planes(_cli(tmp_path, clips[case], args), width, height)
    assert ours.shape == cli.shape == (12, 3, height, width)
    luma, chroma = np.abs(ours[:, 0] - cli[:, 0]), np.abs(ours[:, 1:] - cli[:, 1:])
    assert luma.mean() < 1.5 and np.percentile(luma, 99) <= 6, (luma.mean(), np.percentile(luma, 99))
    assert chroma.mean() < 2 and np.percentile(chroma, 99) <= 10, (chroma.mean(), np.percentile(chroma, 99))
    assert np.abs(ours[-1] - ours[0]).mean() > 2  # the frames are stylized footage, not one still


def test_wrong_format_is_one_clear_error(vs_venv: Path, clips, tmp_path: Path) -> None:
    script = tmp_path / "bad.vpy"
    script.write_text(f"""import vapoursynth as vs
from metastyle_batch.vapoursynth import stylize
clip = vs.core.bs.VideoSource({str(clips['even'])!r})
stylize(clip, style={A!r}).set_output()
""")
    proc = subprocess.run([str(vs_venv / "bin" / "vspipe"), "--info", str(script)], capture_output=True, text=True)
    assert proc.returncode != 0 and "needs RGBS or RGBH, not YUV420P8" in proc.stderr
