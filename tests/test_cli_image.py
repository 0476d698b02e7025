"""`metastyle-batch image` (and info / cache / setup) end to end: files on disk, pixels, exit codes, messages."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from metastyle_batch.cli import app
from metastyle_batch.model.io import load_model

from conftest import make_rgb, save_rgb

runner = CliRunner()
EXE = Path(sys.executable).with_name("metastyle-batch")


@pytest.fixture(autouse=True)
def _gentle(vgg16_path: Path):
    """Every test here encodes styles (needs VGG-16); use one thread: the machine is shared with training."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args, input: bytes | None = None):
    return runner.invoke(app, [os.fspath(a) if isinstance(a, Path) else str(a) for a in args], input=input)


def ok(result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstderr: {result.stderr}\n{result.exception!r}"
    assert "Traceback" not in result.stderr


def one_error_line(result, code: int = 2) -> str:
    """A usage error: exit ``code``, exactly one ``Error: …`` line on stderr, no traceback, nothing on stdout."""
    assert result.exit_code == code, f"exit {result.exit_code}\nstderr: {result.stderr}\n{result.exception!r}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


def pixels(path: Path | bytes, mode: str = "RGB") -> np.ndarray:
    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
        return np.asarray(img.convert(mode), dtype=np.float32) / 255


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 chroma planes (H, W, 2), as engine.preserve_colors computes them."""
    y = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.stack([(rgb[..., 2] - y) * 0.564, (rgb[..., 0] - y) * 0.713], -1)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image with ~100 bytes of data: a decompression bomb stand-in."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------------------------- happy paths


def test_single_file_next_to_input(content_image: Path, style_image: Path) -> None:
    before = digest(content_image)
    result = invoke("image", content_image, "--style", style_image)
    ok(result)
    out = content_image.with_name("photo_stylized.png")
    assert out.is_file() and size_of(out) == (64, 48)
    assert np.abs(pixels(out) - pixels(content_image)).mean() > 0.02  # it really changed the picture
    assert digest(content_image) == before
    assert str(out.name) in result.stderr and result.stdout == ""


def test_odd_size_is_kept(tmp_path: Path, style_image: Path) -> None:
    src = save_rgb(tmp_path / "odd.png", 53, 37, seed=3)
    ok(invoke("image", src, "-s", style_image, "-o", tmp_path / "odd_out.png"))
    assert size_of(tmp_path / "odd_out.png") == (37, 53)


def test_folder_and_glob_inputs(tmp_path: Path, style_image: Path) -> None:
    shots = tmp_path / "shots"
    save_rgb(shots / "a.png", 32, 40, seed=1)
    save_rgb(shots / "b.jpg", 30, 20, seed=2, quality=95)
    (shots / "notes.txt").write_text("not an image, and not picked up from a folder")
    (shots / "sub").mkdir()
    save_rgb(shots / "sub" / "deep.png", 16, 16)  # folders are not recursive
    ok(invoke("image", shots, "-s", style_image))
    assert sorted(p.name for p in shots.iterdir() if p.is_file()) == [
        "a.png", "a_stylized.png", "b.jpg", "b_stylized.jpg", "notes.txt"]
    assert size_of(shots / "b_stylized.jpg") == (20, 30)
    assert not (shots / "sub" / "deep_stylized.png").exists()

    # a second run over the folder skips the earlier *_stylized outputs (and does not overwrite them): every output
    # exists, a usage error (exit 2) as for video
    result = invoke("image", shots, "-s", style_image)
    assert result.exit_code == 2 and "a_stylized_stylized" not in " ".join(os.listdir(shots))

    # a quoted glob is expanded by us
    out = tmp_path / "from_glob"
    ok(invoke("image", f"{shots}/[ab].*", "-s", style_image, "-o", out))
    assert sorted(os.listdir(out)) == ["a.png", "b.jpg"]


def test_output_folder(tmp_path: Path, content_image: Path, style_image: Path) -> None:
    ok(invoke("image", content_image, "-s", style_image, "-o", f"{tmp_path / 'new'}/"))  # trailing slash: a folder
    assert size_of(tmp_path / "new" / "photo.png") == (64, 48)
    existing = tmp_path / "existing"
    existing.mkdir()
    ok(invoke("image", content_image, "-s", style_image, "-o", existing, "--format", "jpg"))
    assert (existing / "photo.jpg").is_file()
    with Image.open(existing / "photo.jpg") as img:
        assert img.format == "JPEG"


def test_two_styles_mixed(tmp_path: Path, content_image: Path, style_image: Path, style_image2: Path) -> None:
    outs = {}
    for name, extra in {"a": ["-s", style_image], "b": ["-s", style_image2],
                        "mix": ["-s", style_image, "-s", style_image2, "--mix", "0.7,0.3"],
                        "mix_scaled": ["-s", style_image, "-s", style_image2, "--mix", "7,3"]}.items():
        ok(invoke("image", content_image, *extra, "-o", tmp_path / f"{name}.png"))
        outs[name] = pixels(tmp_path / f"{name}.png")
    assert np.abs(outs["mix"] - outs["a"]).mean() > 1e-3
    assert np.abs(outs["mix"] - outs["b"]).mean() > 1e-3
    np.testing.assert_array_equal(outs["mix"], outs["mix_scaled"])  # weights are normalised


def test_strength(tmp_path: Path, content_image: Path, style_image: Path) -> None:
    ok(invoke("image", content_image, "-s", style_image, "-o", tmp_path / "full.png"))
    ok(invoke("image", content_image, "-s", style_image, "-o", tmp_path / "none.png", "--strength", "0"))
    assert size_of(tmp_path / "none.png") == (64, 48)
    assert np.abs(pixels(tmp_path / "none.png") - pixels(tmp_path / "full.png")).mean() > 1e-3


def test_preserve_color_keeps_chroma(tmp_path: Path, style_image: Path) -> None:
    y, x = np.mgrid[0:48, 0:64] / 64.0  # warm, moderately saturated photo; the style is blue-ish
    photo = np.dstack([0.65 + 0.2 * x, 0.45 + 0.2 * np.sin(6 * y), 0.3 + 0.1 * x * y])
    src = tmp_path / "warm.png"
    Image.fromarray((photo * 255).astype(np.uint8)).save(src)
    ok(invoke("image", src, "-s", style_image, "--preserve-color", "-o", tmp_path / "kept.png"))
    ok(invoke("image", src, "-s", style_image, "-o", tmp_path / "free.png"))
    want, kept, free = cbcr(pixels(src)), cbcr(pixels(tmp_path / "kept.png")), cbcr(pixels(tmp_path / "free.png"))
    # where the result was not clipped to [0, 1], the chroma is the photo's (up to 8-bit rounding)
    inside = ((pixels(tmp_path / "kept.png") > 2 / 255) & (pixels(tmp_path / "kept.png") < 253 / 255)).all(-1)
    assert inside.mean() > 0.05, inside.mean()  # a random-weight model clips a lot; a trained one far less
    np.testing.assert_allclose(kept[inside].mean(0), want[inside].mean(0), atol=0.01)
    assert np.abs(kept.mean((0, 1)) - want.mean((0, 1))).max() < np.abs(free.mean((0, 1)) - want.mean((0, 1))).max()
    assert np.abs(pixels(tmp_path / "kept.png") - pixels(src)).mean() > 0.01  # still stylized


def test_json_output(tmp_path: Path, content_image: Path, style_image: Path, model_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    result = invoke("image", content_image, bad, "-s", style_image, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert set(data) == {"outputs", "failed", "model", "device"}
    assert data["model"] == load_model(model_path)[1]["id"] and data["device"] == "cpu"
    [entry] = data["outputs"]
    assert set(entry) == {"input", "output", "width", "height", "ms"}
    assert entry["input"] == str(content_image) and Path(entry["output"]) == tmp_path / "out" / "photo.png"
    assert (entry["width"], entry["height"]) == (64, 48) and isinstance(entry["ms"], int) and entry["ms"] >= 0
    assert Path(entry["output"]).is_file()
    [failure] = data["failed"]
    assert failure["input"] == str(bad) and failure["error"].startswith(f"{bad}: ") and "\n" not in failure["error"]


def test_max_side_and_stdin_to_stdout(content_image: Path, style_image: Path) -> None:
    result = invoke("image", "-", "-s", style_image, "--max-side", "32", input=content_image.read_bytes())
    ok(result)
    assert result.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(result.stdout_bytes)) as img:
        assert img.size == (32, 24)


# ----------------------------------------------------------------------------------------------- odd and bad inputs


@pytest.mark.parametrize("kind, words", [
    ("zero_byte", ["empty"]),
    ("truncated_jpeg", ["truncated"]),
    ("not_an_image", ["not an image"]),
    ("decompression_bomb", ["decompression bomb"]),
])
def test_bad_input_is_a_per_file_failure(tmp_path: Path, style_image: Path, kind: str, words: list[str]) -> None:
    path = tmp_path / ("bad.jpg" if kind == "truncated_jpeg" else "bad.png")
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "truncated_jpeg":
        full = io.BytesIO()
        Image.fromarray(make_rgb(96, 128)).save(full, "JPEG", quality=95)
        path.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    elif kind == "not_an_image":
        path.write_text("this is not an image\n" * 20)
    else:
        path.write_bytes(png_header_only(20000, 20000))  # 400 Mpx claimed, ~100 bytes on disk
        assert path.stat().st_size < 1000
    before = digest(path)
    result = invoke("image", path, "-s", style_image)
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    failure = [ln.strip() for ln in result.stderr.splitlines() if ln.strip().startswith(str(path))]
    assert len(failure) == 1 and all(w in failure[0].lower() for w in words), result.stderr
    assert "0 done, 1 failed" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and digest(path) == before  # no output, untouched


def test_16bit_png(tmp_path: Path, style_image: Path) -> None:
    gray = (make_rgb(30, 40).astype(np.uint32).sum(-1) * 85).astype(np.uint16)  # full 16-bit range
    src = tmp_path / "deep.png"
    Image.fromarray(gray).save(src)
    with Image.open(src) as img:
        assert img.mode.startswith("I")
    ok(invoke("image", src, "-s", style_image))
    assert size_of(tmp_path / "deep_stylized.png") == (40, 30)


def test_grayscale(tmp_path: Path, style_image: Path) -> None:
    src = tmp_path / "gray.png"
    Image.fromarray(make_rgb(30, 40)).convert("L").save(src)
    ok(invoke("image", src, "-s", style_image))
    out = tmp_path / "gray_stylized.png"
    assert size_of(out) == (40, 30)
    rgb = pixels(out)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 0  # the style added colour


def test_rgba_alpha_preserved_exactly(tmp_path: Path, style_image: Path) -> None:
    y, x = np.mgrid[0:40, 0:50]
    alpha = ((x * 5 + y * 3) % 256).astype(np.uint8)
    alpha[10:20, 10:20] = 0
    src = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([make_rgb(40, 50), alpha])).save(src)
    ok(invoke("image", src, "-s", style_image))
    with Image.open(tmp_path / "cutout_stylized.png") as img:
        assert img.mode == "RGBA" and img.size == (50, 40)
        out = np.asarray(img)
    np.testing.assert_array_equal(out[..., 3], alpha)
    assert np.abs(out[..., :3].astype(int) - make_rgb(40, 50).astype(int)).mean() > 5


def test_cmyk_jpeg(tmp_path: Path, style_image: Path) -> None:
    src = tmp_path / "print.jpg"
    Image.fromarray(make_rgb(32, 48)).convert("CMYK").save(src, quality=95)
    with Image.open(src) as img:
        assert img.mode == "CMYK"
    ok(invoke("image", src, "-s", style_image))
    with Image.open(tmp_path / "print_stylized.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (48, 32)


def test_exif_rotated_output_is_upright(tmp_path: Path, style_image: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    src = tmp_path / "phone.jpg"
    Image.fromarray(make_rgb(24, 40)).save(src, exif=exif.tobytes(), quality=95)  # stored 40 wide, 24 high
    ok(invoke("image", src, "-s", style_image))
    with Image.open(tmp_path / "phone_stylized.jpg") as img:
        assert img.size == (24, 40)  # transposed: upright portrait
        assert img.getexif().get(0x0112) is None  # no stale orientation tag


def test_animated_gif(tmp_path: Path, style_image: Path) -> None:
    frames = [Image.fromarray(make_rgb(20, 24, seed=i)) for i in range(3)]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=[40, 80, 120], loop=0)
    ok(invoke("image", src, "-s", style_image))
    out = tmp_path / "anim_stylized.gif"
    with Image.open(out) as img:
        assert img.format == "GIF" and img.n_frames == 3 and img.size == (24, 20)
        durations = []
        for i in range(3):
            img.seek(i)
            durations.append(img.info.get("duration"))
    assert durations == [40, 80, 120]


def test_unicode_paths(tmp_path: Path, style_image: Path) -> None:
    folder = tmp_path / "Ärger été 日本"
    src = save_rgb(folder / "föto ü 写真.png", 24, 32)
    style = folder / "stïl 絵.png"
    shutil.copy(style_image, style)
    result = invoke("image", src, "-s", style, "--json")
    ok(result)
    out = folder / "föto ü 写真_stylized.png"
    assert out.is_file() and size_of(out) == (32, 24)
    assert json.loads(result.stdout)["outputs"][0]["output"] == str(out)


def test_missing_output_folder_is_created(tmp_path: Path, content_image: Path, style_image: Path) -> None:
    dest = tmp_path / "does" / "not" / "exist" / "out.webp"
    ok(invoke("image", content_image, "-s", style_image, "-o", dest))
    with Image.open(dest) as img:
        assert img.format == "WEBP" and img.size == (64, 48)


def test_read_only_output_folder(tmp_path: Path, content_image: Path, style_image: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        result = invoke("image", content_image, "-s", style_image, "-o", locked / "out.png")
        assert result.exit_code == 1 and "Traceback" not in result.stderr
        assert "permission denied" in result.stderr.lower() and str(content_image) in result.stderr
        assert os.listdir(locked) == []  # no temp file left behind
    finally:
        locked.chmod(0o755)


def test_existing_output_needs_overwrite(tmp_path: Path, content_image: Path, style_image: Path) -> None:
    dest = tmp_path / "taken.png"
    dest.write_bytes(b"precious")
    result = invoke("image", content_image, "-s", style_image, "-o", dest)
    assert result.exit_code == 2 and "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert dest.read_bytes() == b"precious"
    ok(invoke("image", content_image, "-s", style_image, "-o", dest, "--overwrite"))
    assert size_of(dest) == (64, 48)


@pytest.mark.parametrize("how", ["same_file", "same_folder", "other_input"])
def test_never_overwrites_an_input(tmp_path: Path, content_image: Path, style_image: Path, how: str) -> None:
    other = save_rgb(tmp_path / "photo_stylized.png", 16, 16, seed=5)  # an input named like an output
    inputs = [content_image] + ([other] if how == "other_input" else [])
    out = {"same_file": ["-o", content_image], "same_folder": ["-o", f"{tmp_path}/"], "other_input": []}[how]
    stamps = {p: (digest(p), p.stat().st_mtime_ns) for p in (content_image, other)}
    result = invoke("image", *inputs, "-s", style_image, *out, "--overwrite")
    assert result.exit_code == 1, result.stderr
    assert "overwrite an input" in result.stderr and "Traceback" not in result.stderr
    assert {p: (digest(p), p.stat().st_mtime_ns) for p in stamps} == stamps


def test_batch_with_one_bad_file(tmp_path: Path, style_image: Path) -> None:
    src = tmp_path / "in"
    good = [save_rgb(src / f"good_{i}.png", 24 + i, 32, seed=i) for i in range(3)]
    bad = src / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    hashes = {p: digest(p) for p in src.iterdir()}
    result = invoke("image", src, "-s", style_image, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "3 done, 1 failed" in result.stderr
    failures = [ln.strip() for ln in result.stderr.splitlines() if ln.startswith("  ")]
    assert len(failures) == 1 and failures[0].startswith(f"{bad}: ")
    assert sorted(os.listdir(tmp_path / "out")) == ["good_0.png", "good_1.png", "good_2.png"]
    for i, p in enumerate(good):
        assert size_of(tmp_path / "out" / p.name) == (32, 24 + i)
    assert {p: digest(p) for p in src.iterdir()} == hashes  # inputs never modified


# ----------------------------------------------------------------------------------------------- usage errors


def test_missing_style_is_one_line(tmp_path: Path, content_image: Path) -> None:
    missing = tmp_path / "no_such_style.jpg"
    line = one_error_line(invoke("image", content_image, "-s", missing))
    assert str(missing) in line
    assert os.listdir(tmp_path) == [content_image.name]


@pytest.mark.parametrize("case", [
    "mix_count", "mix_negative", "o_file_several_inputs", "no_inputs", "model_missing", "model_damaged",
    "model_sha_mismatch", "bad_format", "bad_strength", "bad_device", "json_with_stdout", "style_not_an_image",
])
def test_usage_errors_exit_2(tmp_path: Path, content_image: Path, style_image: Path, style_image2: Path,
                             model_path: Path, case: str) -> None:
    args: list = ["image", content_image, "-s", style_image]
    if case == "mix_count":
        args += ["-s", style_image2, "--mix", "0.7,0.2,0.1"]
    elif case == "mix_negative":
        args += ["-s", style_image2, "--mix", "1,-1"]
    elif case == "o_file_several_inputs":
        args = ["image", content_image, save_rgb(tmp_path / "two.png", 8, 8), "-s", style_image, "-o", tmp_path / "x.png"]
    elif case == "no_inputs":
        args = ["image", f"{tmp_path}/*.tiff", tmp_path / "absent.png", "-s", style_image]
    elif case == "model_missing":
        args += ["--model", tmp_path / "absent.safetensors"]
    elif case == "model_damaged":
        (tmp_path / "junk.safetensors").write_bytes(os.urandom(256))
        args += ["--model", tmp_path / "junk.safetensors"]
    elif case == "model_sha_mismatch":
        copy = tmp_path / "m.safetensors"
        shutil.copy(model_path, copy)
        shutil.copy(model_path.with_name(model_path.name + ".sha256"), tmp_path / "m.safetensors.sha256")
        with open(copy, "r+b") as f:
            f.seek(-10, os.SEEK_END)
            f.write(b"\x00" * 10)
        args += ["--model", copy]
    elif case == "bad_format":
        args += ["--format", "heic"]
    elif case == "bad_strength":
        args += ["--strength", "1.5"]
    elif case == "bad_device":
        args += ["--device", "toaster"]
    elif case == "json_with_stdout":
        args += ["-o", "-", "--json"]
    elif case == "style_not_an_image":
        (tmp_path / "style.png").write_text("words")
        args[-1] = tmp_path / "style.png"
    files_before = sorted(os.listdir(tmp_path))
    one_error_line(invoke(*args))
    assert sorted(os.listdir(tmp_path)) == files_before  # nothing written


# ----------------------------------------------------------------------------------------------- the real executable


def _exe(*args, input: bytes | None = None) -> subprocess.CompletedProcess:
    if not EXE.is_file():
        pytest.skip(f"console script not installed at {EXE}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([str(EXE), *map(str, args)], input=input, capture_output=True, env=env, timeout=300)


def test_exe_stdin_to_stdout(content_image: Path, style_image: Path) -> None:
    proc = _exe("image", "-", "--style", style_image, input=content_image.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"\x89PNG\r\n\x1a\n")  # binary image, nothing else on stdout
    out = pixels(proc.stdout)
    assert out.shape == (48, 64, 3) and np.abs(out - pixels(content_image)).mean() > 0.02
    assert b"Traceback" not in proc.stderr


def test_exe_happy_path_and_exit_codes(tmp_path: Path, content_image: Path, style_image: Path) -> None:
    proc = _exe("image", content_image, "-s", style_image, "-o", tmp_path / "out.jpg", "--quality", "80")
    assert proc.returncode == 0, proc.stderr.decode()
    assert size_of(tmp_path / "out.jpg") == (64, 48) and proc.stdout == b""

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    proc = _exe("image", content_image, bad, "-s", style_image, "-o", tmp_path / "batch")
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert os.listdir(tmp_path / "batch") == ["photo.png"] and str(bad).encode() in proc.stderr

    proc = _exe("image", content_image, "-s", tmp_path / "missing.png")
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().strip() == f"Error: style image not found: {tmp_path / 'missing.png'}"


# ----------------------------------------------------------------------------------------------- info / cache / setup


def test_info_json(model_path: Path, vgg16_path: Path) -> None:
    result = invoke("info", "--json")
    ok(result)
    data = json.loads(result.stdout)
    assert data["model"]["path"] == str(model_path) and data["model"]["base"] == 8 and data["model"]["steps"] == 0
    assert data["model"]["id"] == load_model(model_path)[1]["id"]
    assert data["vgg16"]["path"] == str(vgg16_path) and data["device"] == "cpu"
    assert data["cache"]["dir"] == os.environ["METASTYLE_CACHE"]
    ok(invoke("info"))


def test_info_without_vgg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METASTYLE_VGG16")
    monkeypatch.setenv("METASTYLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = invoke("info", "--json")
    ok(result)
    assert "metastyle-batch setup" in json.loads(result.stdout)["vgg16"]["error"]


def test_cache_ls_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content_image: Path,
                            style_image: Path, vgg16_path: Path) -> None:
    monkeypatch.setenv("METASTYLE_CACHE", str(tmp_path / "cache"))
    ok(invoke("image", content_image, "-s", style_image))  # fills the code cache
    assert len(list((tmp_path / "cache" / "codes").glob("*.safetensors"))) == 1
    result = invoke("cache", "ls")
    ok(result)
    assert re.search(r"style codes\s+1 file\b", result.stdout), result.stdout
    one_error_line(invoke("cache", "clear"))  # not a terminal and no --yes: refuse
    assert len(list((tmp_path / "cache" / "codes").glob("*.safetensors"))) == 1
    ok(invoke("cache", "clear", "--yes", "--all"))
    assert not (tmp_path / "cache" / "codes").exists()
    assert vgg16_path.is_file()  # $METASTYLE_VGG16 is never the cache's to delete


def test_setup_copies_vgg_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vgg16_path: Path,
                                     model_path: Path) -> None:
    monkeypatch.setenv("METASTYLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("METASTYLE_VGG16")
    result = invoke("setup", "--vgg", vgg16_path)
    ok(result)
    cached = tmp_path / "cache" / "vgg16_features23.safetensors"
    assert cached.is_file() and str(cached) in result.stdout and str(model_path) in result.stdout
    one_error_line(invoke("setup", "--vgg", tmp_path / "absent.safetensors"))


def test_help_teaches() -> None:
    for args in (["--help"], ["image", "--help"], ["info", "--help"], ["cache", "--help"], ["setup", "--help"]):
        result = invoke(*args)
        ok(result)
        assert "metastyle-batch" in result.stdout
    assert "Example" in invoke("image", "--help").stdout


def test_net_from_finetune_stylizes_like_its_style(tmp_path, content_image, style_image, model_path):
    """`--net` runs a saved per-style network; a 0-step network equals what the meta network generates."""
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.finetune import save_net

    st = Stylizer(model_path, device="cpu")
    net = tmp_path / "style.safetensors"
    save_net(st.network(st.encode(style_image)), net, st.meta.base)
    runner = CliRunner()
    a = runner.invoke(app, ["image", str(content_image), "--net", str(net), "-o", str(tmp_path / "net.png")])
    b = runner.invoke(app, ["image", str(content_image), "--style", str(style_image), "--palette", "0",  # a net has no
                            "-o", str(tmp_path / "style.png")])  # style image to take colours from
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    pa = np.asarray(Image.open(tmp_path / "net.png"), dtype=np.int16)
    pb = np.asarray(Image.open(tmp_path / "style.png"), dtype=np.int16)
    assert np.abs(pa - pb).max() <= 1
    both = runner.invoke(app, ["image", str(content_image), "--net", str(net), "--style", str(style_image)])
    assert both.exit_code == 2 and "either --style" in both.output


def test_refine_fine_tunes_on_the_inputs_then_stylizes_them_all(tmp_path: Path, style_image: Path,
                                                                  style_image2: Path) -> None:
    for i in range(2):
        save_rgb(tmp_path / "in" / f"p{i}.png", 60, 44, seed=30 + i)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    plain = runner.invoke(app, ["image", str(tmp_path / "in"), "-s", str(style_image), "-o", str(tmp_path / "a") + "/"])
    refined = runner.invoke(app, ["image", str(tmp_path / "in"), "-s", str(style_image), "--refine", "3",
                                  "-o", str(tmp_path / "b") + "/"])
    assert plain.exit_code == refined.exit_code == 1  # the broken file is reported, the others are written
    assert "refined 3 steps in" in refined.output and "broken.png" in refined.output
    for i in range(2):
        a = np.asarray(Image.open(tmp_path / "a" / f"p{i}.png"), dtype=np.float32)
        b = np.asarray(Image.open(tmp_path / "b" / f"p{i}.png"), dtype=np.float32)
        assert a.shape == b.shape == (60, 44, 3)
        assert np.abs(a - b).mean() > 0.1  # three Adam steps on the network change its pixels
    style_mean = np.asarray(Image.open(style_image).convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0)
    far = {}
    for palette in ("0", "1"):  # a refined network still gets the style's palette transfer
        r = runner.invoke(app, ["image", str(tmp_path / "in" / "p0.png"), "-s", str(style_image), "--refine", "2",
                                "--palette", palette, "-o", str(tmp_path / f"palette{palette}.png")])
        assert r.exit_code == 0, r.output
        out = np.asarray(Image.open(tmp_path / f"palette{palette}.png"), dtype=np.float32).reshape(-1, 3)
        far[palette] = float(np.abs(out.mean(0) - style_mean).sum())
    assert far["1"] < 0.5 * far["0"], far
    two = runner.invoke(app, ["image", str(tmp_path / "in"), "-s", str(style_image), "-s", str(style_image2),
                              "--refine", "3", "-o", str(tmp_path / "c") + "/"])
    assert two.exit_code == 2 and "--refine needs exactly one --style" in two.output
    assert not (tmp_path / "c").exists()
