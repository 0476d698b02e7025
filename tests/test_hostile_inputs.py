"""Strange, hostile and huge inputs through the real CLI (each case once hung, lost data or lied): a clear one-line
error and a non-zero exit, bounded memory, untouched inputs, no stray files or processes. Inputs are built here."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save_rgb

TIMEOUT = 120  # a hang fails the test instead of blocking the run


def cli(*args, cwd: Path | None = None, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metastyle_batch", *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd, env={**os.environ, **(env or {})}, **kw)


def one_error_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stderr and all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "style.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    from metastyle_batch.video.ffmpeg import ffmpeg_exe

    path = tmp_path / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-t", "1",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


# ---- 1. pipes and FIFOs are refused, not read (a FIFO blocks forever, a process substitution is read once)

@pytest.mark.parametrize("option", ["--style", "--to", "--keyframes"])
def test_video_refuses_a_fifo_style(tmp_path: Path, fifo: Path, clip: Path, style_image: Path, option) -> None:
    args = {"--style": ["-s", fifo], "--to": ["-s", style_image, "--to", fifo],
            "--keyframes": ["--keyframes", f"0:{style_image},100%:{fifo}"]}[option]
    proc = cli("video", clip, *args, "-o", tmp_path / "out.mp4")
    one_error_line(proc, 2, str(fifo), "a pipe (FIFO)")
    assert not (tmp_path / "out.mp4").exists()


def test_image_refuses_fifos_as_style_and_as_photo(tmp_path: Path, fifo: Path, style_image: Path) -> None:
    photo = save_rgb(tmp_path / "p.png", 32, 40)
    one_error_line(cli("image", photo, "-s", fifo, "-o", tmp_path / "o.png"), 2, "a pipe (FIFO)", "save it to a file")
    proc = cli("image", photo, fifo, "-s", style_image, "-o", tmp_path / "out/")
    assert proc.returncode == 1 and f"{fifo}: is a pipe (FIFO), not an image file" in proc.stderr
    assert (tmp_path / "out" / "p.png").is_file()  # the batch went on past the bad input
    one_error_line(cli("image", photo, "--net", fifo, "-o", tmp_path / "n.png"), 2, str(fifo), "not a file")
    for engine in ("1", "0"):  # a model path: the torch-free engine and the PyTorch one
        proc = cli("image", photo, "-s", style_image, "--model", fifo, "-o", tmp_path / "m.png",
                   env={"METASTYLE_ORT": engine})
        one_error_line(proc, 2, f"{fifo}: is a pipe (FIFO), not a model file")


def test_process_substitution_style_is_refused(tmp_path: Path, style_image: Path) -> None:
    """`-s <(cat style.png)`: /dev/fd/N, a pipe, named in the message instead of "empty input (0 bytes)"."""
    photo = save_rgb(tmp_path / "p.png", 32, 40)
    script = f'"{sys.executable}" -m metastyle_batch image "{photo}" -s <(cat "{style_image}") -o "{tmp_path}/o.png"'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=TIMEOUT)
    one_error_line(proc, 2, "/dev/fd/", "a pipe (FIFO)")


def test_watch_refuses_fifo_and_folder_styles_and_configs(tmp_path: Path, fifo: Path) -> None:
    (tmp_path / "in").mkdir()
    one_error_line(cli("watch", tmp_path / "in", "--out", tmp_path / "out", "-s", fifo, "--once"), 2, "a pipe (FIFO)")
    one_error_line(cli("watch", tmp_path / "in", "--out", tmp_path / "out", "-s", tmp_path, "--once"), 2, "a folder")
    one_error_line(cli("watch", "--config", fifo, "--once"), 2, "a pipe (FIFO)", "not a config file")


# ---- 2. allocations driven by a picture's shape are capped; numeric options have ranges

def test_a_4000x1_style_is_encoded_in_bounded_memory(tmp_path: Path, vgg16_path: Path) -> None:
    strip = tmp_path / "strip.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 4000, 3), np.uint8)).save(strip)
    photo = save_rgb(tmp_path / "p.png", 40, 40)
    peak = peak_mb("image", photo, "-s", strip, "--strength", "0.5", "-o", tmp_path / "o.png")
    assert peak < 1500  # it reached 7.4 GB and died before


def peak_mb(*args, timeout: float = TIMEOUT, env: dict | None = None) -> float:
    """The CLI's own peak memory in MB: VmHWM of its process (resident pages, file-mapped ones included, as
    /usr/bin/time -v counts them; rusage would count the pages forked from this big pytest process)."""
    peak = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
            " file=sys.stderr))\n"
            "sys.argv = ['metastyle-batch'] + sys.argv[1:]\n"
            "runpy.run_module('metastyle_batch', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", peak, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.split("VmHWM:")[1].split()[0]) / 1024


@pytest.mark.parametrize("args, needle", [(["interpolate", "P", "-s", "S", "--to", "S", "-o", "g.png", "--cell", "30000"],
                                           "--cell"),
                                          (["texture", "--random", "-o", "t.png", "--spread", "1e30"], "--spread")])
def test_numeric_options_have_ranges(tmp_path: Path, style_image: Path, args, needle) -> None:
    photo = save_rgb(tmp_path / "p.png", 32, 32)
    args = [str(photo) if a == "P" else str(style_image) if a == "S" else a for a in args]
    one_error_line(cli(*args, cwd=tmp_path), 2, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


# ---- 3. SIGTERM stops a video like Ctrl-C: nothing half-written, no ffmpeg left behind

def test_sigterm_during_video_cleans_up(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    from metastyle_batch.video.ffmpeg import ffmpeg_exe

    clip = tmp_path / "long.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "20",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "metastyle_batch", "video", str(clip), "-s", str(style_image),
                             "-o", str(out / "x.mp4")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not any(p.stat().st_size for p in out.iterdir()) and time.monotonic() < deadline
           and proc.poll() is None):
        time.sleep(0.1)  # wait until ffmpeg writes the hidden .part file: frames are flowing
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130 and "Interrupted" in stderr, stderr
    assert list(out.iterdir()) == []
    children = subprocess.run(["pgrep", "-f", f"ffmpeg.*{clip}"], capture_output=True, text=True).stdout
    assert children == ""


# ---- 4. stdout gets every byte, or the run fails

def test_nonblocking_stdout_gets_every_byte(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    photo = save_rgb(tmp_path / "p.png", 300, 400)
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETFL, fcntl.fcntl(write_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    proc = subprocess.Popen([sys.executable, "-m", "metastyle_batch", "image", str(photo), "-s", str(style_image),
                             "-o", "-", "-f", "png"], stdout=write_fd, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(write_fd)
    time.sleep(1)  # let the writer fill the pipe and meet EAGAIN
    data = b""
    while chunk := os.read(read_fd, 1 << 14):
        data += chunk
        time.sleep(0.01)
    os.close(read_fd)
    assert proc.wait(timeout=TIMEOUT) == 0, proc.stderr.read()
    assert len(data) > 1 << 16 and Image.open(__import__("io").BytesIO(data)).size == (400, 300)


def test_a_reader_that_goes_away_is_a_failure(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    photo = save_rgb(tmp_path / "p.png", 300, 400)
    script = (f'"{sys.executable}" -m metastyle_batch image "{photo}" -s "{style_image}" -o - -f png | head -c 100 '
              '>/dev/null; exit ${PIPESTATUS[0]}')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1 and "stdout was closed after" in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr


# ---- 5. NaN weights and non-finite mix weights are caught, naming the file

def test_nan_model_is_refused(tmp_path: Path, model_path: Path, style_image: Path) -> None:
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "nan.safetensors"
    state = load_file(str(model_path))
    state["hidden.weight"] = np.full_like(state["hidden.weight"], np.nan)
    from safetensors import safe_open

    with safe_open(str(model_path), framework="np") as f:
        metadata = f.metadata()
    save_file(state, str(bad), metadata=metadata)
    photo = save_rgb(tmp_path / "p.png", 32, 32)
    one_error_line(cli("image", photo, "-s", style_image, "--model", bad, "--palette", "0", "-o", tmp_path / "o.png"),
                   2, str(bad), "NaN or infinite")
    assert not (tmp_path / "o.png").exists()


def test_setup_refuses_nan_and_foreign_vgg_weights(tmp_path: Path, vgg16_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    state = load_file(str(vgg16_path))
    nan = dict(state, **{"0.weight": np.full_like(state["0.weight"], np.nan)})
    other = dict(state, **{"0.bias": state["0.bias"] + 0.01})
    for name, weights, needle in (("nan", nan, "NaN or infinite"), ("other", other, "not the genuine")):
        path = tmp_path / f"{name}.safetensors"
        save_file(weights, str(path))
        proc = cli("setup", "--vgg", path, env={"METASTYLE_CACHE": str(tmp_path / "cache")})
        one_error_line(proc, 2, str(path), needle)
        assert "Ready" not in proc.stdout and not (tmp_path / "cache" / "vgg16_features23.safetensors").exists()


def test_a_malicious_pickle_is_refused_in_one_line(tmp_path: Path) -> None:
    """A .pth whose pickle would run a command: refused by the weights-only loader, in one short line."""
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "vgg16.pth"
    evil.write_bytes(pickle.dumps({"features.0.weight": Evil()}))
    line = one_error_line(cli("setup", "--vgg", evil, env={"METASTYLE_CACHE": str(tmp_path / "cache")}), 2,
                          str(evil), "refused")
    assert len(line) < 300 and "weights_only" not in line and not marker.exists()


def test_infinite_mix_weights_are_refused(tmp_path: Path, style_image: Path, style_image2: Path) -> None:
    photo = save_rgb(tmp_path / "p.png", 32, 32)
    one_error_line(cli("image", photo, "-s", style_image, "-s", style_image2, "--mix", "inf,1"), 2, "finite")


# ---- 6. the model's sha256 sidecar is checked before the network cache is consulted

def test_wrong_sidecar_is_refused_even_with_a_cached_network(tmp_path: Path, model_path: Path, style_image: Path,
                                                            vgg16_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    shutil.copy(model_path, model)
    photo = save_rgb(tmp_path / "p.png", 32, 32)
    env = {"METASTYLE_CACHE": str(tmp_path / "cache")}
    assert cli("image", photo, "-s", style_image, "--model", model, "-o", tmp_path / "a.png", env=env).returncode == 0
    assert list((tmp_path / "cache" / "nets").glob("*.onnx"))  # the network is cached now
    (tmp_path / "m.safetensors.sha256").write_text("0" * 64 + "  m.safetensors\n")
    one_error_line(cli("image", photo, "-s", style_image, "--model", model, "-o", tmp_path / "b.png", env=env), 2,
                   "sha256 mismatch")


# ---- 9. messages

def test_messages(tmp_path: Path, clip: Path, style_image: Path, vgg16_path: Path) -> None:
    help_text = cli("watch", "--help", env={"COLUMNS": "200"}).stdout
    assert "[[folder]]" in help_text
    proc = cli("video", clip, "-s", style_image, "-o", tmp_path / "o.mp4")
    assert proc.returncode == 0 and "flicker" in proc.stderr and "x the source's" in proc.stderr, proc.stderr
    # an output that is already there: the same usage error (exit 2) from video and image, the file untouched
    (tmp_path / "o.png").write_bytes(b"precious")
    photo = save_rgb(tmp_path / "p.png", 20, 20)
    one_error_line(cli("video", clip, "-s", style_image, "-o", tmp_path / "o.mp4"), 2, "exists", "--overwrite")
    proc = cli("image", photo, "-s", style_image, "-o", tmp_path / "o.png")
    assert proc.returncode == 2 and "o.png exists; pass --overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "o.png").read_bytes() == b"precious"


def test_cache_ls_adds_up_and_clear_leaves_nothing(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    import re

    env = {"METASTYLE_CACHE": str(tmp_path / "cache")}
    photo = save_rgb(tmp_path / "p.png", 32, 32)
    assert cli("image", photo, "-s", style_image, "-o", tmp_path / "o.png", env=env).returncode == 0
    (tmp_path / "cache" / ".stray.part").write_bytes(b"x")
    listing = cli("cache", "ls", env=env).stdout
    rows = [int(n) for n in re.findall(r"^\s+\S.*?\s(\d+) files?\b", listing, re.M)]
    total = int(re.search(r"^Total: .* in (\d+) files?", listing, re.M).group(1))
    assert sum(rows) == total, listing
    assert cli("cache", "clear", "--yes", env=env).returncode == 0
    assert not (tmp_path / "cache" / "nets").exists() and not (tmp_path / "cache" / "codes").exists()


def test_watch_leaves_no_lock_file(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    (tmp_path / "in").mkdir()
    save_rgb(tmp_path / "in" / "p.png", 32, 40)
    proc = cli("watch", tmp_path / "in", "--out", tmp_path / "out", "-s", style_image, "--once")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "p.png").is_file() and not list((tmp_path / "out").glob("*.lock"))


SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "metastyle-base8.safetensors"


def test_flat_pictures_get_the_same_pixels_on_every_path(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    """Flat pictures once came out as instance norm's amplified rounding noise, different on each engine (94-115
    levels apart); now every path gives the network's exact answer, a flat colour."""
    flats = {"one.png": (1, 1, (120, 30, 200)), "black.png": (8, 8, (0, 0, 0)), "grey.png": (256, 256, (128,) * 3),
             "strip.png": (4000, 1, (200, 100, 50))}
    for name, (w, h, colour) in flats.items():
        Image.new("RGB", (w, h), colour).save(tmp_path / name)
    env = {"METASTYLE_MODEL": str(SHIPPED), "METASTYLE_CACHE": str(tmp_path / "cache")}
    runs = {"first": {}, "cached": {}, "torch": {"METASTYLE_ORT": "0"}}
    for run, extra in runs.items():
        proc = cli("image", *flats, "-s", style_image, "-o", f"{run}/", cwd=tmp_path, env={**env, **extra})
        assert proc.returncode == 0, proc.stderr
    for name in flats:
        out = {run: np.asarray(Image.open(tmp_path / run / name), np.int16) for run in runs}
        assert all(np.abs(out[r] - out["first"]).max() <= 1 for r in runs), name
        assert (out["first"] == out["first"][0, 0]).all(), name  # flat in, flat out


def test_flat_frames_in_a_batch_agree_between_engines(model_path: Path, vgg16_path: Path) -> None:
    """Video batches mixing flat frames (a fade to black) with others: both engines, the same frames."""
    from metastyle_batch.engine import Stylizer
    from metastyle_batch.engine_ort import OrtStylizer

    ort, reference = OrtStylizer(model_path), Stylizer(model_path)
    code = ort.random_code(3)
    x = np.zeros((3, 3, 36, 52), np.float32)
    x[1] = np.random.default_rng(0).uniform(0, 1, x[1].shape)
    x[2] = 0.5
    a = ort.run_array(x, ort.network(code))
    b = reference.run_array(x, reference.network(code))
    assert np.abs(a - b).max() <= 2 / 255
    assert all(np.ptp(a[i].reshape(3, -1), axis=1).max() == 0 for i in (0, 2))


# ---- 8. memory that does not grow with the picture

def test_a_100_megapixel_picture_stays_under_1_5_gb(tmp_path: Path, style_image: Path, vgg16_path: Path) -> None:
    """A 10000x10000 1-bit PNG (tens of kB): 4.5 GB before; now its float copies and the network's maps live in
    unlinked temp files whose pages are dropped as the work moves on."""
    from PIL import ImageDraw

    big = Image.new("1", (10000, 10000), 0)
    draw = ImageDraw.Draw(big)
    for i in range(0, 10000, 500):
        draw.line([(0, i), (10000, 10000 - i)], fill=1, width=20)
    big.save(tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size < 1 << 20
    cache = tmp_path / "cache"
    peak = peak_mb("image", tmp_path / "big.png", "-s", style_image, "-o", tmp_path / "out.png", timeout=900,
                   env={"METASTYLE_CACHE": str(cache)})
    assert peak < 1500, peak
    with warnings.catch_warnings():  # our own 100 MP output: Pillow's bomb warning is for strangers' files
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(tmp_path / "out.png") as out:
            assert out.size == (10000, 10000) and out.mode == "RGB"
    assert list((cache / "spill").iterdir()) == []  # the temp files are unlinked from the start
