"""Lone instance-norm spikes (the blots of losses.SpikeMeter) of a model's generated networks on an evaluation set.

For every content x style pair at 256², the largest instance-normalised value in the network (in stds) and the
spike term; prints the median, the fraction of pairs over 15 stds (where a blot shows) and the mean term.

    python benchmarks/spikes.py --model weights/metastyle-base8.safetensors --data ../shared/data/eval
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from metastyle_batch.engine import Stylizer
from metastyle_batch.train.data import list_images
from metastyle_batch.model.transform import transform
from metastyle_batch.train.evaluate import _load, _spread
from metastyle_batch.train.losses import SpikeMeter


class _Peak(SpikeMeter):
    def __init__(self) -> None:
        super().__init__()
        self.peak = 0.0

    def measure(self, z: torch.Tensor) -> None:
        super().measure(z)
        self.peak = max(self.peak, float(z.abs().max()))


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/eval"))
    ap.add_argument("--n-content", type=int, default=12)
    ap.add_argument("--n-style", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    st = Stylizer(args.model, device="cpu")
    styles = _spread(list_images(args.data / "style"), args.n_style)  # the pairs `evaluate` uses
    photos = [_load(p, args.size) for p in _spread(list_images(args.data / "content"), args.n_content)]
    peaks, totals = [], []
    for s in styles:
        params = {k: v.float() for k, v in st.network(st.encode(s)).items()}
        for x in photos:
            meter = _Peak()
            transform(x, params, st.meta.base, ops=meter)
            peaks.append(meter.peak)
            totals.append(float(meter.total))
    over = sum(p > 15 for p in peaks) / len(peaks)
    print(f"{st.model_id}: {len(peaks)} pairs, peak |z| median {statistics.median(peaks):.1f} "
          f"(max {max(peaks):.1f}), over 15 stds {over:.2f}, spike term mean {statistics.mean(totals):.0f}")


if __name__ == "__main__":
    main()
