"""Issue 25's prepared GPU recipe: one device call trains from the shipped model and brings the model back.

The device tool (``/work/.library/device``) lends a GPU for about 15 minutes, 10 per command; it carries the
working tree (about 36 MB, the shipped model included) plus ignored paths, 64 MiB in all, and brings back files
of at most 16 MiB. Hence three steps:

    here:    python benchmarks/gpu_train.py pack             # runs/gpu-pack: fp16 VGG-16, every style, the photos that fit
    device:  run(command="PYTHONUNBUFFERED=1 python3 benchmarks/gpu_train.py run", carry=["runs/gpu-pack"],
                 timeout_s=600)                        # writes into $OUT; --seconds 480 leaves room to spare
    here:    python benchmarks/gpu_train.py join FILES_AT -o runs/gpu/model.safetensors   # FILES_AT: the reply's

``run`` times a short probe of the recipe, trains as many steps as fit in ``--seconds`` (the learning rate
decaying over the last quarter), and splits ``model.safetensors`` into parts under 16 MiB with a manifest of
their sha256; ``join`` checks and rejoins them. The recipe is the shipped model's last phase (f2 in the model
card) at batch 16; arguments after ``--`` are passed to ``metastyle-batch train`` and override it. Judge what
comes back like any candidate (``peers.py quality``, ``eye.py``) before it replaces the shipped model.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CARRY_LIMIT = 64 * 2**20  # what one device call carries: the working tree plus the carried paths
PART = 15 * 2**20  # files come back from the device at 16 MiB at most
RECIPE = ["--init", "weights/metastyle-base8.safetensors", "--crop", "256", "--batch", "16", "--styles-per-step", "4",
          "--style-every", "1", "--style-bank", "4", "--style-weight", "10", "--palette-weight", "100",
          "--tone-weight", "1", "--flat-weight", "200", "--spike-weight", "1e-6", "--lr", "1e-4", "--seed", "20",
          "--device", "cuda", "--sample-every", "100000"]


def _tree_bytes() -> int:
    """Bytes of what the device call carries besides the pack: tracked and untracked-not-ignored files."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def pack(args) -> None:
    """Copy the fp16 VGG-16 and every style into the pack, then as many photos (seeded order) as the rest holds."""
    for need in (args.data / "content", args.data / "style"):
        if not need.is_dir():
            sys.exit(f"pack: {need} is not a folder (--data needs content/ and style/)")
    if not args.vgg.is_file():
        sys.exit(f"pack: {args.vgg} is not a file (--vgg: the fp16 VGG-16 safetensors)")
    out, vgg, tree = args.out, args.vgg, _tree_bytes()
    budget = args.budget - tree - 2**20  # a MiB spare for files written before the call
    if out.exists():
        shutil.rmtree(out)
    (out / "content").mkdir(parents=True)
    (out / "style").mkdir()
    shutil.copy2(vgg, out / "vgg16_fp16.safetensors")
    used = vgg.stat().st_size
    styles = sorted(p for p in (args.data / "style").iterdir() if p.is_file())
    for p in styles:
        shutil.copy2(p, out / "style" / p.name)
        used += p.stat().st_size
    photos = sorted(p for p in (args.data / "content").iterdir() if p.is_file())
    random.Random(0).shuffle(photos)
    kept = 0
    for p in photos:
        if used + p.stat().st_size > budget:
            break
        shutil.copy2(p, out / "content" / p.name)
        used, kept = used + p.stat().st_size, kept + 1
    if used > budget or kept == 0:
        sys.exit(f"pack: {used / 2**20:.1f} MiB do not fit the {budget / 2**20:.1f} MiB left beside the working tree")
    (out / "pack.json").write_text(json.dumps({"styles": len(styles), "photos": kept, "of_photos": len(photos),
                                               "bytes": used}))
    print(f"{out}: VGG-16 fp16, {len(styles)} styles, {kept} of {len(photos)} photos, {used / 2**20:.1f} MiB "
          f"(+ {tree / 2**20:.1f} MiB of working tree; limit {args.budget / 2**20:.0f} MiB)")


def _train(pack_dir: Path, out: Path, extra: list[str]) -> float:
    """One ``metastyle-batch train`` process on the pack; returns its wall seconds."""
    cmd = [sys.executable, "-m", "metastyle_batch", "train", "--content", str(pack_dir / "content"),
           "--style", str(pack_dir / "style"), "-o", str(out), *extra]
    env = {**os.environ, "METASTYLE_VGG16": str(pack_dir / "vgg16_fp16.safetensors"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print("+", " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        code = proc.wait()
    finally:  # stopped (SIGTERM at the device's time limit, Ctrl-C): the training goes with us
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if code:
        sys.exit(f"run: training in {out} failed (exit {code}); its output is above")
    return time.time() - t0


def _seconds_per_step(log: Path) -> tuple[float, float]:
    """(seconds per step after the first logged row, or over all steps if only one, seconds to the last row)
    from a run's log.csv: the first steps also pay for warming up."""
    rows = list(csv.DictReader(log.open()))
    first, last = (rows[0] if len(rows) > 1 else {"step": 0, "seconds": 0}), rows[-1]
    return ((float(last["seconds"]) - float(first["seconds"])) / (int(last["step"]) - int(first["step"])),
            float(last["seconds"]))


def run(args) -> None:
    """Probe, train what fits, split the model for the trip back (on the device)."""
    deadline = time.time() + args.seconds
    missing = [str(args.pack / n) for n in ("content", "style", "vgg16_fp16.safetensors") if not (args.pack / n).exists()]
    if missing:
        sys.exit(f"run: {', '.join(missing)} missing: build the pack with `gpu_train.py pack` and carry it")
    recipe = RECIPE + args.train_args
    work = args.work
    probe = work / "probe"
    wall = _train(args.pack, probe, recipe + ["--steps", str(args.probe), "--ckpt-every", "1000000"])
    per_step, trained = _seconds_per_step(probe / "log.csv")
    overhead = wall - trained  # start, VGG-16, data, style bank: paid again by the main run (bank reused)
    steps = int((deadline - time.time() - overhead - args.spare) / per_step)
    steps = min(steps, args.max_steps) if args.max_steps else steps
    if steps < 1:
        sys.exit(f"run: no time left to train ({per_step:.3f} s/step, {overhead:.0f} s to start)")
    main = work / "main"
    main.mkdir(parents=True, exist_ok=True)
    if (probe / "style_bank.pt").is_file():
        shutil.copy2(probe / "style_bank.pt", main / "style_bank.pt")
    print(f"probe: {per_step:.3f} s/step, {overhead:.0f} s to start; training {steps} steps", flush=True)
    _train(args.pack, main, recipe + ["--steps", str(steps), "--lr-decay-steps", str(max(1, steps // 4)),
                                      "--ckpt-every", str(max(100, steps // 5))])
    split(main / "model.safetensors", args.out, {"steps": steps, "seconds_per_step": per_step,
                                                 "recipe": recipe, "device": _device_name()})
    shutil.copy2(main / "log.csv", args.out / "log.csv")


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def split(model: Path, out: Path, info: dict) -> None:
    """``model`` as parts under :data:`PART` bytes in ``out``, with manifest.json (their order, the sha256)."""
    out.mkdir(parents=True, exist_ok=True)
    data = model.read_bytes()
    parts = []
    for i in range(0, len(data), PART):
        name = f"model.part{len(parts)}"
        (out / name).write_bytes(data[i:i + PART])
        parts.append(name)
    manifest = {**info, "parts": parts, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{model} → {len(parts)} parts in {out}, sha256 {manifest['sha256'][:12]}")


def join(args) -> None:
    """Rejoin the parts a device run brought back; refuse a part missing or damaged."""
    try:
        manifest = json.loads((args.parts / "manifest.json").read_text())
        data = b"".join((args.parts / name).read_bytes() for name in manifest["parts"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"join: {args.parts} does not hold a device run's parts ({e})")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != manifest["bytes"] or digest != manifest["sha256"]:
        sys.exit(f"join: the parts do not add up to the model the device wrote (sha256 {digest[:12]}, "
                 f"expected {manifest['sha256'][:12]})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(args.output)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{args.output}: {manifest['steps']} steps on {manifest['device']}, sha256 {digest[:12]}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="here: build the folder the device call carries")
    p.add_argument("--data", type=Path, default=SHARED / "data" / "train")
    p.add_argument("--vgg", type=Path, default=SHARED / "weights" / "vgg16_imagenet_relu4_3_fp16.safetensors")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-pack")
    p.add_argument("--budget", type=int, default=CARRY_LIMIT, help="bytes one call may carry, working tree included")
    p.set_defaults(fn=pack)
    r = sub.add_parser("run", help="on the device: probe, train what fits, split the model into $OUT")
    r.add_argument("--pack", type=Path, default=ROOT / "runs" / "gpu-pack")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu-out")))
    r.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu")
    r.add_argument("--seconds", type=float, default=480, help="all of it: probe, training, the split")
    r.add_argument("--spare", type=float, default=30, help="seconds kept for the checkpoint and the split")
    r.add_argument("--probe", type=int, default=30, help="steps timed before the run")
    r.add_argument("--max-steps", type=int, default=0, help="at most this many steps (0: what the time allows)")
    r.set_defaults(fn=run)
    j = sub.add_parser("join", help="here: check and rejoin the parts a run brought back")
    j.add_argument("parts", type=Path)
    j.add_argument("-o", "--output", type=Path, required=True)
    j.set_defaults(fn=join)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so that _train stops its child
    args.train_args = train_args
    args.fn(args)


if __name__ == "__main__":
    main()
