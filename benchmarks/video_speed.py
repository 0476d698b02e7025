"""Video throughput against a plain transcode: (a) ffmpeg decode → libx264, (b) the CLI, (c) stylize_video.

    METASTYLE_VGG16=/path/to/vgg16.safetensors python benchmarks/video_speed.py
    python benchmarks/video_speed.py --size 640x360 --seconds 5 --repeats 3 --batch 2

A test clip is generated (lavfi ``testsrc2`` + a sine tone, AAC), then timed three ways, all writing H.264
with the same settings (:func:`metastyle_batch.video.h264_output_args`, audio copied):

* (a) ``plain``  ffmpeg decodes and re-encodes the clip, no stylizing: the ceiling;
* (b) ``cli``    ``metastyle-batch video clip.mp4 --style STYLE -o out.mp4`` as a subprocess, end to end (Python
  and torch start-up, model load, style code — cached on disk after the first run — and the video);
* (c) ``inproc`` :func:`~metastyle_batch.video.stylize_video` with a Stylizer loaded beforehand: the pipeline alone,
  once per ``--workers`` value (batches computed at once; 1 with all torch threads is the pipeline as it was
  before workers, so ``--workers 1,2`` is a before/after on one machine state).

``--compare-tree DIR`` also times (b) with the package from another source tree (e.g. an older commit unpacked
with ``git archive REV | tar -x -C DIR``), interleaved with the current one.

Printed: wall seconds, frames/s and CPU seconds (user + system of this process and its children, which
background load distorts less than wall time) of each, the ratios b/a and c/a (the issue's target is b/a ≥ 0.5),
and the in-process run's stages: time the compute waited for decoded frames, computed, and waited for the
encoder. Runs are interleaved round-robin over ``--repeats`` so background load hits them alike; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from video import make_clip  # noqa: E402  (benchmarks/video.py: testsrc2 + a sine tone, AAC)

from metastyle_batch.video import (  # noqa: E402
    DEFAULT_PRESET,
    DEFAULT_QUALITY,
    ffmpeg_exe,
    h264_output_args,
    probe,
    stylize_video,
)


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def plain(clip: Path, out: Path, quality: int, preset: str) -> dict:
    """(a) decode + the same H.264 encode as the stylized run, audio copied."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(clip),
           "-map", "0:V:0", "-map", "0:a:0?", "-c:a", "copy", *h264_output_args(quality, preset), "-f", "mp4", str(out)]
    c0, t0 = cpu_seconds(), time.perf_counter()
    subprocess.run(cmd, check=True)
    return {"wall": time.perf_counter() - t0, "cpu": cpu_seconds() - c0}


def cli_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("metastyle-batch")
    return [str(exe)] if exe.exists() else ([shutil.which("metastyle-batch")] if shutil.which("metastyle-batch")
                                            else [sys.executable, "-m", "metastyle_batch"])


def cli(clip: Path, out: Path, style: Path, extra: list[str], tree: Path | None = None) -> dict:
    """(b) the command a user runs, as a subprocess: everything included (``tree``: import the package from
    that source tree instead)."""
    env = dict(os.environ)
    cmd = cli_cmd()
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        cmd = [sys.executable, "-m", "metastyle_batch"]
    cmd = [*cmd, "video", str(clip), "--style", str(style), "-o", str(out), "--overwrite", "--json", *extra]
    c0, t0 = cpu_seconds(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree or None)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"the CLI failed (exit {res.returncode}):\n{res.stderr}")
    summary = json.loads(res.stdout)
    return {"wall": wall, "cpu": cpu_seconds() - c0, "video_fps": summary["frames_per_second"]}


def inproc(stylizer, clip: Path, out: Path, style: Path, batch: int | None, workers: int) -> dict:
    """(c) stylize_video with the model already loaded and the style code cached (flicker measured, as the
    CLI does)."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    stats = stylize_video(stylizer, clip, out, style, batch=batch, overwrite=True, workers=workers or None)
    return {"wall": time.perf_counter() - t0, "cpu": cpu_seconds() - c0, **{k: stats[k] for k in (
        "decode_wait_s", "compute_s", "encode_wait_s", "batch", "workers", "threads")}}


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fps", default="30")
    ap.add_argument("--clip", type=Path, help="use this video instead of a generated one")
    ap.add_argument("--style", type=Path, default=ROOT / "examples" / "style" / "liberty_island.jpg")
    ap.add_argument("--batch", type=int, default=None, help="frames per forward pass (default: the CLI's)")
    ap.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--workers", default="0", help="comma-separated worker counts for (c); 0 = the default")
    ap.add_argument("--compare-tree", type=Path, help="also time (b) with the package from this source tree")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated runs to skip: plain, cli, inproc")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    with tempfile.TemporaryDirectory(prefix="video_speed.") as tmp:
        d = Path(tmp)
        clip = args.clip or d / "clip.mp4"
        if args.clip is None:
            make_clip(clip, args.size, args.seconds, args.fps)
        info = probe(clip)
        print(f"{clip.name}: {info.width}x{info.height}, {info.frames} frames at {info.fps} fps, audio {info.has_audio}; "
              f"{os.cpu_count()} CPUs, load average {load:.2f}; quality {args.quality}, preset {args.preset}")
        stylizer = None
        if "inproc" not in skip:
            from metastyle_batch.engine import Stylizer

            stylizer = Stylizer(device="cpu")
            stylizer.encode(args.style)  # the CLI reads the same code from the disk cache
        extra = ["--device", "cpu"] + (["--batch", str(args.batch)] if args.batch else [])
        workers = [int(w) for w in args.workers.split(",")]
        labels = {"plain": "(a) plain transcode", "cli": "(b) metastyle-batch video"}
        if args.compare_tree:
            labels["cli_other"] = f"(b) ... from {args.compare_tree.name}"
        labels.update({f"inproc{w}": f"(c) stylize_video, workers {w or 'auto'}" for w in workers})
        runs: dict[str, list[dict]] = {name: [] for name in labels}
        for _ in range(args.repeats):
            if "plain" not in skip:
                runs["plain"].append(plain(clip, d / "plain.mp4", args.quality, args.preset))
            if "cli" not in skip:
                runs["cli"].append(cli(clip, d / "cli.mp4", args.style, extra))
                if args.compare_tree:
                    runs["cli_other"].append(cli(clip, d / "cli.mp4", args.style, extra, args.compare_tree.resolve()))
            if stylizer is not None:
                for w in workers:
                    runs[f"inproc{w}"].append(inproc(stylizer, clip, d / "inproc.mp4", args.style, args.batch, w))
            print("  this round, wall s:", ", ".join(f"{k} {v[-1]['wall']:.2f}" for k, v in runs.items() if v),
                  file=sys.stderr, flush=True)

    n = info.frames
    fps = {}
    for name, label in labels.items():
        if not runs[name]:
            continue
        wall, cpu = median(runs[name], "wall"), median(runs[name], "cpu")
        fps[name] = n / wall
        line = f"{label:34s} {wall:7.2f} s {n / wall:6.1f} frames/s  CPU {cpu:6.2f} s ({cpu / n * 1000:5.1f} ms/frame)"
        if name.startswith("cli"):
            line += f"  [its video part: {median(runs[name], 'video_fps'):.1f} frames/s]"
        print(line)
    for name in fps:
        if name != "plain" and "plain" in fps:
            print(f"ratio {labels[name]} / plain: {fps[name] / fps['plain']:.3f}")
    for name in labels:
        if name.startswith("inproc") and runs[name]:
            r = runs[name]
            print(f"{labels[name]}: batch {r[0]['batch']}, {r[0]['workers']} x {r[0]['threads']} threads; median s: "
                  f"decode wait {median(r, 'decode_wait_s'):.2f}, compute {median(r, 'compute_s'):.2f} "
                  f"(thread-seconds), encode wait {median(r, 'encode_wait_s'):.2f}")


if __name__ == "__main__":
    main()
