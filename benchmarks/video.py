"""Stylized-video throughput against a plain transcode of the same clip, flicker, and the stabiliser study.

    python benchmarks/video.py                          # generated 640x360 clip, 4 s at 30000/1001 fps
    python benchmarks/video.py --clip holiday.mp4 --style wave.jpg --device cuda --batch 16

Both runs decode the same clip and encode with the same H.264 settings (``video.h264_output_args``: preset,
CRF, yuv420p, BT.709) and copy the audio; the transcode simply skips the network. Reported: frames/s of each
and their ratio (how many times slower stylizing is than transcoding), the stylize run's split into compute and
pipeline time, and the flicker ratio (mean |Δ| of consecutive stylized frames / the same for the source),
measured on the decoded output files so H.264 is included.

The stabiliser study checks ``--stabilize`` (:class:`metastyle_batch.video.Stabilizer`: blend with the previous
output where the source did not change) at a few settings: flicker against ghosting (how much it holds the old
stylization in static pixels next to moving ones); the CLI uses alpha 0.7, radius 16.

Weights do not change speed: without ``--model`` (and no $METASTYLE_MODEL / shipped model) a random
MetaNet(8) is used, and without ``--style`` a random style code (no VGG-16 needed). Flicker numbers from a
random model only show that the measurement works; judge flicker with a trained model and a real style.
Uses CUDA when available (``--device auto``). On a shared machine, note the load average printed first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metastyle_batch.video import (DEFAULT_PRESET, DEFAULT_QUALITY, ffmpeg_exe, h264_output_args,  # noqa: E402
                                   Stabilizer, probe, stylize_video)


def make_clip(path: Path, size: str, seconds: float, fps: str) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True)


def transcode(src: Path, dst: Path, quality: int, preset: str, has_audio: bool) -> float:
    """Seconds for decode + the same H.264 encode as the stylized run (+ audio copy)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(src), "-map", "0:V:0"]
    if has_audio:
        cmd += ["-map", "0:a:0", "-c:a", "copy"]
    cmd += h264_output_args(quality, preset) + ["-f", "mp4", str(dst)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def decode(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:V:0",
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def mean_abs_step(frames: np.ndarray) -> float:
    total = 0.0
    for i in range(1, len(frames)):
        total += float(np.abs(frames[i].astype(np.int16) - frames[i - 1]).mean())
    return total / max(1, len(frames) - 1)


def flicker_of_file(src: Path, out: Path) -> float:
    si, oi = probe(src), probe(out)
    a = decode(src, si.width, si.height)
    b = decode(out, oi.width, oi.height)
    return mean_abs_step(b) / max(mean_abs_step(a), 1e-9)


def stabiliser_study(stylizer, src: Path, code, alphas=(0.5, 0.7), radii=(0, 8, 16), frames: int = 60) -> None:
    """Flicker of the candidate vs. how much it changes static pixels NEAR motion (within 16 px of a pixel
    whose source changed by > 6/255): there the per-frame stylization legitimately follows the moving object
    (receptive field), so holding the old result there is ghosting (trails around moving edges)."""
    import torch.nn.functional as F

    info = probe(src)
    x_np = decode(src, info.width, info.height)[:frames].transpose(0, 3, 1, 2).astype(np.float32) / 255
    params = stylizer.network(code)
    y_np = np.concatenate([stylizer.run_array(x_np[i:i + 2], params) for i in range(0, len(x_np), 2)])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    change = (x[1:] - x[:-1]).abs().mean(1, keepdim=True) * 255
    moving = change > 6
    near = (F.max_pool2d(moving.float(), 33, 1, 16) > 0) & ~moving
    far = ~(F.max_pool2d(moving.float(), 97, 1, 48) > 0)

    def flicker(z):
        return float((z[1:] - z[:-1]).abs().mean() / (x[1:] - x[:-1]).abs().mean())

    dy = (y[1:] - y[:-1]).abs().mean(1, keepdim=True) * 255
    print(f"stabiliser study ({len(x)} frames, before encoding): per-frame flicker {flicker(y):.3f}; "
          f"stylized change in static pixels near motion {float(dy[near].mean()) if near.any() else 0:.2f}/255, "
          f"far from motion {float(dy[far].mean()) if far.any() else 0:.2f}/255")
    for a in alphas:
        for r in radii:
            blend = Stabilizer(a, r)
            z = torch.from_numpy(np.concatenate([blend(x_np[i:i + 1], y_np[i:i + 1]) for i in range(len(x))])).clamp(0, 1)
            dev = (z[1:] - y[1:]).abs().mean(1, keepdim=True) * 255

            def at(mask):
                return float(dev[mask].mean()) if mask.any() else float("nan")

            print(f"  alpha {a:.1f} radius {r:2d}: flicker {flicker(z):.3f}  |held - fresh| moving {at(moving):.2f}, "
                  f"static near motion {at(near):.2f} (ghosting), far {at(far):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, help="video to use (default: generate testsrc2 + sine)")
    ap.add_argument("--size", default="640x360", help="generated clip size (default 640x360)")
    ap.add_argument("--seconds", type=float, default=4.0, help="generated clip length")
    ap.add_argument("--fps", default="30000/1001", help="generated clip rate")
    ap.add_argument("--style", type=Path, help="style image (default: a random style code, no VGG needed)")
    ap.add_argument("--model", type=Path, help="meta network (default: $METASTYLE_MODEL, shipped, else random)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-study", action="store_true", help="skip the stabiliser study")
    ap.add_argument("--no-transition", action="store_true", help="skip the per-frame-code (--to) run")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    from metastyle_batch.codes import StyleCode
    from metastyle_batch.model.io import save_model
    from metastyle_batch.model.meta import MetaNet
    from metastyle_batch.paths import default_model_path
    from metastyle_batch.runtime import open_stylizer

    work = Path(tempfile.mkdtemp(prefix="metastyle-video-bench-"))
    clip = args.clip
    if clip is None:
        clip = work / "clip.mp4"
        make_clip(clip, args.size, args.seconds, args.fps)
    info = probe(clip)
    model = args.model or (default_model_path() if default_model_path().is_file() else None)
    if model is None:
        torch.manual_seed(0)
        model = work / "random-base8.safetensors"
        save_model(MetaNet(8), model, {"style_size": 256, "steps": 0})
        print("model: random MetaNet(8) (speed is the same as a trained one)")
    stylizer = open_stylizer(model, args.device)
    dim = stylizer.meta.hidden_dim
    g = np.random.default_rng(1)
    if args.style:
        style_a = stylizer.encode(args.style)
    else:
        style_a = StyleCode(g.random(dim, dtype=np.float32))
    style_b = StyleCode(g.random(dim, dtype=np.float32))

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    dev = stylizer.device
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {os.cpu_count()} cores, {stylizer.runtime}"
    print(f"clip: {clip.name} {info.width}x{info.height}, {info.frames} frames at {info.fps} fps"
          f"{', audio' if info.has_audio else ''}; device {dev} ({dev_name}); load average {load[0]:.2f}")
    print(f"encoder: libx264 preset {args.preset}, quality {args.quality}")

    # warm-up: network generation, allocator, cuDNN autotune
    x = np.random.default_rng(0).random((1, 3, min(info.height, 256), min(info.width, 256)), dtype=np.float32)
    stylizer.run_array(x, stylizer.network(style_a))
    if dev.type == "cuda":
        torch.cuda.synchronize()

    t_plain = transcode(clip, work / "transcode.mp4", args.quality, args.preset, info.has_audio)
    plain_fps = info.frames / t_plain
    print(f"plain transcode      {plain_fps:8.1f} frames/s  ({t_plain:.2f} s)")

    runs = [("stylized (fixed)", dict(keyframes=style_a), "fixed.mp4"),
            ("  --stabilize", dict(keyframes=style_a, stabilize=True), "fixed-stab.mp4")]
    if not args.no_transition:
        from metastyle_batch.video import transition

        runs.append(("stylized (--to)", dict(keyframes=transition(style_a, style_b)), "to.mp4"))
        runs.append(("  --stabilize", dict(keyframes=transition(style_a, style_b), stabilize=True), "to-stab.mp4"))
    results = {}
    for name, kw, fname in runs:
        out = work / fname
        stats = stylize_video(stylizer, clip, out, kw.pop("keyframes"), batch=args.batch, quality=args.quality,
                              preset=args.preset, overwrite=True, **kw)
        fps = stats["frames"] / stats["elapsed_s"]
        results[fname] = stats
        file_flicker = flicker_of_file(clip, out)
        print(f"{name:20s} {fps:8.1f} frames/s  ({stats['elapsed_s']:.2f} s, compute {stats['compute_s']:.2f} s, "
              f"batch {stats['batch']})  ratio transcode/stylized {plain_fps / fps:6.1f}x  "
              f"flicker {stats['flicker']:.3f} (decoded file {file_flicker:.3f})")
    if not args.no_study:
        stabiliser_study(stylizer, clip, style_a)
    print(f"files in {work}")


if __name__ == "__main__":
    main()
