"""Huge pictures: peak memory and time of `metastyle-batch image` at 24 and 100 megapixels.

    python benchmarks/big.py                 # this checkout's CLI
    python benchmarks/big.py --against "env PYTHONPATH=../old python -m metastyle_batch"

Builds the two inputs of issue 29 in a temporary folder: a 6000x4000 JPEG (an example photo scaled up) and a
10000x10000 1-bit PNG of lines (a few hundred kB). Runs each command on each, one after the other, and prints the
peak resident memory (the child's ru_maxrss, what `/usr/bin/time -v` reports) and the wall time. The style code
is cached by a small warm-up run first, so the numbers are the picture's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
STYLE = REPO / "examples/style/liberty_island.jpg"


def inputs(folder: Path) -> dict[str, Path]:
    photo = Image.open(REPO / "examples/content/coffee.jpg").convert("RGB").resize((6000, 4000), Image.BICUBIC)
    photo.save(folder / "24mp.jpg", quality=92)
    lines = Image.new("1", (10000, 10000), 0)
    draw = ImageDraw.Draw(lines)
    for i in range(0, 10000, 500):
        draw.line([(0, i), (10000, 10000 - i)], fill=1, width=20)
    lines.save(folder / "100mp.png")
    return {"24 MP JPEG": folder / "24mp.jpg", "100 MP 1-bit PNG": folder / "100mp.png"}


def measure(cmd: list[str], src: Path, dst: Path) -> tuple[float, float]:
    """(peak MB, seconds) of one run."""
    start = time.perf_counter()
    # run in the pictures' folder: `python -m` in the repo would import that checkout, whatever PYTHONPATH says
    proc = subprocess.Popen([*cmd, "image", str(src), "-s", str(STYLE), "-o", str(dst), "--overwrite"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=src.parent)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{shlex.join(cmd)} failed on {src.name}: {proc.stderr.read().decode(errors='replace')}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="another command to compare with (a shell-quoted prefix)")
    args = parser.parse_args()
    commands = {"this checkout": ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "metastyle_batch"]}
    if args.against:
        commands["against"] = shlex.split(args.against)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pictures = inputs(folder)
        Image.new("RGB", (64, 64)).save(folder / "warm.png")
        for cmd in commands.values():
            measure(cmd, folder / "warm.png", folder / "warm_out.png")
        for what, src in pictures.items():
            for name, cmd in commands.items():
                peak, seconds = measure(cmd, src, folder / f"out{src.suffix}")
                print(f"{what:<18} {name:<14} peak {peak:7.0f} MB   {seconds:6.1f} s")


if __name__ == "__main__":
    main()
