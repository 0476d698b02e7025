"""Throughput of the two halves of the product on one device (made for a GPU; runs on the CPU too, to check it):

* styles → networks: a batch of style images through VGG-16, the meta network's hidden layer and its heads
  (``Stylizer.encode_batch`` then ``MetaNet.network``), in styles/s for several batch sizes;
* the generated network: frames/s at 256², 512² and 1920×1080 through ``Stylizer.run`` (on CUDA: float16,
  channels-last, the polyphase form), with peak device memory.

Printed beside the paper (19 ms per style, 15 ms per image on a Titan X) and the seed code (117 networks/s,
217 frames/s on a 1080 Ti); end-to-end video against a plain transcode is ``benchmarks/video.py --size 1920x1080``.

    METASTYLE_VGG16=… python benchmarks/gpu.py --device cuda --json docs/bench/gpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metastyle_batch.engine import Stylizer  # noqa: E402

SIZES = {"256²": (256, 256), "512²": (512, 512), "1920×1080": (1080, 1920)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, seconds: float) -> float:
    """Seconds per call: two warm-up calls, then as many as fit in ``seconds`` (at least 3)."""
    fn(), fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    _sync(device)
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", type=Path, default=None, help="meta network (default: the shipped one)")
    ap.add_argument("--style-batches", type=int, nargs="+", default=None, help="default: 1 16 64 256 (CPU: 1 4)")
    ap.add_argument("--frame-batches", type=int, nargs=3, default=None, metavar=("B256", "B512", "B1080"),
                    help="frames per call at each size (default: 32 16 4 on CUDA, 1 1 1 on the CPU)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    st = Stylizer(args.model, device=args.device, disk_cache=False)
    dev, cuda = st.device, st.device.type == "cuda"
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; model {st.model_id}, style size {st.style_size}, networks in {st.dtype}")
    result: dict = {"device": name, "model": st.model_id, "style_size": st.style_size, "styles_per_s": {},
                    "frames": {}}

    for b in args.style_batches or ([1, 16, 64, 256] if cuda else [1, 4]):
        styles = torch.rand(b, 3, st.style_size, st.style_size, device=dev)
        with torch.no_grad():  # meta.network directly: Stylizer.network would answer repeats from its cache
            sec = timed(lambda: st.meta.network(st.encode_batch(styles)), dev, args.seconds)
        result["styles_per_s"][b] = b / sec
        print(f"styles → networks, batch {b:>4}: {b / sec:8.1f} styles/s ({1e3 * sec / b:6.2f} ms per style; "
              f"paper 19 ms, seed code 117 networks/s)")

    torch.manual_seed(0)
    params = st.network(torch.relu(torch.randn(st.meta.hidden_dim)))
    batches = args.frame_batches or ([32, 16, 4] if cuda else [1, 1, 1])
    for (label, (h, w)), b in zip(SIZES.items(), batches):
        x = torch.rand(b, 3, h, w, device=dev)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        sec = timed(lambda: st.run(x, params), dev, args.seconds)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None
        result["frames"][label] = {"batch": b, "frames_per_s": b / sec, "peak_mib": peak}
        mem = f", peak {peak:.0f} MiB" if peak is not None else ""
        print(f"frames {label:>9}, batch {b:>2}: {b / sec:8.1f} frames/s ({1e3 * sec / b:6.2f} ms per frame{mem}; "
              f"paper 15 ms at 512², seed code 217 frames/s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
